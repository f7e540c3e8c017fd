"""The evaluate stage: every estimator against every metric, with percentile-bootstrap intervals over questions.

Rows with a missing confidence (NaN, e.g. an unparsable verbalized answer) are left out of that estimator's
metrics and counted in `n_missing`. Metrics that are undefined on the data (AUROC when every answer is wrong) are
NaN, never a made-up number. With `groups`, closed and open-ended questions are also evaluated on their own.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from calib.pipeline.config import MetricsConfig
from calib.progress import progress_bar

log = logging.getLogger("calib")

CODE_MODULES = ("calib.metrics", "calib.pipeline.evaluate")  # what the evaluate key's code fingerprint covers


@dataclass(frozen=True)
class MetricInfo:
    label: str
    higher_is_better: bool
    binned: bool = False  # takes n_bins / binning


# name -> how to show it and which way is better; the functions come from calib.metrics
METRICS: dict[str, MetricInfo] = {
    "auroc": MetricInfo("AUROC", True),
    "auprc": MetricInfo("AUPRC", True),
    "prr": MetricInfo("PRR", True),
    "aurc": MetricInfo("AURC", False),
    "auarc": MetricInfo("AUARC", True),
    "selective_accuracy": MetricInfo("Acc@10%", True),
    "spearman": MetricInfo("Spearman", True),
    "ece": MetricInfo("ECE", False, binned=True),
    "mce": MetricInfo("MCE", False, binned=True),
    "rmsce": MetricInfo("RMSCE", False, binned=True),
    "ace": MetricInfo("ACE", False),
    "smece": MetricInfo("smECE", False),
    "brier": MetricInfo("Brier", False),
    "nll": MetricInfo("NLL", False),
}


def metric_functions(cfg: MetricsConfig) -> dict[str, Callable]:
    """One callable per metric, built once per settings so the bootstrap's compiled program is reused across
    estimators and across evaluate() calls (a study evaluates many runs)."""
    return dict(_metric_functions(tuple(cfg.names), cfg.n_bins, cfg.binning))


@functools.lru_cache(maxsize=8)
def _metric_functions(names: tuple[str, ...], n_bins: int, binning: str) -> tuple[tuple[str, Callable], ...]:
    from calib import metrics

    out = {}
    for name in names:
        fn = getattr(metrics, name)
        if name == "ace":
            fn = functools.partial(fn, n_bins=n_bins)
        elif METRICS[name].binned:
            fn = functools.partial(fn, n_bins=n_bins, binning=binning)
        out[name] = fn
    return tuple(out.items())


def evaluation_groups(open_ended: np.ndarray, by_kind: bool) -> dict[str, np.ndarray]:
    groups = {"all": np.ones(len(open_ended), dtype=bool)}
    if by_kind and open_ended.any() and (~open_ended).any():
        groups["closed"] = ~open_ended
        groups["open_ended"] = open_ended.copy()
    return groups


def evaluate(
    correct: np.ndarray,
    open_ended: np.ndarray,
    confidences: dict[str, np.ndarray],
    cfg: MetricsConfig,
    progress: bool = True,
) -> pd.DataFrame:
    """Long table: group, estimator, metric, value, low, high, n, n_missing."""
    from calib.metrics import bootstrap_metrics

    nan = float("nan")
    fns = metric_functions(cfg)
    correct = np.asarray(correct, dtype=np.float64)
    rows, notes = [], {}
    groups = evaluation_groups(np.asarray(open_ended, dtype=bool), cfg.groups)
    for estimator in progress_bar(list(confidences), "evaluate", enabled=progress, unit="estimator"):
        conf = np.asarray(confidences[estimator], dtype=np.float64)
        for group, mask in groups.items():
            valid = mask & ~np.isnan(conf)
            c, y = conf[valid], correct[valid]
            results = {}
            if c.size:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    if cfg.n_resamples >= 2 and c.size >= 2:
                        # every metric in one compiled program per sample size (bootstrap_ci's resamples)
                        results = bootstrap_metrics(
                            fns, c, y, n_resamples=cfg.n_resamples, alpha=cfg.alpha, seed=cfg.seed
                        )
                    else:
                        results = {name: (float(fn(c, y)), nan, nan) for name, fn in fns.items()}
                for w in caught:
                    notes.setdefault(str(w.message).split(";")[0], set()).add(estimator)
            for name in fns:
                value, low, high = results.get(name, (nan, nan, nan))
                rows.append(
                    {
                        "group": group,
                        "estimator": estimator,
                        "metric": name,
                        "value": float(value),
                        "low": float(low),
                        "high": float(high),
                        "n": int(valid.sum()),
                        "n_missing": int((mask & np.isnan(conf)).sum()),
                    }
                )
    for message, names in notes.items():
        log.warning("%s (%d estimators)", message, len(names))
    return pd.DataFrame(rows)


def metrics_inputs(cfg: MetricsConfig) -> dict:
    """The metric settings that change the numbers (what is printed does not)."""
    values = asdict(cfg)
    values.pop("show", None)
    return values


def wide_table(long: pd.DataFrame, metric_order: list[str]) -> pd.DataFrame:
    """group, estimator, n, n_missing, then <metric>, <metric>_low, <metric>_high for each metric."""
    out = None
    for name in metric_order:
        part = long[long["metric"] == name][["group", "estimator", "n", "n_missing", "value", "low", "high"]]
        part = part.rename(columns={"value": name, "low": f"{name}_low", "high": f"{name}_high"})
        out = (
            part if out is None else out.merge(part, on=["group", "estimator", "n", "n_missing"], how="outer")
        )
    return out.reset_index(drop=True)
