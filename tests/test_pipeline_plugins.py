"""Outside extension without editing calib: an installed package's entry points add a task and an estimator, and a
config that names them runs end to end."""

import textwrap

import pandas as pd

from calib.cli import main

PLUGIN = '''
import numpy as np

from calib.estimators import EstimatorResult, Need
from calib.tasks import Example, Task


class AnswerLength:
    """Shorter greedy answers read as more confident."""

    name = "toy_answer_length"
    needs = frozenset({Need.GREEDY})

    def __call__(self, bundle):
        length = np.array([len(t) for t in bundle.greedy_texts], dtype=float)
        return EstimatorResult(confidence=1.0 / (1.0 + length), raw=length, higher_raw_means="uncertain")


def doubling(seed=0, n=4):
    return Task(
        "toy_doubling",
        tuple(
            Example(id=f"toy/{i}", question=f"What is {i} plus {i}?", answers=(str(2 * i),),
                    category="toy", metadata={"grader": "numeric"})
            for i in range(n)
        ),
    )
'''

ENTRY_POINTS = """
[calib.estimators]
toy_answer_length = calib_toy_plugin:AnswerLength

[calib.tasks]
toy_doubling = calib_toy_plugin:doubling
"""


def install_plugin(site):
    """What `pip install` of a package with these entry points leaves on sys.path."""
    (site / "calib_toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "calib_toy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: calib-toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)


def test_config_can_name_a_plugin_task_and_estimator(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    run_dir = tmp_path / "run"
    main(
        [
            "model=tiny-llama",
            "task.name=toy_doubling",
            "+task.options.n=5",
            "decoding.num_samples=0",
            "decoding.max_new_tokens=4",
            "estimators.names=[toy_answer_length,msp]",
            "metrics=quick",
            "report.figures=false",
            "progress=false",
            # In-process Hydra must not configure logging: its dictConfig closes pytest's capture handlers.
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
            f"artifacts_dir={tmp_path / 'artifacts'}",
            f"hydra.run.dir={run_dir}",
        ]
    )
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results["estimator"]) == {"toy_answer_length", "msp"}
    assert sorted(results["question_id"].unique()) == [f"toy/{i}" for i in range(5)]
    toy = results[results["estimator"] == "toy_answer_length"]
    expected = 1.0 / (1.0 + toy["answer"].str.len())
    assert (toy["confidence"] - expected).abs().max() < 1e-12
    assert "toy_answer_length" in capsys.readouterr().out  # in the printed table
