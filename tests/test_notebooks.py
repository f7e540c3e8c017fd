"""Every notebook in notebooks/ runs with papermill on tiny finished runs (a smoke main job, a temperature sweep and
a scaling study on tiny-llama), without a cell error, writes its PNG figures, and never loads a model: the kernel
starts with a sitecustomize that makes calib.models' load_model raise."""

import os
import re
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from calib.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("notebooks"),
    pytest.mark.filterwarnings(
        "ignore"
    ),  # tiny random model: single-class grades, NaN resamples, unfit calibrators
]
papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIGURES = {
    "01_token_overconfidence": ["token_overconfidence", "token_prob_vs_grade"],
    "02_temperature_tradeoff": ["temperature_tradeoff", "temperature_calibrators"],
    "03_closed_vs_open": ["closed_vs_open"],
    "04_semantic_entropy_vs_multi_hypothesis": [
        "se_vs_mh_metrics",
        "se_vs_mh_many_answers",
        "se_vs_mh_reliability_open",
    ],
    "05_inference_scaling": ["scaling_vs_compute", "scaling_adaptive"],
    "06_full_ece_vs_answer_ece": ["full_ece_vs_answer_ece", "run_answer_ece_and_tokens"],
}
COMMON = [
    "model=tiny-llama",
    "task.limit=6",
    "decoding.max_new_tokens=5",
    "decoding.shard_size=6",
    "metrics.n_resamples=20",
    "progress=false",
    "hydra/job_logging=none",
    "hydra/hydra_logging=none",
]
# Loading a model inside a notebook kernel fails: notebooks read finished runs only.
GUARD = textwrap.dedent(
    """
    import importlib.abc, importlib.util, sys

    class _NoModels(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "calib.models.registry":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)

                def load_model(*args, **kwargs):
                    raise RuntimeError("a notebook tried to load a model; notebooks read finished runs only")

                module.load_model = load_model

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _NoModels())
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three tiny finished runs every notebook reads (one shared artifact store)."""
    tmp = tmp_path_factory.mktemp("nb_runs")
    store = f"artifacts_dir={tmp / 'artifacts'}"
    main(
        [
            "experiment=smoke",
            *COMMON,
            "decoding.num_samples=3",
            "estimators.names=[msp,mean_token_prob,inverse_perplexity,self_consistency,semantic_entropy,"
            "multi_hypothesis]",
            "estimators.semantic=exact",
            "metrics.groups=true",
            store,
            f"hydra.run.dir={tmp / 'main'}",
        ]
    )
    main(
        [
            "experiment=temperature_sweep",
            *COMMON,
            "study.temperature_sweep.temperatures=[0.7,1.3]",
            "study.temperature_sweep.max_reference_tokens=60",
            store,
            f"hydra.run.dir={tmp / 'temperature'}",
        ]
    )
    main(
        [
            "experiment=scaling",
            *COMMON,
            "estimators.names=[msp,self_consistency,revision_stability]",
            "estimators.semantic=exact",
            "metrics.names=[auroc,brier,ece,prr]",
            "metrics.groups=false",
            "study.scaling.samples=[1,2]",
            "study.scaling.passes=1",
            "study.scaling.gates=[msp]",
            "study.scaling.fractions=[0.0,0.5,1.0]",
            store,
            f"hydra.run.dir={tmp / 'scaling'}",
        ]
    )
    guard = tmp / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    return {
        "run_dir": str(tmp / "main"),
        "temperature_dir": str(tmp / "temperature"),
        "scaling_dir": str(tmp / "scaling"),
        "guard": str(guard),
    }


def test_every_paper_notebook_is_here_stored_without_outputs():
    assert [nb.stem for nb in NOTEBOOKS] == sorted(FIGURES)
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"
        source = "\n".join(c.source for c in code)
        imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.M)
        for forbidden in ("calib.models", "calib.decode", "calib.cli", "calib.studies", "calib.pipeline.run"):
            hits = [m for m in imports if m == forbidden or m.startswith(forbidden + ".")]
            assert not hits, f"{path.name} imports {hits}: notebooks read finished runs only"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_tiny_finished_run(path, runs, tmp_path, monkeypatch):
    parameters = {k: v for k, v in runs.items() if k != "guard"}
    parameters["out_dir"] = str(tmp_path / "figures")
    declared = nbformat.read(path, as_version=4).cells[1].source
    parameters = {k: v for k, v in parameters.items() if f"{k} =" in declared}
    # The kernel imports this checkout's calib, and its sitecustomize refuses to load a model.
    path_entries = [
        runs["guard"],
        str(ROOT),
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path_entries))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    executed = tmp_path / path.name
    papermill.execute_notebook(
        str(path),
        str(executed),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(tmp_path),
    )  # raises PapermillExecutionError on any cell error
    book = nbformat.read(executed, as_version=4)
    text = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
    assert f"calib from {ROOT / 'calib'}" in text and sys.prefix in text
    for name in FIGURES[path.stem]:
        png = tmp_path / "figures" / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 1000, f"{path.stem} did not write {png.name}"
