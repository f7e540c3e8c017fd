"""The scaling study's tables: metrics per grid point, accuracy and compute, paired differences against R = 0,
answer transitions between passes, and adaptive revision. Every interval resamples questions (percentile
bootstrap, calib.metrics.bootstrap_ci); paired differences resample the same questions for both sides."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import pandas as pd

from calib.decode.revise import Revision
from calib.pipeline.config import MetricsConfig, ScalingStudyConfig

FAMILIES = {
    "token_level": "token-level",
    "reflexive": "reflexive",
    "consistency": "consistency",
    "semantic_entropy": "semantic",
    "kle": "semantic",
    "sar": "semantic",
    "graph": "graph",
    "multi_hypothesis": "multi-hypothesis",
    "revision": "revision",
}


def family_of(name: str) -> str:
    """The estimator family (from the module that defines it); plugins are 'other'."""
    from calib.estimators import get_estimator

    module = type(get_estimator(name)).__module__
    return FAMILIES.get(module.rsplit(".", 1)[-1], "other") if module.startswith("calib.") else "other"


def _mean_correct(confidence, correct):
    return jnp.mean(jnp.asarray(correct, jnp.float32))


def _interval(fn: Callable, c: np.ndarray, y: np.ndarray, m: MetricsConfig) -> tuple[float, float, float]:
    from calib.metrics import bootstrap_ci

    if m.n_resamples >= 2 and len(y) >= 2:
        return tuple(bootstrap_ci(fn, c, y, n_resamples=m.n_resamples, alpha=m.alpha, seed=m.seed))
    return float(fn(c, y)), float("nan"), float("nan")


def evaluate_points(
    confidences: dict, correct: np.ndarray, open_ended: np.ndarray, m: MetricsConfig, progress: bool = False
) -> pd.DataFrame:
    """The runner's evaluate stage at every (K, R): long table with K and R columns."""
    from calib.pipeline.evaluate import evaluate

    frames = []
    for (k, r), conf in confidences.items():
        table = evaluate(correct[r], open_ended, conf, m, progress=False)
        frames.append(table.assign(K=k, R=r))
    cols = ["K", "R", "group", "estimator", "metric", "value", "low", "high", "n", "n_missing"]
    return pd.concat(frames, ignore_index=True)[cols]


def accuracy_table(
    rv: Revision,
    correct: np.ndarray,
    votes: dict,
    g: ScalingStudyConfig,
    m: MetricsConfig,
    flops_per_token: int,
) -> pd.DataFrame:
    """Per (K, R): greedy-answer accuracy and majority-vote accuracy with intervals, and the compute spent."""
    rows = []
    for r in range(g.passes + 1):
        for k in g.samples:
            acc = _interval(_mean_correct, correct[r], correct[r], m)
            vote = _interval(_mean_correct, votes[(k, r)], votes[(k, r)], m)
            tokens = rv.tokens(k, r)
            rows.append(
                {
                    "K": k,
                    "R": r,
                    "accuracy": acc[0],
                    "accuracy_low": acc[1],
                    "accuracy_high": acc[2],
                    "vote_accuracy": vote[0],
                    "vote_accuracy_low": vote[1],
                    "vote_accuracy_high": vote[2],
                    "generated_tokens": float(tokens["generated"].mean()),
                    "processed_tokens": float(tokens["processed"].mean()),
                    "flops": float(tokens["processed"].mean()) * flops_per_token,
                    "total_generated_tokens": int(tokens["generated"].sum()),
                    "total_flops": float(tokens["processed"].sum()) * flops_per_token,
                }
            )
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=64)
def _paired(fn: Callable) -> Callable:
    """metric(column 1) - metric(column 0) of [n, 2] confidences and labels (one compiled bootstrap per metric)."""

    def diff(c, y):
        return fn(c[:, 1], y[:, 1]) - fn(c[:, 0], y[:, 0])

    return diff


def paired_differences(
    confidences: dict, correct: np.ndarray, g: ScalingStudyConfig, m: MetricsConfig
) -> pd.DataFrame:
    """For every K and R >= 1: accuracy and each estimator's metrics at R minus at R = 0, with a paired interval
    (questions where either confidence is missing are left out of that row)."""
    from calib.pipeline.evaluate import metric_functions

    fns = metric_functions(m)
    rows = []
    for r in range(1, g.passes + 1):
        y = np.stack([correct[0], correct[r]], axis=1)
        point, low, high = _interval(_paired(_mean_correct), y, y, m)
        rows.append(
            {
                "K": 0,
                "R": r,
                "estimator": "accuracy",
                "metric": "accuracy",
                "value": point,
                "low": low,
                "high": high,
                "n": len(y),
            }
        )
        for k in g.samples:
            before, after = confidences[(k, 0)], confidences[(k, r)]
            for name in [n for n in after if n in before]:
                c = np.stack([before[name], after[name]], axis=1)
                ok = ~np.isnan(c).any(axis=1)
                for metric, fn in fns.items():
                    value = low = high = float("nan")
                    if ok.sum() >= 2:
                        value, low, high = _interval(_paired(fn), c[ok], y[ok], m)
                    rows.append(
                        {
                            "K": k,
                            "R": r,
                            "estimator": name,
                            "metric": metric,
                            "value": value,
                            "low": low,
                            "high": high,
                            "n": int(ok.sum()),
                        }
                    )
    return pd.DataFrame(rows)


def transition_table(grades: list[pd.DataFrame]) -> pd.DataFrame:
    """Between passes a < b: answers revision fixed (wrong -> right), broke (right -> wrong) or left alone."""
    from calib.tasks.normalize import normalize_answer

    rows = []
    pairs = [(a, a + 1) for a in range(len(grades) - 1)] + ([(0, len(grades) - 1)] if len(grades) > 2 else [])
    for a, b in pairs:
        ya, yb = grades[a]["correct"].to_numpy() > 0.5, grades[b]["correct"].to_numpy() > 0.5
        ea = grades[a]["extracted"].map(normalize_answer).to_numpy()
        eb = grades[b]["extracted"].map(normalize_answer).to_numpy()
        rows.append(
            {
                "from": a,
                "to": b,
                "fixed": int((~ya & yb).sum()),
                "broke": int((ya & ~yb).sum()),
                "kept_correct": int((ya & yb).sum()),
                "kept_wrong": int((~ya & ~yb).sum()),
                "changed": int((ea != eb).sum()),
                "n": len(ya),
            }
        )
    return pd.DataFrame(rows)


def adaptive_table(
    rv: Revision,
    confidences: dict,
    correct: np.ndarray,
    g: ScalingStudyConfig,
    m: MetricsConfig,
    flops_per_token: int,
) -> pd.DataFrame:
    """Revise only the least confident share f of questions (by a gate estimator's pass-0 confidence; missing
    counts as least confident): accuracy, the gate's ECE/AUROC on the mixed answers, and compute against
    revising everything. Exact for a real gated run, since rows decode independently (tests/test_revise.py)."""
    from calib.metrics import auroc, ece

    R = g.passes
    rows = []
    if R == 0:
        return pd.DataFrame(rows)
    n = correct.shape[1]
    for gate in g.gates:
        for k in dict.fromkeys((g.samples[0], g.samples[-1])):
            if gate not in confidences[(k, 0)] or gate not in confidences[(k, R)]:
                continue
            c0, cr = confidences[(k, 0)][gate], confidences[(k, R)][gate]
            order = np.argsort(np.nan_to_num(c0, nan=-np.inf), kind="stable")
            base = rv.tokens(k, 0)["processed"].astype(float)
            extra = rv.tokens(k, R)["processed"] - base
            acc_none, acc_all = correct[0].mean(), correct[R].mean()
            for f in g.fractions:
                count = round(f * n)
                mask = np.zeros(n, bool)
                mask[order[:count]] = True
                y = np.where(mask, correct[R], correct[0])
                c = np.where(mask, cr, c0)
                acc = _interval(_mean_correct, y, y, m)
                ok = ~np.isnan(c)
                gain = acc_all - acc_none
                rows.append(
                    {
                        "gate": gate,
                        "K": k,
                        "fraction": f,
                        "revised": count,
                        "threshold": float(c0[order[count]]) if count < n else float("inf"),
                        "accuracy": acc[0],
                        "accuracy_low": acc[1],
                        "accuracy_high": acc[2],
                        "accuracy_kept": float((acc[0] - acc_none) / gain) + 0.0 if gain else float("nan"),
                        "processed_tokens": float((base + mask * extra).mean()),
                        "flops": float((base + mask * extra).mean()) * flops_per_token,
                        "compute_saved": float(1 - extra[mask].sum() / extra.sum()) if extra.sum() else 0.0,
                        "gate_ece": float(ece(c[ok], y[ok], n_bins=m.n_bins, binning=m.binning))
                        if ok.sum()
                        else float("nan"),
                        "gate_auroc": float(auroc(c[ok], y[ok]))
                        if 0 < y[ok].sum() < ok.sum()
                        else float("nan"),
                    }
                )
    return pd.DataFrame(rows)


def confidence_frame(confidences: dict, correct: np.ndarray, examples) -> pd.DataFrame:
    """Every confidence of every estimator at every point, one row per question."""
    ids = [ex.id for ex in examples]
    frames = [
        pd.DataFrame(
            {"K": k, "R": r, "estimator": name, "question_id": ids, "confidence": conf, "correct": correct[r]}
        )
        for (k, r), by_name in confidences.items()
        for name, conf in by_name.items()
    ]
    return pd.concat(frames, ignore_index=True)
