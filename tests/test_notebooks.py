"""`make figures` in tiny mode (paper/figures.py): the tiny finished runs (a main job, a temperature sweep, a scaling
study and two calibration-tuning runs on tiny-llama) are made through the artifact cache, every notebook in
notebooks/ runs on them with papermill without a cell error and writes its figures (PNG and PDF), the result CSVs
and LaTeX tables are written, and a second invocation computes nothing. No notebook loads a model: the kernel starts
with a sitecustomize that makes calib.models' load_model raise."""

import json
import os
import re
import sys
import textwrap
from pathlib import Path

import nbformat
import pandas as pd
import pytest

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
    "07_calibration_tuning_vs_labels": ["tuning_vs_labels"],
}
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
def figures(tmp_path_factory):
    """`make figures` in tiny mode, twice: the tiny finished runs every notebook reads (one shared artifact store),
    every notebook executed by the driver, then a second invocation that should find everything current."""
    from paper.figures import make_figures

    tmp = tmp_path_factory.mktemp("figures")
    guard = tmp / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    paths = dict(work=tmp / "work", results=tmp / "results", generated=tmp / "generated")
    with pytest.MonkeyPatch.context() as mp:
        # The kernels import this checkout's calib (the driver puts it first), and the guard refuses a model load.
        mp.setenv("PYTHONPATH", os.pathsep.join([str(guard), *filter(None, [os.environ.get("PYTHONPATH")])]))
        first = make_figures("tiny", formats="png,pdf", **paths)
        second = make_figures("tiny", formats="png,pdf", **paths)
        # a run whose folder lost its stamp is rerun, and finds every stage in the artifact store
        (paths["work"] / "runs" / "compare_smollm2" / "paper_run.json").unlink()
        third = make_figures("tiny", formats="png,pdf", **paths)
    return {"first": first, "second": second, "third": third, **paths}


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
def test_notebook_runs_on_a_tiny_finished_run(path, figures):
    from paper.figures import notebooks

    jobs = [(sub, params) for name, sub, params in notebooks("tiny", figures["work"]) if name == path.stem]
    assert jobs, f"make figures does not execute {path.name}"
    declared = nbformat.read(path, as_version=4).cells[1].source
    for sub, params in jobs:
        assert all(f"{k} =" in declared for k in params), f"{path.stem} does not declare {sorted(params)}"
        executed = figures["work"] / "notebooks" / f"{path.stem}__{sub}.ipynb"
        book = nbformat.read(executed, as_version=4)  # papermill raised on any cell error
        text = "".join(o.get("text", "") for c in book.cells for o in c.get("outputs", []))
        assert f"calib from {ROOT / 'calib'}" in text and sys.prefix in text
        for name in FIGURES[path.stem]:
            for ext in ("png", "pdf"):
                out = figures["generated"] / sub / f"{name}.{ext}"
                assert out.is_file() and out.stat().st_size > 1000, f"{path.stem} did not write {out}"


def test_make_figures_tiny_writes_everything_and_a_rerun_computes_nothing(figures):
    from paper.figures import runs

    first, second = figures["first"], figures["second"]
    names = [r.name for r in runs("tiny")]
    assert sorted(first["computed"]) == sorted(names) and len(first["executed"]) == len(first["notebooks"])
    assert second["computed"] == [] and second["executed"] == []  # every run and notebook found current
    assert all(r["cached"] for r in second["runs"]) and all(n["cached"] for n in second["notebooks"])
    third = figures["third"]
    assert third["computed"] == ["compare_smollm2"] and third["executed"] == []
    manifest = json.loads((figures["work"] / "runs" / "compare_smollm2" / "manifest.json").read_text())
    stages = {k: v.get("cached") for k, v in manifest["stages"].items() if k != "report"}
    assert stages and all(stages.values()), (
        stages
    )  # the rerun computed nothing: every stage read from the store
    generated, results = figures["generated"], figures["results"]
    tables = {p.name for p in generated.glob("table_*.tex")}
    assert tables == {
        "table_compare_smollm2.tex",
        "table_temperature.tex",
        "table_scaling.tex",
        "table_tuning.tex",
        "table_claims.tex",
        "table_runs.tex",
    }
    claims = (generated / "claims.tex").read_text()
    for macro in (
        "TokenOverconfidence",
        "Temperature",
        "Sampling",
        "SemanticEntropy",
        "Revise",
        "LabelBudget",
    ):
        assert f"\\newcommand{{\\claim{macro}}}" in claims
    assert "Not measured" not in claims  # every claim has a run at tiny scale too
    assert "pipeline check, not results" in (generated / "scale.tex").read_text()
    for name in ("claims.csv", "COMMANDS.md", "compare_smollm2__metrics.csv", "temperature__sweep_decoding.csv",
                 "scaling__differences.csv", "tuning__tuning_report.csv"):  # fmt: skip
        assert (results / name).is_file(), name
    assert "calib experiment=temperature_sweep" in (results / "COMMANDS.md").read_text()


def test_tuning_runs_made_before_stand_in_for_the_plans_tuning_runs(figures, tmp_path):
    """--tuning-runs: finished calibration-tuning folders replace the tuning_* runs (none is made), notebook 7 and the
    tuning table read them, and COMMANDS.md lists the command each folder recorded."""
    from paper.figures import make_figures

    made_before = sorted((figures["work"] / "runs").glob("tuning_*"))
    assert len(made_before) >= 2
    summary = make_figures(
        "tiny",
        figures["work"],
        tmp_path / "results",
        tmp_path / "generated",
        formats="png",
        tuning_runs=made_before,
        command="python -m paper.figures --scale tiny --tuning-runs ...",
    )
    assert not any(r["run"].startswith("tuning_") for r in summary["runs"]) and summary["computed"] == []
    book = nbformat.read(figures["work"] / "notebooks" / "07_calibration_tuning_vs_labels__tuning.ipynb", 4)
    assert all(
        str(folder) in book.cells[2].source for folder in made_before
    )  # papermill's injected parameters
    assert (tmp_path / "generated" / "tuning" / "tuning_vs_labels.png").is_file()
    commands = (tmp_path / "results" / "COMMANDS.md").read_text()
    assert "Last collected by `python -m paper.figures --scale tiny --tuning-runs ...`" in commands
    from calib.tuning.report import read_run
    from paper.results import tuning_name

    for folder in made_before:
        line = next(x for x in commands.splitlines() if x.startswith(f"| {tuning_name(read_run(folder))} |"))
        assert "`calib " in line and "experiment=calibration_tuning" in line
    report = pd.read_csv(tmp_path / "results" / "tuning__tuning_report.csv")
    assert report["N"].dropna().nunique() == len(made_before)


def test_stored_notebooks_are_what_build_py_writes():
    """notebooks/*.ipynb are generated from notebooks/build.py: an edit to one side only fails here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebooks_build", ROOT / "notebooks" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.NOTEBOOKS) == [p.stem for p in NOTEBOOKS]
    for name, book in build.NOTEBOOKS.items():
        stored = (ROOT / "notebooks" / f"{name}.ipynb").read_text()
        assert stored == nbformat.writes(book), (
            f"{name}.ipynb differs from build.py: run python notebooks/build.py"
        )


def test_only_publishes_its_run_and_keeps_the_other_runs_results(figures, tmp_path, capsys):
    """--only RUN (a cached run here) replaces that run's CSVs, claims and provenance row in --results and leaves
    every other run's, so results made in separate sessions add up; claims.csv merges them all. The notebooks that
    read that run are executed where every other run they read is in work; one that needs a missing run is not, until
    that run is there. A notebook is keyed by the runs it reads, so one whose runs are unchanged is not executed again."""
    import shutil

    from paper.figures import main

    results = tmp_path / "results"
    shutil.copytree(figures["results"], results)
    before = {p.name: p.read_bytes() for p in results.glob("compare_smollm2__*")}
    for p in results.glob("temperature__*"):
        p.unlink()
    (results / "temperature__calibrators.csv").write_text("a table the run no longer makes\n")
    work = tmp_path / "work"  # the fixture's runs and store, its executed notebooks left alone
    shutil.copytree(figures["work"] / "runs", work / "runs")
    shutil.rmtree(work / "runs" / "compare_smollm2")  # made in another session: notebook 6 reads it too
    main(["--scale", "tiny", "--work", str(work), "--artifacts", str(figures["work"] / "artifacts"),
          "--results", str(results), "--generated", str(tmp_path / "generated"), "--only", "temperature"])  # fmt: skip
    assert json.loads((work / "runs" / "temperature" / "paper_run.json").read_text()) == json.loads(
        (figures["work"] / "runs" / "temperature" / "paper_run.json").read_text()
    )  # cached, not made again
    assert {p.name: p.read_bytes() for p in results.glob("compare_smollm2__*")} == before
    assert (results / "temperature__sweep_decoding.csv").is_file()
    assert (results / "temperature__claims.csv").is_file()
    assert "a table the run no longer makes" not in (results / "temperature__calibrators.csv").read_text()
    claims = pd.read_csv(results / "claims.csv")
    assert {"compare_smollm2", "temperature", "scaling", "tuning"} <= set(claims["run"])
    assert (
        claims["claim"].iloc[0] == "token_overconfidence"
    )  # the mission's order, whatever order runs came in
    provenance = pd.read_csv(results / "runs.csv", dtype=str)
    assert provenance["run"].is_unique and "temperature" in set(provenance["run"])
    assert provenance["commit"].str.fullmatch(r"[0-9a-f]{12}(-dirty)?|unknown").all()
    assert (tmp_path / "generated" / "table_temperature.tex").is_file()
    assert sorted(p.name for p in (work / "notebooks").glob("*.ipynb")) == [
        "02_temperature_tradeoff__temperature.ipynb"
    ]
    assert (tmp_path / "generated" / "temperature" / "temperature_tradeoff.png").is_file()
    shutil.copytree(figures["work"] / "runs" / "compare_smollm2", work / "runs" / "compare_smollm2")
    capsys.readouterr()
    main(["--scale", "tiny", "--work", str(work), "--artifacts", str(figures["work"] / "artifacts"),
          "--results", str(results), "--generated", str(tmp_path / "generated"), "--only", "temperature"])  # fmt: skip
    said = capsys.readouterr().out
    assert "notebook 02_temperature_tradeoff__temperature: current" in said  # it reads temperature alone
    assert "notebook 06_full_ece_vs_answer_ece__full_ece: executed" in said
    assert sorted(p.name for p in (work / "notebooks").glob("*.ipynb")) == [
        "02_temperature_tradeoff__temperature.ipynb",
        "06_full_ece_vs_answer_ece__full_ece.ipynb",
    ]  # the other run is in work now
    assert (tmp_path / "generated" / "full_ece" / "full_ece_vs_answer_ece.png").is_file()
    tuning_before = (results / "tuning__tuning_report.csv").read_text()
    main(["--scale", "tiny", "--work", str(work), "--artifacts", str(figures["work"] / "artifacts"),
          "--results", str(results), "--generated", str(tmp_path / "generated"), "--only", "tuning_probe_16"])  # fmt: skip
    assert (
        results / "tuning__tuning_report.csv"
    ).read_text() == tuning_before  # the other tuning run stays in
    assert "tuning_probe_16_closed" in set(pd.read_csv(results / "runs.csv", dtype=str)["run"])


def test_tuning_runs_published_one_at_a_time_add_up_and_must_share_an_evaluation(figures, tmp_path):
    """Each calibration-tuning run is published under its own name; the merged report (the tuning table, the label
    budget claims) holds every run published so far, and runs evaluated differently are refused in one line."""
    from calib.errors import CalibError
    from paper import results

    folders = sorted((figures["work"] / "runs").glob("tuning_*"))
    out = tmp_path / "results"
    for folder in folders:  # one session each
        results.collect({}, out, [folder])
    merged = pd.read_csv(out / "tuning__tuning_report.csv")
    assert merged["N"].dropna().nunique() == len(folders)
    assert merged[merged["N"].isna()].duplicated(["eval", "method", "metric"]).sum() == 0
    claims = pd.read_csv(out / "claims.csv")
    assert (claims["claim"] == "label_budget").sum() == len(folders)
    with pytest.raises(CalibError, match="more than one"):
        results.collect({}, out, [folders[0], folders[0]])
    first = next(out.glob("tuning_*__tuning_report.csv"))
    first.write_text(pd.read_csv(first).assign(eval_key="another evaluation").to_csv(index=False))
    with pytest.raises(CalibError, match="evaluate closed questions differently"):
        results.merge_tuning(out)
