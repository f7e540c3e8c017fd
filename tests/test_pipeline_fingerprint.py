"""Keys that follow the code: an edited estimator recomputes that estimator only, an edited grader recomputes grade
and everything after it, never generation; an unchanged rerun computes nothing."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calib.fingerprint import module_fingerprint, object_fingerprint, stage_fingerprint
from calib.pipeline import run
from calib.pipeline.config import compose

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "experiment=smoke",  # tiny-llama
    "metrics=quick",
    "report.figures=false",
    "progress=false",
    "task.limit=3",
    "decoding.shard_size=3",
    "estimators.semantic=exact",
]

PLUGIN = """
import numpy as np

from calib.estimators import EstimatorResult, Need, register_estimator


def mass(bundle):
    return np.array([np.exp(np.sum(lp)) for lp in bundle.greedy_logprobs])


def unrelated():
    return 1  # another helper of the same file: editing it changes nobody's key


class ProbeMass:
    name = "probe_mass"
    needs = frozenset({Need.GREEDY_TOKENS})

    def __call__(self, bundle):
        m = np.clip(mass(bundle), 0, 1)
        return EstimatorResult(confidence=m, raw=m, higher_raw_means="confident")


register_estimator(ProbeMass, replace=True)
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A plugin package on sys.path, importable and editable; edit(old, new) rewrites it and reloads it."""
    package = tmp_path / "probe_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = package / "estimators.py"
    source.write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("probe_plugin.estimators")

    def edit(old: str, new: str):
        text = source.read_text()
        assert old in text
        source.write_text(text.replace(old, new))
        stat = source.stat()
        os.utime(
            source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000)
        )  # a new mtime even on coarse clocks
        return importlib.reload(module)

    yield module, edit
    for name in [n for n in sys.modules if n.startswith("probe_plugin")]:
        del sys.modules[name]


def test_an_object_fingerprint_follows_what_it_calls_and_nothing_else(plugin):
    module, edit = plugin
    before = object_fingerprint(module.ProbeMass)
    edit("return 1  # another helper", "return 2  # another helper")
    assert object_fingerprint(module.ProbeMass) == before  # an unrelated function of the same file
    edit("    return np.array([np.exp", "    # a comment changes nothing\n    return np.array([np.exp")
    assert object_fingerprint(module.ProbeMass) == before
    module = edit("np.exp(np.sum(lp))", "np.exp(np.sum(lp)) ** 2")  # the formula, in a helper it calls
    assert object_fingerprint(module.ProbeMass) != before


def test_stage_fingerprints_cover_library_versions_and_whole_packages(monkeypatch):
    from calib import fingerprint

    base = stage_fingerprint(modules=["calib.metrics"])
    assert base == stage_fingerprint(modules=["calib.metrics"])
    assert module_fingerprint("calib.metrics") != module_fingerprint("calib.tasks")
    monkeypatch.setattr(fingerprint, "library_versions", lambda: {"jax": "0.0.0-other"})
    assert stage_fingerprint(modules=["calib.metrics"]) != base


def test_an_edited_plugin_estimator_is_recomputed_alone(tmp_path, plugin):
    _, edit = plugin
    cfg = compose([*SMALL, "estimators.names=[msp,probe_mass]", f"artifacts_dir={tmp_path / 'artifacts'}"])
    first = run(cfg, tmp_path / "first", print_summary=False).manifest["stages"]
    assert sorted(first["estimate"]["computed"]) == ["msp", "probe_mass"]
    unchanged = run(cfg, tmp_path / "unchanged", print_summary=False).manifest["stages"]
    assert unchanged["generate"]["cached"] and unchanged["grade"]["cached"]
    assert unchanged["estimate"]["computed"] == [] and unchanged["evaluate"]["cached"]

    edit("np.exp(np.sum(lp))", "np.exp(np.sum(lp)) ** 2")
    second = run(cfg, tmp_path / "second", print_summary=False).manifest["stages"]
    assert second["generate"]["cached"] and second["grade"]["cached"]
    assert second["estimate"]["computed"] == ["probe_mass"]
    assert second["estimate"]["keys"]["msp"] == first["estimate"]["keys"]["msp"]
    assert second["estimate"]["code"]["probe_mass"] != first["estimate"]["code"]["probe_mass"]
    assert not second["evaluate"]["cached"]


def _run_copy(root: Path, artifacts: Path, name: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "calib.cli",
        *SMALL,
        "estimators.names=[msp,mean_token_prob,semantic_entropy]",
        f"artifacts_dir={artifacts}",
        f"hydra.run.dir={root / name}",
    ]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((root / name / "manifest.json").read_text())["stages"]


def test_edited_built_in_code_recomputes_what_it_produced(tmp_path):
    """A copy of calib: edit one built-in estimator, then the grader, each time in a fresh process."""
    root = tmp_path / "copy"
    shutil.copytree(REPO / "calib", root / "calib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "configs", root / "configs")
    artifacts = tmp_path / "artifacts"
    first = _run_copy(root, artifacts, "first")

    token_level = root / "calib" / "estimators" / "token_level.py"
    text = token_level.read_text()
    old = "return float(np.mean(np.exp(logprobs)))"
    assert old in text
    token_level.write_text(text.replace(old, "return float(np.mean(np.exp(logprobs))) * 1.0"))
    second = _run_copy(root, artifacts, "second")
    assert second["generate"]["cached"] and second["grade"]["cached"]
    assert second["estimate"]["computed"] == ["mean_token_prob"]
    assert not second["evaluate"]["cached"]

    grading = root / "calib" / "tasks" / "grading.py"
    grading.write_text(grading.read_text() + "\n\ndef _edited_grader_marker():\n    return None\n")
    third = _run_copy(root, artifacts, "third")
    assert third["generate"]["cached"] and third["generate"]["key"] == first["generate"]["key"]
    assert not third["grade"]["cached"] and third["grade"]["code"] != first["grade"]["code"]
    assert not third["evaluate"]["cached"]
    # everything after the grader is recomputed (estimates do not read grades; the key errs on the safe side)
    assert sorted(third["estimate"]["computed"]) == ["mean_token_prob", "msp", "semantic_entropy"]
