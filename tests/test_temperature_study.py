"""The temperature sweep study on tiny-llama, run as `calib experiment=temperature_sweep`: it writes every output
into the run folder, post-hoc accuracy is fixed while decoding accuracy comes from re-generated answers, the same
seed gives the same tables, a rerun reuses the stored generations, calibrators never see a test label, and bad
input is one line.

tiny-llama (random weights) is never right, so the study runs here with a stand-in grader (a fixed coin flip per
question and answer text): the grading path is the study's own, and both classes occur."""

import contextlib
import hashlib

import numpy as np
import pandas as pd
import pytest
from test_recalibrate_splits import SpyCalibrator  # the split-discipline spy, reused

import calib.tasks
from calib.cli import main
from calib.metrics import ece
from calib.models import load_model
from calib.pipeline import RunConfig, stages
from calib.pipeline.config import compose
from calib.pipeline.run import run as run_job
from calib.pipeline.store import ArtifactStore
from calib.recalibrate import split_by_ids
from calib.studies import temperature as study
from calib.studies import temperature_report
from calib.tasks.grading import Grade

TEMPS = (0.7, 1.3)
TABLES = ("sweep_decoding.csv", "sweep_posthoc.csv", "calibrators.csv", "answers.csv")

pytestmark = pytest.mark.filterwarnings(
    "ignore:fitted temperature",  # random weights: the NLL-optimal T is the upper bound
    "ignore:bootstrap",  # ten questions: some resamples hold one class
)


TINY = [
    "model=tiny-llama",
    "task.limit=10",
    "decoding.max_new_tokens=5",
    "decoding.shard_size=5",
    "metrics.n_resamples=20",
    "progress=false",
    "study.temperature_sweep.temperatures=[0.7,1.3]",
    "study.temperature_sweep.max_reference_tokens=60",
]


def small_config(artifacts=None) -> RunConfig:
    cfg = compose(["experiment=temperature_sweep", *TINY])
    cfg.artifacts_dir = str(artifacts)
    return cfg


def coin_grade(ex, answer, **options) -> Grade:
    heads = float(hashlib.sha256(f"{ex.id}\x00{answer}".encode()).digest()[0] % 2)
    return Grade(heads, heads, None, "coin")


@contextlib.contextmanager
def coin_grading():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(calib.tasks, "grade_detail", coin_grade)  # grade_table imports it at call time
        yield


def run(run_dir, artifacts) -> study.StudyResult:
    with coin_grading():
        return run_job(small_config(artifacts), run_dir, print_summary=False)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tsweep")
    return run(tmp / "a", tmp / "artifacts")


def answers_of(result) -> pd.DataFrame:
    return pd.read_csv(result.run_dir / "answers.csv", keep_default_na=False)


def test_every_output_is_written(result):
    names = (
        *TABLES,
        "sweep_decoding.md",
        "sweep_posthoc.md",
        "calibrators.md",
        "summary.md",
        "manifest.json",
    )
    for name in names:
        assert (result.run_dir / name).stat().st_size > 0, name
    assert (result.run_dir / "sweep.png").stat().st_size > 1000
    decoding = pd.read_csv(result.run_dir / "sweep_decoding.csv")
    assert set(zip(decoding["confidence"], decoding["T"])) == {
        (c, t) for c in ("model", "sampling") for t in TEMPS
    }
    summary = (result.run_dir / "summary.md").read_text()
    for heading in ("## Decoding temperature", "## Post-hoc temperature", "## Fitted token temperature"):
        assert heading in summary
    assert result.meta["reference_tokens"] <= 60 and result.fitted is not None
    calibrators = pd.read_csv(result.run_dir / "calibrators.csv")
    methods = list(calibrators["method"])
    assert methods[:5] == ["uncalibrated", *study.CALIBRATORS] and methods[5].startswith("temperature (T = ")
    assert calibrators["ece"].notna().all()  # both classes: every calibrator could be fitted


def test_posthoc_accuracy_is_fixed_and_decoding_accuracy_comes_from_the_new_answers(result):
    answers = answers_of(result)
    posthoc = pd.read_csv(result.run_dir / "sweep_posthoc.csv")
    kept = answers["greedy"] != ""  # an empty answer has no confidence and is left out
    np.testing.assert_allclose(posthoc["accuracy"], answers.loc[kept, "greedy_correct"].mean(), rtol=1e-6)
    assert posthoc["accuracy"].nunique() == 1
    assert (posthoc["n"] == kept.sum()).all()
    assert list(answers["T0.7"]) != list(answers["T1.3"]) != list(answers["greedy"])  # re-sampled at each T
    rows = pd.read_csv(result.run_dir / "sweep_decoding.csv").set_index(["confidence", "T"])
    for t in TEMPS:
        mine = answers[answers[f"T{t:g}"] != ""]
        for confidence in ("model", "sampling"):
            assert rows.loc[(confidence, t), "accuracy"] == pytest.approx(mine[f"T{t:g}_correct"].mean())
            assert rows.loc[(confidence, t), "n"] == len(mine)
    assert list(answers["T0.7_correct"]) != list(answers["T1.3_correct"])  # graded anew at each T


def test_same_seed_gives_identical_tables_and_a_rerun_reuses_the_generations(result, tmp_path):
    again = run(tmp_path / "b", tmp_path / "artifacts")  # a fresh store: everything generated anew
    for name in TABLES:
        assert (again.run_dir / name).read_text() == (result.run_dir / name).read_text(), name
    generated = again.manifest["stages"]["generate"]
    assert sorted(generated) == ["T=0.7", "T=1.3", "greedy"] and not any(
        r["cached"] for r in generated.values()
    )
    keys = ArtifactStore(tmp_path / "artifacts").keys("generate")
    assert sorted(keys) == sorted(r["key"] for r in generated.values())  # greedy once, one artifact per T

    cached = run(tmp_path / "c", tmp_path / "artifacts")
    for name in TABLES:
        assert (cached.run_dir / name).read_text() == (result.run_dir / name).read_text(), name
    reused = cached.manifest["stages"]["generate"]
    assert all(r["cached"] and r["generated_shards"] == 0 for r in reused.values())
    assert {k: r["key"] for k, r in reused.items()} == {k: r["key"] for k, r in generated.items()}
    assert ArtifactStore(tmp_path / "artifacts").keys("generate") == keys


def test_calibrators_never_see_test_labels(result):
    answers = answers_of(result)
    answers = answers[answers["greedy"] != ""]
    conf, labels = answers["greedy_msp"].to_numpy(), answers["greedy_correct"].to_numpy()
    split = split_by_ids(list(answers["question_id"]), 0.5)
    poisoned = labels.copy()
    poisoned[split.test] = 7.0
    clean = study.fit_calibrators(study.CALIBRATORS, conf, labels, split)
    dirty = study.fit_calibrators(study.CALIBRATORS, conf, poisoned, split)
    for kind in study.CALIBRATORS:
        assert clean[kind] == dirty[kind], kind
    spy = SpyCalibrator()
    study.fit_calibrators([spy], conf, poisoned, split)
    assert np.array_equal(spy.seen[0], conf[split.calibration])
    assert np.array_equal(spy.seen[1], labels[split.calibration])

    # the token temperature: scrambling the test questions' reference tokens changes nothing
    lm = load_model("tiny-llama")
    cfg = small_config()
    examples = stages.load_examples(cfg.task)
    prompts = stages.build_prompts(examples, lm, cfg.task)
    style = stages.prompt_style(cfg.task, lm)
    logits, tokens, question = study.reference_logits(lm, examples, prompts, style, 60)
    full = split_by_ids([ex.id for ex in examples], 0.5)
    test = np.isin(question, full.test)
    scrambled = tokens.copy()
    scrambled[test] = np.random.default_rng(0).integers(0, logits.shape[1], test.sum())
    a = study.fit_token_temperature(logits, tokens, question, full, 15)
    b = study.fit_token_temperature(logits, scrambled, question, full, 15)
    assert a.temperature == b.temperature == result.fitted.temperature
    assert a.calibration_tokens == b.calibration_tokens == result.fitted.calibration_tokens


def test_calibrator_table_scores_test_rows_only():
    rng = np.random.default_rng(0)
    conf = rng.random(200)
    labels = (rng.random(200) < conf**2).astype(float)
    split = split_by_ids([f"q{i}" for i in range(200)], 0.5)
    fitted = study.fit_calibrators(["isotonic"], conf, labels, split)
    fitted.update(
        study.fit_calibrators(["platt"], conf, np.zeros(200), split)
    )  # one class: the reason is kept
    metrics = RunConfig().metrics
    metrics.n_resamples = 50
    table = temperature_report.calibrator_table(fitted, conf, labels, split, metrics).set_index("method")
    t = split.test
    after = fitted["isotonic"].transform(conf[t])
    assert table.loc["uncalibrated", "ece"] == pytest.approx(ece(conf[t], labels[t]))
    assert table.loc["isotonic", "ece"] == pytest.approx(ece(after, labels[t]))
    assert table.loc["isotonic", "ece_change"] == pytest.approx(
        ece(after, labels[t]) - ece(conf[t], labels[t])
    )
    assert "both correct and wrong" in table.loc["platt", "fitted"] and np.isnan(table.loc["platt", "ece"])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "study.temperature_sweep.temperatures=[0,1]",
            "study.temperature_sweep.temperatures=[0.0, 1.0] is not",
        ),
        ("study.temperature_sweep.temperatures=[]", "give distinct values"),
        ("study.temperature_sweep.temperatures=[1,hot]", "study.temperature_sweep.temperatures"),
        ("study.temperature_sweep.calibrators=[platt,magic]", "study.temperature_sweep.calibrators='magic'"),
        ("model.name=nope", "model.name='nope' is not allowed"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, override, message):
    artifacts, run_dir = tmp_path / "artifacts", tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "experiment=temperature_sweep",
                "model=tiny-llama",
                override,
                f"artifacts_dir={artifacts}",
                f"hydra.run.dir={run_dir}",
                "hydra/job_logging=none",  # in-process Hydra must leave pytest's logging alone
                "hydra/hydra_logging=none",
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not artifacts.exists() and not run_dir.exists()  # nothing generated


def test_the_preset_is_the_study():
    cfg = compose(
        ["experiment=temperature_sweep", "task.limit=3", "study.temperature_sweep.temperatures=[0.8,1.2]"]
    )
    assert (cfg.study.name, cfg.model.name, cfg.task.name, cfg.task.limit) == (
        "temperature_sweep",
        "smollm2-135m-instruct",
        "mixed",
        3,
    )
    t = cfg.study.temperature_sweep
    assert t.temperatures == [0.8, 1.2] and cfg.decoding.shard_size == 25 and t.top_logprobs == 20
    assert tuple(t.calibrators) == study.CALIBRATORS and cfg.metrics.names == ["ece", "brier", "auroc"]
