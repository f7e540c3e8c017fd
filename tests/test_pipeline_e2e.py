"""End to end on tiny-llama and six questions: every output is written, every estimator is in the metrics table,
a second run generates nothing, and changing an estimator or a metric reruns only what depends on it."""

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calib.estimators import list_estimators
from calib.pipeline import RunConfig, run

METRIC_NAMES = ["auroc", "brier", "ece", "prr"]


def small_config(artifacts: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = "tiny-llama"
    cfg.task.limit = 6  # the mixed suite's shuffle gives closed and open-ended questions
    cfg.decoding.num_samples = 3
    cfg.decoding.max_new_tokens = 6
    cfg.decoding.shard_size = 3
    cfg.estimators.semantic = "exact"  # the embedding backend has its own tests; exact keeps this fast
    cfg.metrics.names = list(METRIC_NAMES)
    cfg.metrics.show = ["auroc", "brier"]
    cfg.metrics.n_resamples = 20
    cfg.report.formats = ["png"]
    cfg.artifacts_dir = str(artifacts)
    cfg.progress = False
    return cfg


def files(root: Path) -> dict[str, int]:
    """Every file under root with its modification time (ns)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = small_config(root / "artifacts")
    result = run(cfg, root / "run1", print_summary=False)
    return cfg, root, result


def test_every_output_is_written(first):
    _cfg, root, result = first
    run_dir = root / "run1"
    for name in ("results.parquet", "metrics.csv", "metrics.md", "report.md", "manifest.json"):
        assert (run_dir / name).stat().st_size > 0, name
    assert (run_dir / "figures" / "reliability.png").stat().st_size > 0
    assert (run_dir / "figures" / "risk_coverage.png").stat().st_size > 0
    assert result.report == run_dir / "report.md"
    report = result.report.read_text()
    for section in ("## Accuracy", "## Estimators", "## Figures", "## Provenance", "## Config", "tiny-llama"):
        assert section in report

    # Every registered estimator runs, except those that need revise passes (this run does not revise) or a
    # trained calibration-tuning artifact (none is given).
    skipped = result.manifest["summary"]["skipped_estimators"]
    assert all(why in ("needs passes", "needs trained") for why in skipped.values())
    assert {n for n, why in skipped.items() if why == "needs trained"} == {
        "calibration_tuned",
        "probe",
        "multi_hypothesis_tuned",
    }
    everything = set(list_estimators()) - set(skipped)
    assert {"msp", "p_true", "verbalized", "semantic_entropy", "sar", "multi_hypothesis"} <= everything
    results = pd.read_parquet(run_dir / "results.parquet")
    assert set(results["estimator"]) == everything
    assert len(results) == 6 * len(everything)
    assert {"question_id", "category", "open_ended", "correct", "confidence", "raw"} <= set(results.columns)

    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert set(metrics.loc[metrics["group"] == "all", "estimator"]) == everything
    assert set(metrics["group"]) == {"all", "closed", "open_ended"}
    for m in METRIC_NAMES:
        assert {m, f"{m}_low", f"{m}_high"} <= set(metrics.columns)
    md = (run_dir / "metrics.md").read_text()
    assert all(f"| {name} |" in md for name in everything)


def test_metrics_table_matches_an_independent_computation(first):
    """Brier and ECE recomputed with numpy from results.parquet equal the table (plumbing cross-check)."""
    _, root, _ = first
    results = pd.read_parquet(root / "run1" / "results.parquet")
    metrics = pd.read_csv(root / "run1" / "metrics.csv").set_index(["group", "estimator"])
    for name, part in results.groupby("estimator"):
        valid = part[np.isfinite(part["confidence"])]
        row = metrics.loc[("all", name)]
        assert row["n"] == len(valid) and row["n_missing"] == len(part) - len(valid)
        if valid.empty:
            assert math.isnan(row["brier"])
            continue
        c, y = valid["confidence"].to_numpy(), valid["correct"].to_numpy()
        assert row["brier"] == pytest.approx(np.mean((c - y) ** 2), abs=1e-5)
        bins = np.minimum((c * 15).astype(int), 14)  # 15 uniform bins, right edge in the last bin
        ece = sum(
            abs(c[bins == b].mean() - y[bins == b].mean()) * (bins == b).mean() for b in np.unique(bins)
        )
        assert row["ece"] == pytest.approx(ece, abs=1e-5)
        assert row["brier_low"] <= row["brier"] + 1e-9 or math.isnan(row["brier_low"])
        closed = valid[~valid["open_ended"]]
        assert metrics.loc[("closed", name), "n"] == len(closed)


def test_second_run_generates_nothing(first):
    cfg, root, result = first
    store = root / "artifacts"
    before = files(store)
    again = run(copy.deepcopy(cfg), root / "run2", print_summary=False)
    stages = again.manifest["stages"]
    assert stages["generate"]["cached"] and stages["generate"]["generated_shards"] == 0
    assert all(stages[s]["cached"] for s in ("grade", "estimate", "evaluate"))
    assert files(store) == before  # nothing written to, or rewritten in, the store
    pd.testing.assert_frame_equal(
        pd.read_parquet(root / "run1" / "results.parquet"), pd.read_parquet(root / "run2" / "results.parquet")
    )
    assert result.manifest["stages"]["generate"]["key"] == stages["generate"]["key"]


def test_changing_an_estimator_or_metric_reruns_only_later_stages(first):
    cfg, root, _ = first
    store = root / "artifacts"
    generated = {k: v for k, v in files(store).items() if k.startswith("generate/")}

    changed = copy.deepcopy(cfg)
    changed.estimators.params = {"p_true_brainstorm": {"brainstorm": 2}}
    changed.report.figures = False
    stages = run(changed, root / "run3", print_summary=False).manifest["stages"]
    assert stages["generate"]["cached"] and stages["grade"]["cached"]
    assert stages["estimate"]["computed"] == ["p_true_brainstorm"]
    assert not stages["evaluate"]["cached"]

    changed.metrics.n_bins = 10
    stages = run(changed, root / "run4", print_summary=False).manifest["stages"]
    assert stages["estimate"]["cached"] and stages["estimate"]["computed"] == []
    assert not stages["evaluate"]["cached"]
    assert {k: v for k, v in files(store).items() if k.startswith("generate/")} == generated
