"""Task/Example types, deterministic splits, and the task registry (including entry-point plugins)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from calib.errors import CalibError
from calib.tasks import Example, Task, list_tasks, load_task, register_task
from calib.tasks import base as task_base


def _task(n: int = 20) -> Task:
    return Task("toy", tuple(Example(f"toy/{i}", f"Question {i}?", (str(i),)) for i in range(n)))


def test_example_validates_and_cleans_answers():
    ex = Example("a", "Q?", [" Paris ", "Paris", "", None, "Paris, France"])
    assert ex.answers == ("Paris", "Paris, France")
    assert ex.answer_groups == (("Paris", "Paris, France"),)
    open_ex = Example("b", "Name one.", ("x", "y"), open_ended=True)
    assert open_ex.answer_groups == (("x",), ("y",))
    with pytest.raises(CalibError, match="empty question"):
        Example("c", "   ", ("x",))
    with pytest.raises(CalibError, match="no answers"):
        Example("d", "Q?", ("", None))


def test_duplicate_ids_are_rejected():
    ex = Example("same", "Q?", ("a",))
    with pytest.raises(CalibError, match="duplicate example id 'same'"):
        Task("t", (ex, ex))


def test_split_is_deterministic_disjoint_and_complete():
    task = _task(101)
    cal, test = task.split("calibration", seed=3), task.split("test", seed=3)
    assert len(cal) == round(0.5 * 101) and len(cal) + len(test) == 101
    assert set(cal.ids).isdisjoint(test.ids) and set(cal.ids) | set(test.ids) == set(task.ids)
    assert cal.ids == task.split("calibration", seed=3).ids  # same seed -> same questions, same order
    assert cal.ids != task.split("calibration", seed=4).ids
    order = {i: k for k, i in enumerate(task.ids)}
    assert [order[i] for i in cal.ids] == sorted(order[i] for i in cal.ids)  # keeps the task's order
    assert len(task.split("calibration", fraction=0.2)) == 20


def test_split_membership_does_not_depend_on_order():
    task = _task(50)
    assert set(task.split("test", seed=1).ids) == set(task.shuffle(9).split("test", seed=1).ids)


def test_unknown_split_and_bad_fraction():
    with pytest.raises(CalibError, match=r"unknown split 'train'.*calibration, test"):
        _task().split("train")
    with pytest.raises(CalibError, match="fraction"):
        _task().split("test", fraction=1.0)


def test_limit_shuffle_select():
    task = _task(10)
    assert task.limit(3).ids == ["toy/0", "toy/1", "toy/2"]
    assert task.limit(None) is task
    with pytest.raises(CalibError, match="limit"):
        task.limit(-1)
    shuffled = task.shuffle(1)
    assert sorted(shuffled.ids) == sorted(task.ids) and shuffled.ids != task.ids
    assert shuffled.ids == task.shuffle(1).ids
    with pytest.raises(CalibError, match="no category 'x'"):
        task.select("x")


def test_unknown_task_lists_available():
    with pytest.raises(CalibError) as info:
        load_task("no-such-task")
    message = str(info.value)
    assert "unknown task 'no-such-task'" in message and "capitals" in message and "mixed" in message
    assert "\n" not in message


def test_unknown_option_lists_options():
    with pytest.raises(CalibError, match=r"task 'arithmetic' has no option 'steps'; options: n, seed"):
        load_task("arithmetic", steps=3)


def test_register_task_and_load(monkeypatch):
    monkeypatch.setattr(task_base, "_REGISTRY", dict(task_base._REGISTRY))

    @register_task("toy-registered")
    def build(n: int = 5):
        """Toy questions."""
        return [Example(f"r/{i}", f"Q{i}?", ("a",)) for i in range(n)]

    assert "toy-registered" in list_tasks()
    task = load_task("toy-registered", n=7, shuffle=False)
    assert task.name == "toy-registered" and task.ids == [f"r/{i}" for i in range(7)]
    assert (
        load_task("toy-registered", limit=2, seed=5).ids == load_task("toy-registered", limit=2, seed=5).ids
    )
    with pytest.raises(CalibError, match="already registered"):
        register_task("toy-registered", lambda: [])


def test_plugin_registered_through_entry_point(tmp_path, monkeypatch):
    """A package outside calib adds a task via the `calib.tasks` entry-point group, found by importlib.metadata."""
    (tmp_path / "calib_demo_task_plugin.py").write_text(
        textwrap.dedent(
            """
            from calib.tasks import Example, Task

            def build(n: int = 3, seed: int = 0):
                return Task("demo", tuple(Example(f"demo/{i}", f"Plugin question {i}?", ("yes",)) for i in range(n)))
            """
        )
    )
    dist = tmp_path / "calib_demo_task_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: calib-demo-task-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[calib.tasks]\ndemo-plugin = calib_demo_task_plugin:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calib_demo_task_plugin", raising=False)
    assert "demo-plugin" in list_tasks()
    task = load_task("demo-plugin", n=4, shuffle=False)
    assert task.ids == [f"demo/{i}" for i in range(4)]
    monkeypatch.delitem(sys.modules, "calib_demo_task_plugin", raising=False)


def test_docs_quick_start_runs(capsys):
    """The first python block of docs/tasks.md is the documented entry point; keep it runnable."""
    import pathlib
    import re

    doc = (pathlib.Path(__file__).parents[1] / "docs" / "tasks.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    exec(compile(code, "docs/tasks.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Name a country that borders Germany. -> 9 valid answers" in out
    assert "the Netherlands 1.0 Netherlands" in out
