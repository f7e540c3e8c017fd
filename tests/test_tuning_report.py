"""calib.tuning.report on fake calibration-tuning runs: the files `calib.tuning.study.run_study` leaves (tuning.json,
eval/ with manifest.json, config.yaml, results.parquet and metrics.csv), written by the test with the runner's own
writers from synthetic confidences (no model, no training). Values are checked against sklearn / numpy, the paired
differences against a numpy paired bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from tuning_runs import METRICS, write_fake_run

from calib.errors import CalibError
from calib.tuning import report


def _brier(conf, correct):
    return float(np.mean((conf - correct) ** 2))


@pytest.fixture
def runs(tmp_path):
    data = {}
    for method in ("lora", "probe"):
        for n, strength in ((100, 0.1), (1000, 0.5), (4000, 0.8)):
            data[(method, n)] = write_fake_run(tmp_path / "runs" / f"{method}_{n}", method, n, strength)
    return tmp_path / "runs", data


def test_table_values_come_from_the_runs_and_differences_are_paired(runs, tmp_path):
    root, data = runs
    table = report.gather([root])
    assert list(table.columns) == report.COLUMNS
    tuned = table[table["N"].notna()]
    assert sorted(set(zip(tuned["method"], tuned["N"].astype(int)))) == sorted(data)
    baselines = set(report.BASELINES) - {"multi_hypothesis"}  # these evaluations did not run multi-hypothesis
    assert set(table[table["N"].isna()]["method"]) == baselines
    assert len(table[table["N"].isna()]) == len(baselines) * len(METRICS)  # baselines once per evaluation
    for (method, n), d in data.items():
        rows = table[(table["method"] == method) & (table["N"] == n)].set_index("metric")
        conf, y = d[report.TUNED[method]], d["correct"]
        assert rows.loc["auroc", "value"] == pytest.approx(roc_auc_score(y, conf), abs=1e-5)
        assert rows.loc["brier", "value"] == pytest.approx(_brier(conf, y), abs=1e-5)
        assert rows.loc["auroc", "low"] <= rows.loc["auroc", "value"] <= rows.loc["auroc", "high"]
        expected = roc_auc_score(y, conf) - roc_auc_score(y, d["p_true"])
        assert rows.loc["auroc", "diff_p_true"] == pytest.approx(expected, abs=1e-5)
        # the paired interval against a numpy paired bootstrap (same questions on both sides of each resample)
        rng = np.random.default_rng(7)
        idx = rng.integers(0, len(y), size=(2000, len(y)))
        diffs = np.mean((conf[idx] - y[idx]) ** 2, axis=1) - np.mean((d["p_true"][idx] - y[idx]) ** 2, axis=1)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        assert rows.loc["brier", "diff_low"] == pytest.approx(lo, abs=0.01)
        assert rows.loc["brier", "diff_high"] == pytest.approx(hi, abs=0.01)
        # and against MSP, the strongest baseline
        expected = roc_auc_score(y, conf) - roc_auc_score(y, d["msp"])
        assert rows.loc["auroc", "diff_msp"] == pytest.approx(expected, abs=1e-5)
        assert rows.loc["auroc", "msp_low"] <= rows.loc["auroc", "diff_msp"] <= rows.loc["auroc", "msp_high"]
    assert table[table["method"].isin(["msp", "p_true"])]["diff_msp"].isna().all()
    p_true = table[table["method"] == "p_true"]
    assert p_true["diff_p_true"].isna().all()  # the reference has no difference to itself
    # the strongest tuned run beats untuned P(True) on AUROC with an interval excluding 0
    best = table[(table["method"] == "lora") & (table["N"] == 4000) & (table["metric"] == "auroc")].iloc[0]
    assert best["diff_low"] > 0


def test_cli_writes_table_markdown_and_figures(runs, tmp_path, capsys):
    from calib.cli import main

    root, _ = runs
    main(["tuning-report", str(root), "--out", str(tmp_path / "out"), "--metric", "auroc", "--metric", "ece"])
    printed = capsys.readouterr().out
    assert "| lora | 4000 | auroc |" in printed
    csv = pd.read_csv(tmp_path / "out" / "tuning_report.csv")
    assert set(csv["metric"]) == {"auroc", "ece"}
    for ext in ("png", "pdf"):
        path = tmp_path / "out" / f"tuning_vs_labels.{ext}"
        assert path.is_file() and path.stat().st_size > 1000


def test_multi_hypothesis_with_the_tuned_judge_beside_the_untuned_one(tmp_path):
    d = write_fake_run(tmp_path / "runs" / "lora_1000", "lora", 1000, 0.6, judged=True)
    table = report.gather([tmp_path / "runs"], ["auroc"])
    judged = table[table["method"] == "multi_hypothesis, lora judge"].iloc[0]
    assert judged["N"] == 1000
    assert judged["value"] == pytest.approx(roc_auc_score(d["correct"], d[report.JUDGED]), abs=1e-5)
    untuned = table[table["method"] == "multi_hypothesis"].iloc[0]
    assert pd.isna(untuned["N"])
    assert untuned["value"] == pytest.approx(roc_auc_score(d["correct"], d["multi_hypothesis"]), abs=1e-5)
    # the judge's own effect: tuned minus untuned judge on the same questions, and only on the judged row
    expected = roc_auc_score(d["correct"], d[report.JUDGED]) - roc_auc_score(
        d["correct"], d["multi_hypothesis"]
    )
    assert judged["diff_untuned_judge"] == pytest.approx(expected, abs=1e-5)
    assert judged["judge_low"] <= judged["diff_untuned_judge"] <= judged["judge_high"]
    assert table[table["method"] != "multi_hypothesis, lora judge"]["diff_untuned_judge"].isna().all()
    assert "| lora judge | 1000 | auroc | " in report.markdown(table).split("tuned judge − untuned judge")[1]
    assert report.plot(table, tmp_path / "fig", ["png"])[0].stat().st_size > 1000


def test_cost_table_reads_each_artifact_once(runs, tmp_path, capsys):
    from calib.cli import main

    root, _ = runs
    cost = report.costs([root])
    assert list(zip(cost["method"], cost["N"])) == [
        (m, n) for m in ("lora", "probe") for n in (100, 1000, 4000)
    ]
    assert cost["train_seconds"].tolist() == [6.0 * n for n in (100, 1000, 4000)] * 2
    assert cost.loc[cost["method"] == "lora", "steps"].tolist() == [12, 125, 500]
    main(["tuning-report", str(root), "--out", str(tmp_path / "out"), "--metric", "auroc"])
    printed = capsys.readouterr().out
    assert "| lora | 1000 | 100.0 min | 125 | 3.00 GiB | 0.400 |" in printed
    assert "| probe | 4000 | 400.0 min |  |  | 0.400 |" in printed
    assert pd.read_csv(tmp_path / "out" / "tuning_cost.csv").shape[0] == 6


def test_figure_has_one_line_per_method_labelled_ticks_and_baseline_bands(runs, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    root, _ = runs
    table = report.gather([root], ["auroc"])
    seen = {}
    original = Figure.savefig

    def spy(self, *args, **kwargs):
        seen["fig"] = self
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    report.plot(table, tmp_path / "fig", ["png"])
    ax = seen["fig"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "1000", "4000"]
    labels = ax.get_legend_handles_labels()[1]
    assert {"lora (tuned)", "probe (tuned)"} <= set(labels)
    present = [b for b in report.BASELINES if b != "multi_hypothesis"]  # the fake evaluations ran these
    assert {f"{b} (untuned)" for b in present} <= set(labels)
    assert len(ax.patches) >= len(present)  # one interval band per baseline


def test_refusals_are_one_line(tmp_path):
    write_fake_run(tmp_path / "a", "lora", 100, 0.2)
    write_fake_run(tmp_path / "b", "lora", 100, 0.3)
    with pytest.raises(CalibError, match="both lora with N=100 on closed; pass one of them"):
        report.gather([tmp_path / "a", tmp_path / "b"])
    write_fake_run(tmp_path / "c", "lora", 200, 0.3, eval_limit=50)
    with pytest.raises(CalibError, match="evaluate closed questions differently"):
        report.gather([tmp_path / "a", tmp_path / "c"])
    with pytest.raises(CalibError, match="no calibration-tuning runs"):
        report.gather([tmp_path / "a" / "eval"])
    (tmp_path / "a" / "eval" / "metrics.csv").unlink()
    with pytest.raises(CalibError, match=r"lacks metrics\.csv"):
        report.gather([tmp_path / "a"])
