"""Paired differences for `calib compare`: each run's metric minus the reference run's (the first run), per
estimator, on the same questions.

Two runs are paired over the questions both answered (matched by `question_id` in each run's results.parquet,
rows where either confidence is missing dropped). Each bootstrap resample draws the same questions for both runs,
so the question-sampling noise they share cancels and the interval of the difference is much narrower than two
separate intervals suggest; an interval excluding 0 is a difference these questions support. Each run keeps its own
grades (a temperature sweep changes the answers), so the pair is (confidence, correct) of one run against the
other's, not two confidences against one set of grades.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calib.pipeline.config import MetricsConfig
from calib.pipeline.evaluate import metric_functions

COLUMNS = ["label", "reference", "estimator", "metric", "n", "difference", "low", "high"]


def metrics_config(run: Path) -> MetricsConfig:
    """The reference run's metric settings (bins, resamples, alpha, seed) from its config.yaml, else the defaults."""
    path = run / "config.yaml"
    cfg = MetricsConfig()
    if path.is_file():
        from omegaconf import OmegaConf

        saved = (OmegaConf.to_container(OmegaConf.load(path)) or {}).get("metrics", {}) or {}
        for key in ("n_bins", "binning", "n_resamples", "alpha", "seed"):
            if key in saved:
                setattr(cfg, key, saved[key])
    return cfg


def _results(run: Path, group: str) -> pd.DataFrame | None:
    path = run / "results.parquet"
    if not path.is_file():
        return None
    table = pd.read_parquet(path, columns=["question_id", "open_ended", "estimator", "confidence", "correct"])
    if group == "closed":
        table = table[~table["open_ended"].astype(bool)]
    elif group == "open_ended":
        table = table[table["open_ended"].astype(bool)]
    return table


@functools.lru_cache(maxsize=32)
def _packed(fn: Callable) -> Callable:
    """fn on a [n, 2] array of (confidence, correct): lets paired_bootstrap resample two runs' own grades."""

    def metric(packed, _unused):
        return fn(packed[:, 0], packed[:, 1])

    return metric


def _undefined(fn: Callable, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the metric has no value on either run (e.g. AUROC when every answer has the same grade)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return not (math.isfinite(float(fn(a[:, 0], a[:, 1]))) and math.isfinite(float(fn(b[:, 0], b[:, 1]))))


def paired_differences(
    runs: Sequence[Path], labels: dict[Path, str], metrics: Sequence[str], group: str = "all"
) -> pd.DataFrame:
    """One row per (run other than the first, estimator, metric): the difference to the first run on the shared
    questions with its paired bootstrap interval. Empty when fewer than two runs have results.parquet."""
    from calib.metrics import paired_bootstrap

    if len(runs) < 2:
        return pd.DataFrame(columns=COLUMNS)
    reference = _results(runs[0], group)
    if reference is None:
        return pd.DataFrame(columns=COLUMNS)
    cfg = metrics_config(runs[0])
    cfg.names = list(metrics)
    fns = metric_functions(cfg)
    opts = dict(n_resamples=max(cfg.n_resamples, 2), alpha=cfg.alpha, seed=cfg.seed)
    rows = []
    for run in runs[1:]:
        other = _results(run, group)
        if other is None:
            continue
        for name in sorted(set(reference["estimator"]) & set(other["estimator"])):
            a = other[other["estimator"] == name].drop_duplicates("question_id")
            b = reference[reference["estimator"] == name].drop_duplicates("question_id")
            both = a.merge(b, on="question_id", suffixes=("_a", "_b"))
            both = both[np.isfinite(both["confidence_a"]) & np.isfinite(both["confidence_b"])]
            pair_a, pair_b = (both[[f"confidence_{s}", f"correct_{s}"]].to_numpy(np.float64) for s in "ab")
            for metric in metrics:
                row = {
                    "label": labels[run],
                    "reference": labels[runs[0]],
                    "estimator": name,
                    "metric": metric,
                }
                if len(both) < 2 or _undefined(fns[metric], pair_a, pair_b):
                    rows.append(
                        {**row, "n": len(both), "difference": math.nan, "low": math.nan, "high": math.nan}
                    )
                    continue
                d = paired_bootstrap(_packed(fns[metric]), pair_a, pair_b, np.zeros(len(both)), **opts)
                rows.append({**row, "n": len(both), "difference": d.point, "low": d.low, "high": d.high})
    return pd.DataFrame(rows, columns=COLUMNS)
