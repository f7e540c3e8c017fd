"""The scaling study on tiny-llama: its K = 1, R = 0 point equals the plain runner, it writes every table and
figure, resumes without regenerating, and its tables agree with independent computations."""

import copy

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from calib.decode.revise import Revision, get_cue
from calib.errors import CalibError
from calib.estimators.synthetic import generations_from
from calib.pipeline import RunConfig, run
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
METRICS = ["auroc", "brier", "ece", "prr"]


def small_config(tmp) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = "tiny-llama"
    cfg.task.limit = 5
    cfg.decoding.num_samples = 1
    cfg.decoding.max_new_tokens = 5
    cfg.decoding.shard_size = 3
    cfg.estimators.names = list(ESTIMATORS[:4])  # what a K = 1 run can feed
    cfg.estimators.semantic = "exact"
    cfg.metrics.names = list(METRICS)
    cfg.metrics.show = ["auroc"]
    cfg.metrics.n_resamples = 20
    cfg.metrics.groups = False
    cfg.report.figures = False
    cfg.artifacts_dir = str(tmp / "artifacts")
    cfg.progress = False
    return cfg


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scaling")
    plain = run(small_config(tmp), tmp / "runner", print_summary=False)
    cfg = copy.deepcopy(small_config(tmp))
    cfg.estimators.names = list(ESTIMATORS)
    cfg.report.formats = ["png"]  # figures stay off here: test_figures draws two of them
    study_cfg = scaling.StudyConfig(cfg, samples=(1, 2), passes=2, gates=("msp",), fractions=(0.0, 0.4, 1.0))
    study = scaling.run_study(study_cfg, tmp / "study", progress=False)
    return plain, study, study_cfg


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


def test_every_table_is_written(both):
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
        "meta.json",
    ):
        assert (study.out / name).stat().st_size > 0, name
    grid = {(k, r) for k in (1, 2) for r in range(3)}
    assert set(zip(study.points["K"], study.points["R"])) == grid
    present = study.points.groupby(["K", "R"])["estimator"].apply(set)
    assert "self_consistency" in present[(2, 0)] and "self_consistency" not in present[(1, 2)]
    assert "revision_stability" in present[(1, 1)] and "revision_stability" not in present[(2, 0)]
    summary = (study.out / "summary.md").read_text()
    assert "## Accuracy and compute" in summary and "## Transitions" in summary and "## Adaptive" in summary


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


def test_a_second_study_reuses_the_stored_generation(both, monkeypatch):
    _, study, cfg = both
    from calib.models import load_model
    from calib.pipeline import stages

    def fail(*args, **kwargs):
        raise AssertionError("regenerated")

    lm = load_model("tiny-llama")
    prompts = stages.build_prompts(stages.load_examples(cfg.run.task), lm, cfg.run.task)
    monkeypatch.setattr(scaling, "revise", fail)
    rv = scaling.generate_passes(lm, prompts, cfg, lm.prompt_style, study.out, progress=False)
    answers = pd.read_csv(study.out / "answers.csv")
    assert [row[0] for row in rv.passes[2].texts] == list(answers["answer_2"].fillna(""))
    assert rv.decoded.shape == (3, 5, 3) and len(rv.histories) == 5


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
    cfg = scaling.StudyConfig(RunConfig(), samples=(1,), passes=1, gates=("msp",), fractions=(0.5, 0.75))
    table = scaling_tables.adaptive_table(
        fake_revision(decoded), confidences, correct, cfg, flops_per_token=2
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


def test_command_line_reads_the_preset_and_checks_the_grid(tmp_path):
    cfg, out, progress = scaling.parse_args(
        [
            "--out",
            str(tmp_path),
            "--model",
            "tiny-llama",
            "--limit",
            "3",
            "--samples",
            "1,4",
            "--quiet",
            "decoding.max_new_tokens=7",
        ]
    )
    assert (cfg.run.model.name, cfg.run.task.name, cfg.run.task.limit) == ("tiny-llama", "mixed", 3)
    assert cfg.run.metrics.names == ["auroc", "prr", "ece", "brier"] and cfg.run.decoding.max_new_tokens == 7
    assert cfg.samples == (1, 4) and cfg.passes == 2 and out == tmp_path and not progress
    with pytest.raises(CalibError, match="increasing sample counts"):
        scaling.check_config(scaling.StudyConfig(cfg.run, samples=(4, 1)))
    with pytest.raises(CalibError, match="unknown revise cue"):
        scaling.check_config(scaling.StudyConfig(cfg.run, cue="shout"))
