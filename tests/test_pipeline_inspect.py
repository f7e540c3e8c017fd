"""`calib inspect` and `calib.pipeline.load_run` on a finished tiny run: every section, read from the store with no
model load and no model call, and values that agree with what the estimators computed."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from calib.errors import CalibError

NAMES = ["semantic_entropy", "multi_hypothesis", "p_true"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from calib.pipeline import run
    from calib.pipeline.config import compose

    root = tmp_path_factory.mktemp("inspect")
    cfg = compose(
        [
            "experiment=smoke",
            "task.limit=4",
            "estimators.semantic=exact",
            f"estimators.names=[{','.join(NAMES)}]",
            "metrics=quick",
            "report.figures=false",
            "progress=false",
            f"artifacts_dir={root / 'artifacts'}",
        ]
    )
    run(cfg, root / "run", print_summary=False)
    return root / "run"


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model or calling one fails the test."""
    import calib.decode
    import calib.models

    def refuse(*args, **kwargs):
        raise AssertionError("inspect must not load or call a model")

    for module, name in ((calib.models, "load_model"), (calib.decode, "score"), (calib.decode, "generate")):
        monkeypatch.setattr(module, name, refuse)


def test_inspect_prints_every_section_of_a_question_fast_and_without_a_model(run_dir, no_model, capsys):
    from calib.cli import main
    from calib.pipeline import load_run

    tables = load_run(run_dir)
    question = tables.questions.iloc[1]
    started = time.perf_counter()
    main(["inspect", str(run_dir), "--question", str(question["question_id"])])
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert seconds < 5, seconds
    assert f"Question {question['question_id']}" in out and question["question"] in out
    assert "Prompt:" in out and question["prompt"].splitlines()[-2] in out
    gold = " | ".join(" / ".join(g) for g in question["gold"])
    assert f"Gold answers: {gold}" in out
    greedy = tables.answers[
        (tables.answers["question_id"] == question["question_id"]) & (tables.answers["sample"] == 0)
    ]
    assert f"Greedy answer: {greedy['text'].iloc[0]!r}" in out
    assert ("wrong" in out) or ("correct" in out)
    assert f"log-prob {greedy['logprob'].iloc[0]:.3f} over {greedy['num_tokens'].iloc[0]} tokens" in out
    assert "Samples (3;" in out and "Clusters (" in out and "Estimators:" in out
    clusters = tables.clusters[tables.clusters["question_id"] == question["question_id"]]
    assert len(clusters) >= 1 and clusters["p_true"].notna().all()  # multi_hypothesis asked for every one
    for _, c in clusters.iterrows():
        assert f"{c['mass']:>6.3f} {c['p_true']:>7.3f}" in out
    for name in NAMES:
        row = tables.estimates[
            (tables.estimates["question_id"] == question["question_id"])
            & (tables.estimates["estimator"] == name)
        ]
        assert f"{row['confidence'].iloc[0]:.4f}" in out and name in out


def test_load_run_tables_agree_with_the_estimators(run_dir, no_model):
    from calib.estimators.multi_hypothesis import greedy_answer_confidence
    from calib.pipeline import load_run

    tables = load_run(run_dir)
    n = len(tables.questions)
    assert n == 4 and tables.notes == []
    assert len(tables.answers) == n * 4  # greedy + 3 samples
    assert tables.questions["gold"].map(bool).all() and tables.questions["prompt"].str.len().gt(0).all()
    assert set(tables.estimates["estimator"]) == set(NAMES) and len(tables.estimates) == n * len(NAMES)
    assert len(tables.metrics) > 0
    estimates = tables.estimates.set_index(["question_id", "estimator"])
    for _, q in tables.questions.iterrows():
        qid = q["question_id"]
        clusters = tables.clusters[tables.clusters["question_id"] == qid]
        assert clusters["mass"].sum() == pytest.approx(1.0)
        samples = tables.answers[(tables.answers["question_id"] == qid) & (tables.answers["sample"] > 0)]
        assert sorted(m for members in clusters["members"] for m in members) == sorted(samples["sample"])
        # P(True) read back from the stored calls is what the estimators used
        assert estimates.loc[(qid, "p_true"), "confidence"] == pytest.approx(q["p_true"], abs=1e-12)
        expected = greedy_answer_confidence(
            clusters["mass"].to_numpy(), clusters["p_true"].to_numpy(), int(q["greedy_cluster"]), q["p_true"]
        )
        assert estimates.loc[(qid, "multi_hypothesis"), "confidence"] == pytest.approx(expected, abs=1e-12)
    lp = tables.answers["token_logprobs"].map(np.sum)
    np.testing.assert_allclose(lp.to_numpy(), tables.answers["logprob"].to_numpy())


def test_an_unknown_question_is_one_line_naming_valid_ids(run_dir, capsys):
    from calib.cli import main
    from calib.pipeline import load_run

    with pytest.raises(SystemExit) as exit_:
        main(["inspect", str(run_dir), "--question", "no-such-question"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    first_id = str(load_run(run_dir).questions["question_id"].iloc[0])
    assert len(err.splitlines()) == 1 and "'no-such-question' is not in run" in err and first_id in err


def test_a_folder_that_is_not_a_run_is_a_calib_error(tmp_path):
    from calib.pipeline import load_run

    with pytest.raises(CalibError, match="not a finished calib run"):
        load_run(tmp_path)


def test_a_study_run_is_named_as_one_rather_than_read_as_the_main_job(tmp_path):
    import json

    from calib.pipeline import load_run

    (tmp_path / "manifest.json").write_text(json.dumps({"study": "scaling", "artifacts_dir": str(tmp_path)}))
    (tmp_path / "sweep_decoding.csv").write_text("T,ece\n")
    with pytest.raises(
        CalibError, match=r"is a scaling study run: read its CSV tables \(sweep_decoding.csv\)"
    ):
        load_run(tmp_path)


def test_a_sweep_folder_names_the_runs_inside_it(tmp_path):
    from calib.pipeline import load_run

    for name in ("0", "1"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    with pytest.raises(CalibError, match=r"not a finished calib run .*pass one of the runs inside it \(0, 1"):
        load_run(tmp_path)


def test_a_calibration_tuning_study_folder_reads_its_evaluation_run(run_dir, tmp_path, no_model):
    import json
    import shutil

    from calib.pipeline import load_run

    # what calib.tuning.study.run_study leaves: tuning.json beside the evaluation run eval/ (no manifest.json)
    study = tmp_path / "study"
    shutil.copytree(run_dir, study / "eval")
    (study / "tuning.json").write_text(json.dumps({"n": 16, "eval_run": str(study / "eval")}))
    direct, via_study = load_run(run_dir), load_run(study)
    pd.testing.assert_frame_equal(direct.questions, via_study.questions)
    pd.testing.assert_frame_equal(direct.estimates, via_study.estimates)
    assert via_study.notes[0].startswith("calibration-tuning study") and via_study.run_dir == study / "eval"
