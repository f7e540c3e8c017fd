"""The evaluate and report stages on synthetic confidences, checked against sklearn and numpy."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from calib.pipeline.config import MetricsConfig
from calib.pipeline.evaluate import evaluate, wide_table
from calib.pipeline.report import markdown_table, order_estimators, results_table


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n = 120
    correct = (rng.uniform(size=n) < 0.45).astype(float)
    open_ended = np.arange(n) % 3 == 0
    good = np.clip(0.3 * correct + 0.7 * rng.uniform(size=n), 0, 1)  # informative, not perfect
    noise = rng.uniform(size=n)  # uninformative
    gappy = good.copy()
    gappy[:10] = np.nan  # ten unparsable answers
    confidences = {"noise": noise, "good": good, "gappy": gappy}
    cfg = MetricsConfig(names=["auroc", "auprc", "brier"], n_resamples=0, show=["auroc"])  # point values
    return correct, open_ended, confidences, evaluate(correct, open_ended, confidences, cfg, progress=False)


def value(table, group, estimator, metric):
    row = table[(table["group"] == group) & (table["estimator"] == estimator) & (table["metric"] == metric)]
    assert len(row) == 1
    return row.iloc[0]


def test_point_values_match_sklearn(data):
    correct, open_ended, confidences, table = data
    for name in ("noise", "good"):
        c = confidences[name]
        assert value(table, "all", name, "auroc")["value"] == pytest.approx(
            roc_auc_score(correct, c), abs=1e-5
        )
        assert value(table, "all", name, "auprc")["value"] == pytest.approx(
            average_precision_score(correct, c), abs=1e-5
        )
        assert value(table, "all", name, "brier")["value"] == pytest.approx(
            brier_score_loss(correct, c), abs=1e-5
        )
        closed = ~open_ended
        assert value(table, "closed", name, "auroc")["value"] == pytest.approx(
            roc_auc_score(correct[closed], c[closed]), abs=1e-5
        )
    assert (
        value(table, "all", "good", "auroc")["value"] > 0.7 > value(table, "all", "noise", "auroc")["value"]
    )


def test_missing_rows_are_left_out_and_groups_split(data):
    correct, _, confidences, table = data
    gappy = value(table, "all", "gappy", "auroc")
    assert (gappy["n"], gappy["n_missing"]) == (110, 10)
    assert gappy["value"] == pytest.approx(roc_auc_score(correct[10:], confidences["gappy"][10:]), abs=1e-5)
    assert set(table["group"]) == {"all", "closed", "open_ended"}
    assert value(table, "open_ended", "noise", "auroc")["n"] == 40
    assert table["low"].isna().all()  # n_resamples=0: no intervals


def test_bootstrap_intervals_bracket_the_point(data):
    correct, open_ended, confidences, _ = data
    cfg = MetricsConfig(names=["auroc", "brier"], n_resamples=200, groups=False, show=[])
    table = evaluate(correct, open_ended, {"good": confidences["good"]}, cfg, progress=False)
    for _, row in table.iterrows():
        assert row["low"] < row["value"] < row["high"] and row["high"] - row["low"] < 0.3


def test_undefined_metrics_are_nan_not_invented():
    cfg = MetricsConfig(names=["auroc", "brier"], n_resamples=20, show=[])
    table = evaluate(np.zeros(8), np.zeros(8, bool), {"x": np.linspace(0, 1, 8)}, cfg, progress=False)
    auroc = value(table, "all", "x", "auroc")
    assert math.isnan(auroc["value"]) and math.isnan(auroc["low"])
    assert value(table, "all", "x", "brier")["value"] == pytest.approx(np.mean(np.linspace(0, 1, 8) ** 2))
    assert set(table["group"]) == {"all"}  # no open-ended questions: no group split


def test_tables_order_and_join(data):
    correct, open_ended, confidences, table = data
    assert order_estimators(table, "auroc")[0] == "good"
    assert order_estimators(table, "brier")[-1] == "noise"
    wide = wide_table(table, ["auroc", "brier"])
    assert len(wide) == 3 * 3 and {"auroc_low", "brier_high", "n_missing"} <= set(wide.columns)
    md = markdown_table(table, "all", ["auroc", "brier"], ["good", "gappy", "noise"])
    lines = md.splitlines()
    assert lines[0].startswith("| estimator | n | AUROC ↑ | Brier ↓") and len(lines) == 5
    assert "(10 missing)" in lines[3]
    grades = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(len(correct))],
            "question": "?",
            "category": "c",
            "open_ended": open_ended,
            "answer": "a",
            "extracted": "a",
            "correct": correct,
            "score": correct,
        }
    )
    results = results_table(grades, {n: {"confidence": c, "raw": -c} for n, c in confidences.items()})
    assert len(results) == 3 * len(correct)
    np.testing.assert_array_equal(results.loc[results["estimator"] == "noise", "raw"], -confidences["noise"])


def test_every_metric_of_a_sample_size_is_one_program_reused_by_the_next_evaluation(data):
    """Groups of 120, 80 and 40 questions plus the gappy estimator's 110, 74 and 36: six sample sizes, six programs for
    the three metrics; evaluating again with an equal config builds none and gives the same table."""
    from calib.pipeline import programs

    correct, open_ended, confidences, _ = data
    programs.install()
    make = lambda: MetricsConfig(names=["auroc", "prr", "ece"], n_resamples=30, seed=4, show=[])  # noqa: E731
    before = programs.snapshot()
    first = evaluate(correct, open_ended, confidences, make(), progress=False)
    assert programs.snapshot().since(before).by_function.get("jit(run)", 0) <= 6
    before = programs.snapshot()
    again = evaluate(correct, open_ended, confidences, make(), progress=False)
    assert programs.snapshot().since(before).programs == 0
    pd.testing.assert_frame_equal(first, again)
    good = first[(first["estimator"] == "good") & (first["group"] == "all")].set_index("metric")["value"]
    assert good["auroc"] == pytest.approx(roc_auc_score(correct, confidences["good"]), abs=1e-6)
