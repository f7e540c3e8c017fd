"""The scaling study on tiny-llama, run as `calib experiment=scaling`: its K = 1, R = 0 point equals the plain runner,
it writes every table and figure into the run folder, a rerun reuses the stored generation, and its tables agree
with independent computations."""

import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from calib.cli import main
from calib.decode.revise import Revision, get_cue
from calib.errors import CalibError
from calib.estimators.synthetic import generations_from
from calib.pipeline import run
from calib.pipeline.config import MetricsConfig, ScalingStudyConfig, compose, validate
from calib.pipeline.store import ArtifactStore
from calib.plots import save_figure
from calib.studies import scaling, scaling_report, scaling_tables
from calib.tasks import Example

ESTIMATORS = [
    "msp",
    "inverse_perplexity",
    "mean_token_entropy",
    "p_true",
    "self_consistency",
    "revision_stability",
]
TINY = [
    "model=tiny-llama",
    "task.limit=5",
    "decoding.max_new_tokens=5",
    "decoding.shard_size=3",
    "estimators.exclude=[]",
    "estimators.semantic=exact",
    "metrics.names=[auroc,brier,ece,prr]",
    "metrics.show=[auroc]",
    "metrics.n_resamples=20",
    "metrics.groups=false",
    "progress=false",
]
GRID = [
    "study.scaling.samples=[1,2]",
    "study.scaling.passes=2",
    "study.scaling.gates=[msp]",
    "study.scaling.fractions=[0.0,0.4,1.0]",
]
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # in-process Hydra must leave logging alone
FIGURES = [
    "auroc_vs_compute",
    "prr_vs_compute",
    "ece_vs_compute",
    "brier_vs_compute",
    "per_pass",
    "transitions",
]


def calib(run_dir, artifacts, *overrides: str) -> None:
    """`calib experiment=scaling ...` on tiny settings, in this process."""
    main(
        [
            "experiment=scaling",
            *TINY,
            *GRID,
            f"estimators.names=[{','.join(ESTIMATORS)}]",
            f"artifacts_dir={artifacts}",
            f"hydra.run.dir={run_dir}",
            *QUIET,
            *overrides,
        ]
    )


def read_study(run_dir) -> SimpleNamespace:
    """The study's tables as it left them in the run folder."""
    tables = {
        n: pd.read_csv(run_dir / f"{n}.csv") for n in ("points", "accuracy", "differences", "transitions")
    }
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return SimpleNamespace(
        out=run_dir,
        adaptive=pd.read_csv(run_dir / "adaptive.csv"),
        confidences=pd.read_parquet(run_dir / "confidences.parquet"),
        manifest=manifest,
        meta=manifest["summary"],
        **tables,
    )


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scaling")
    plain = compose(
        ["experiment=scaling", *TINY, "study.name=null", "decoding.num_samples=1", "report.figures=false"]
    )
    plain.estimators.names = list(ESTIMATORS[:4])  # what a K = 1 run can feed
    plain.artifacts_dir = str(tmp / "artifacts")
    runner = run(plain, tmp / "runner", print_summary=False)
    calib(tmp / "study", tmp / "artifacts")
    return runner, read_study(tmp / "study"), tmp


def test_k1_r0_point_equals_the_plain_runner(both):
    plain, study, _ = both
    ours = study.points[(study.points["K"] == 1) & (study.points["R"] == 0)]
    assert set(ours["estimator"]) == set(
        ESTIMATORS[:4]
    )  # sampling and revision estimators need K >= 2 / R >= 1
    merged = ours.merge(plain.metrics, on=["group", "estimator", "metric"], suffixes=("", "_runner"))
    assert len(merged) == len(plain.metrics) == 4 * 4
    for col in ("value", "low", "high"):
        np.testing.assert_allclose(merged[col], merged[f"{col}_runner"], atol=1e-6, equal_nan=True)
    assert (merged["n"] == merged["n_runner"]).all()
    runner_grades = pd.read_parquet(plain.run_dir / "results.parquet").drop_duplicates("question_id")
    answers = pd.read_csv(study.out / "answers.csv")
    assert list(answers["answer_0"].fillna("")) == list(runner_grades["answer"])
    accuracy = study.accuracy.set_index(["K", "R"])
    assert accuracy.loc[(1, 0), "accuracy"] == pytest.approx(plain.manifest["summary"]["accuracy"])


def test_every_table_and_figure_is_written_into_the_run_folder(both):
    _, study, _ = both
    for name in (
        "points.csv",
        "accuracy.csv",
        "differences.csv",
        "transitions.csv",
        "adaptive.csv",
        "answers.csv",
        "confidences.parquet",
        "summary.md",
        "manifest.json",
        "config.yaml",
    ):
        assert (study.out / name).stat().st_size > 0, name
    for name in [*FIGURES, "adaptive"]:
        assert (study.out / "figures" / f"{name}.png").stat().st_size > 1000, name
    grid = {(k, r) for k in (1, 2) for r in range(3)}
    assert set(zip(study.points["K"], study.points["R"])) == grid
    present = study.points.groupby(["K", "R"])["estimator"].apply(set)
    assert "self_consistency" in present[(2, 0)] and "self_consistency" not in present[(1, 2)]
    assert "revision_stability" in present[(1, 1)] and "revision_stability" not in present[(2, 0)]
    summary = (study.out / "summary.md").read_text()
    assert "## Accuracy and compute" in summary and "## Transitions" in summary and "## Adaptive" in summary
    assert study.manifest["study"] == "scaling" and study.meta["samples"] == [1, 2]


def test_compute_grows_with_samples_and_passes_and_matches_the_token_counts(both):
    _, study, _ = both
    acc = study.accuracy.set_index(["K", "R"])
    assert acc.loc[(2, 0), "processed_tokens"] > acc.loc[(1, 0), "processed_tokens"]
    assert (
        acc.loc[(1, 2), "generated_tokens"]
        > acc.loc[(1, 1), "generated_tokens"]
        > acc.loc[(1, 0), "generated_tokens"]
    )
    flops = study.meta["flops_per_token"]
    np.testing.assert_allclose(acc["flops"], acc["processed_tokens"] * flops)
    assert (acc["total_generated_tokens"] == (acc["generated_tokens"] * 5).round()).all()


def test_tables_agree_with_direct_computation(both):
    _, study, _ = both
    conf = study.confidences
    correct = {
        r: conf[(conf["R"] == r)].drop_duplicates("question_id")["correct"].to_numpy() for r in range(3)
    }
    acc = study.accuracy.set_index(["K", "R"])
    for r in range(3):
        assert acc.loc[(2, r), "accuracy"] == pytest.approx(correct[r].mean())
    diffs = study.differences
    row = diffs[(diffs["estimator"] == "accuracy") & (diffs["R"] == 2)].iloc[0]
    assert row["value"] == pytest.approx(correct[2].mean() - correct[0].mean())
    assert row["low"] <= row["value"] + 1e-9 and row["value"] <= row["high"] + 1e-9
    transitions = study.transitions.set_index(["from", "to"])
    t = transitions.loc[(0, 2)]
    assert t["fixed"] == int(((correct[0] == 0) & (correct[2] == 1)).sum())
    assert t[["fixed", "broke", "kept_correct", "kept_wrong"]].sum() == 5
    adaptive = study.adaptive
    none, every = adaptive[adaptive["fraction"] == 0.0].iloc[0], adaptive[adaptive["fraction"] == 1.0].iloc[0]
    assert none["accuracy"] == pytest.approx(correct[0].mean()) and every["accuracy"] == pytest.approx(
        correct[2].mean()
    )
    assert none["compute_saved"] == 1.0 and every["compute_saved"] == 0.0
    assert none["processed_tokens"] == pytest.approx(acc.loc[(1, 0), "processed_tokens"])
    assert every["processed_tokens"] == pytest.approx(acc.loc[(1, 2), "processed_tokens"])


def test_a_rerun_reuses_the_stored_generation(both):
    _, study, tmp = both
    calib(tmp / "again", tmp / "artifacts")
    again = read_study(tmp / "again")
    record = again.manifest["stages"]["generate"]["passes"]
    assert record["cached"] and record["generated_shards"] == 0 and record["reused_shards"] == 2
    assert record["key"] == study.manifest["stages"]["generate"]["passes"]["key"]
    first = pd.read_csv(study.out / "answers.csv")
    assert pd.read_csv(tmp / "again" / "answers.csv").equals(first)
    store = ArtifactStore(tmp / "artifacts")
    assert (
        record["key"] in store.keys("generate") and len(store.keys("generate")) == 2
    )  # + the K = 1 runner's
    passes = store.path("generate", record["key"]) / "shards" / "000000-000003"
    assert sorted(p.name for p in passes.iterdir()) == ["pass0", "pass1", "pass2", "revision.safetensors"]


def test_figures(both, tmp_path):
    _, study, _ = both
    ece = scaling_report.metric_vs_compute(study.points, study.accuracy, "ece")
    assert [ax.get_title() for ax in ece.axes] == ["token-level", "reflexive", "consistency", "revision"]
    assert ece.axes[0].get_xscale() == "log" and len(ece.axes[0].lines) == 3 * 3  # 3 estimators x 3 passes
    heat = scaling_report.transitions_figure(study.transitions)
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()] == [
        "pass 0 → 1",
        "pass 1 → 2",
        "pass 0 → 2",
    ]
    for fig, name in ((ece, "ece"), (heat, "transitions")):
        (path,) = save_figure(fig, tmp_path / name, ["png"])
        assert path.stat().st_size > 1000


def fake_revision(decoded: np.ndarray) -> Revision:
    n = decoded.shape[1]
    gens = generations_from([["a", "b"]] * n)
    return Revision(
        passes=[gens] * decoded.shape[0],
        revised=np.ones(n, bool),
        decoded=decoded,
        fed=np.zeros_like(decoded),
        prompt_tokens=np.full(n, 10),
        histories=[[[]]] * n,
        offsets=np.zeros_like(decoded),
        cue=get_cue("wait"),
        style="chat",
    )


def test_adaptive_revision_by_hand():
    decoded = np.zeros((2, 4, 2), int)
    decoded[0] = 5  # pass 0: 10 tokens per question over greedy + 1 sample
    decoded[1] = [[1, 1], [2, 2], [3, 3], [4, 4]]  # revise costs 2, 4, 6, 8
    correct = np.array([[1, 0, 0, 1], [1, 1, 0, 0]], float)
    conf = np.array([0.9, 0.1, np.nan, 0.5])  # NaN counts as least confident: revise order 2, 1, 3, 0
    confidences = {(1, 0): {"msp": conf}, (1, 1): {"msp": np.array([0.8, 0.7, 0.2, 0.3])}}
    grid = ScalingStudyConfig(samples=[1], passes=1, gates=["msp"], fractions=[0.5, 0.75])
    table = scaling_tables.adaptive_table(
        fake_revision(decoded), confidences, correct, grid, MetricsConfig(), flops_per_token=2
    )
    half, most = table.iloc[0], table.iloc[1]
    assert half["revised"] == 2 and half["threshold"] == 0.5  # questions 2 and 1 revised
    assert half["accuracy"] == pytest.approx(np.mean([1, 1, 0, 1]))
    assert half["processed_tokens"] == pytest.approx(20 + (6 + 4) / 4)
    assert (
        half["compute_saved"] == pytest.approx(1 - 10 / 20) and half["flops"] == 2 * half["processed_tokens"]
    )
    assert most["revised"] == 3 and most["accuracy"] == pytest.approx(np.mean([1, 1, 0, 0]))
    assert np.isnan(most["accuracy_kept"])  # revising everything gains nothing here: 0.5 -> 0.5
    mixed = np.array([0.9, 0.7, 0.2, 0.3])
    assert most["gate_auroc"] == pytest.approx(roc_auc_score([1, 1, 0, 0], mixed))


def test_majority_vote_and_transitions_by_hand():
    examples = [Example("a", "Capital of France?", ("Paris",)), Example("b", "Capital of Italy?", ("Rome",))]
    gens = generations_from([["Lyon", "Paris", "paris."], ["Rome", "Milan", "Turin"]])
    np.testing.assert_array_equal(
        scaling.vote_correct(examples, gens, {}, {}), [1.0, 1.0]
    )  # tie -> greedy first
    grades = [
        pd.DataFrame({"correct": [1.0, 0.0, 1.0], "extracted": ["x", "y", "z"]}),
        pd.DataFrame({"correct": [0.0, 1.0, 1.0], "extracted": ["w", "v", "Z"]}),
    ]
    t = scaling_tables.transition_table(grades).iloc[0]
    assert (t["fixed"], t["broke"], t["kept_correct"], t["kept_wrong"], t["changed"]) == (1, 1, 1, 0, 2)


def test_the_preset_is_the_study_and_its_grid_is_checked():
    cfg = compose(["experiment=scaling", "task.limit=3", "study.scaling.samples=[1,4]"])
    assert (cfg.study.name, cfg.task.name, cfg.task.limit) == ("scaling", "mixed", 3)
    assert cfg.metrics.names == ["auroc", "prr", "ece", "brier"]
    assert cfg.study.scaling.samples == [1, 4] and cfg.study.scaling.passes == 2
    for override, message in (
        ("study.scaling.samples=[4,1]", "study.scaling.samples=[4, 1] is not allowed: give increasing"),
        ("study.scaling.cue=shout", "study.scaling.cue='shout' is not allowed"),
        ("study.scaling.gates=[nope]", "study.scaling.gates='nope' is not allowed"),
        ("study.name=scalin", "study.name='scalin' is not allowed"),
    ):
        with pytest.raises(CalibError, match=re.escape(message)):
            validate(compose(["experiment=scaling", override]))


def test_a_multirun_over_the_preset_runs_each_study_and_skips_the_comparison(tmp_path, caplog):
    sweep = tmp_path / "sweep"
    with caplog.at_level(logging.WARNING, logger="calib"):
        main(
            [
                "-m",
                "experiment=scaling",
                *TINY,
                "task.limit=2,3",
                "study.scaling.samples=[1]",
                "study.scaling.passes=1",
                "study.scaling.gates=[msp]",
                "estimators.names=[msp]",
                "report.figures=false",
                f"artifacts_dir={tmp_path / 'artifacts'}",
                f"hydra.sweep.dir={sweep}",
                *QUIET,
            ]
        )
    for job, n in (("0", 2), ("1", 3)):
        accuracy = pd.read_csv(sweep / job / "accuracy.csv")
        assert (sweep / job / "summary.md").is_file() and set(accuracy["R"]) == {0, 1}, job
        assert json.loads((sweep / job / "manifest.json").read_text())["summary"]["questions"] == n
    assert not (sweep / "compare.md").exists()
    assert "these are scaling study runs, whose tables are in each run folder" in caplog.text


def test_memo_calls_make_each_teacher_forced_pass_once(monkeypatch):
    """The grid's bundles ask the same greedy answer's distributions and attention statistics at every K: MemoCalls
    runs each distinct (prompt, tokens[, suffix]) once and hands back the same arrays in the order asked."""
    import importlib

    import numpy as np

    from calib.studies.scaling import MemoCalls

    score_module = importlib.import_module(
        "calib.decode.score"
    )  # the package re-exports a function named score
    attention_module = importlib.import_module("calib.estimators.attention")

    calls = {"distribution": [], "attention": []}

    def fake_distribution(lm, prompts, continuations):
        calls["distribution"].append(list(zip(prompts, map(tuple, continuations))))
        return [np.full(3, len(p) + sum(c)) for p, c in zip(prompts, continuations)]

    def fake_attention(lm, prompts, answers, suffix):
        calls["attention"].append((list(prompts), suffix))
        return [np.full(2, len(p) + int(np.sum(a)) + len(suffix)) for p, a in zip(prompts, answers)]

    monkeypatch.setattr(score_module, "score_distribution", fake_distribution)
    monkeypatch.setattr(attention_module, "attention_statistics", fake_attention)
    memo = MemoCalls(lm=None)
    first = memo.distribution(["ab", "c"], [np.array([1, 2]), np.array([3])])
    again = memo.distribution(["c", "ab", "d"], [[3], [1, 2], [4]])
    assert [x[0] for x in first] == [5, 4] and [x[0] for x in again] == [4, 5, 5]
    assert calls["distribution"] == [[("ab", (1, 2)), ("c", (3,))], [("d", (4,))]]
    a1 = memo.attention(["ab"], [np.array([1])], "")
    a2 = memo.attention(["ab", "ab"], [[1], [1]], "Decision:")  # another suffix is another pass
    a3 = memo.attention(["ab"], [[1]], "")
    assert a1[0][0] == a3[0][0] == 3 and a2[0][0] == a2[1][0] == 12
    assert calls["attention"] == [(["ab"], ""), (["ab"], "Decision:")]
