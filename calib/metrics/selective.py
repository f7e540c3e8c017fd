"""Discrimination and selective prediction: AUROC, AUPRC, PRR, AURC/AUARC, selective accuracy, Spearman.

Convention: higher confidence = more likely correct; the positive class of AUROC/AUPRC is "correct".
Ties in confidence are averaged over (AUROC counts a tied pair as 1/2, as sklearn; the selective metrics use the
expected quality over a random order inside a tie group), so every value is independent of the row order.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from calib.metrics import validate
from calib.metrics._ranking import (
    average_ranks,
    exclusive_cumsum,
    group_start,
    sort_unit,
    topk_expected_sums,
    unit_keys,
)


def _sorted_labels(c: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Ascending sort of (confidence, label) in one int32 sort: the label rides in the lowest key bit."""
    packed = jnp.sort(unit_keys(c) * 2 + (y > 0.5).astype(jnp.int32))
    return packed >> 1, (packed & 1).astype(jnp.float32)


@jax.jit
def auroc_core(c: jax.Array, y: jax.Array) -> jax.Array:
    """Mann-Whitney AUROC: P(c_pos > c_neg) + P(tie)/2; NaN when a class is absent."""
    keys, lab = _sorted_labels(c, y)
    start = group_start(keys)
    cneg = exclusive_cumsum(1 - lab)[:-1]  # negatives before each sorted position
    # Inside a tie group negatives sort before positives, so a positive at i sees cneg[start] negatives below
    # and cneg[i] - cneg[start] tied ones.
    wins = lab * 0.5 * (cneg + cneg[start])
    pos = jnp.sum(lab)
    neg = lab.shape[0] - pos
    return jnp.where(
        (pos > 0) & (neg > 0), jnp.sum(wins / jnp.maximum(neg, 1)) / jnp.maximum(pos, 1), jnp.nan
    )


@jax.jit
def auprc_core(c: jax.Array, y: jax.Array) -> jax.Array:
    """Average precision (sklearn's step-wise sum over thresholds): mean over positives of precision at c_i."""
    keys, lab = _sorted_labels(c, y)
    n = lab.shape[0]
    start = group_start(keys)
    cpos = exclusive_cumsum(lab)
    pos = cpos[-1]
    precision = (pos - cpos[start]) / (n - start).astype(jnp.float32)
    return jnp.where(pos > 0, jnp.sum(lab * precision) / jnp.maximum(pos, 1), jnp.nan)


@jax.jit
def _mean_quality_curve(c: jax.Array, q: jax.Array) -> jax.Array:
    """Expected mean quality of the k most confident rows, k = 1..n."""
    n = c.shape[0]
    return topk_expected_sums(c, q) / jnp.arange(1, n + 1, dtype=jnp.float32)


@partial(jax.jit, static_argnames=("max_rejection",))
def prr_core(c: jax.Array, q: jax.Array, max_rejection: float) -> jax.Array:
    """Prediction-rejection ratio (Malinin et al. 2017; LM-Polygraph's normalised PredictionRejectionArea)."""
    n = c.shape[0]
    n_rej = int(max_rejection * n)
    lo, hi = jnp.min(q), jnp.max(q)
    qn = (q - lo) / jnp.where(hi > lo, hi - lo, 1.0)
    # Rejecting r = 0..n_rej-1 rows keeps the k = n..n-n_rej+1 most confident (LM-Polygraph's convention).
    keep = slice(n - n_rej, n)
    model = jnp.mean(_mean_quality_curve(c, qn)[keep])
    oracle_sorted = sort_unit(qn)[::-1]
    oracle = jnp.mean((jnp.cumsum(oracle_sorted) / jnp.arange(1, n + 1, dtype=jnp.float32))[keep])
    random = jnp.mean(
        qn
    )  # the exact expectation over random orders: every kept subset has mean quality mean(q)
    ok = (hi > lo) & (n_rej > 0)
    return jnp.where(ok, (model - random) / jnp.where(ok, oracle - random, 1.0), jnp.nan)


@jax.jit
def auarc_core(c: jax.Array, q: jax.Array) -> jax.Array:
    """Area under the accuracy-rejection (accuracy-coverage) curve: mean over k of top-k mean quality."""
    return jnp.mean(_mean_quality_curve(c, q))


@jax.jit
def aurc_core(c: jax.Array, q: jax.Array) -> jax.Array:
    """Area under the risk-coverage curve: mean over k = 1..n of the risk 1 - quality of the top-k."""
    return 1 - auarc_core(c, q)


@partial(jax.jit, static_argnames=("k",))
def selective_accuracy_core(c: jax.Array, q: jax.Array, k: int) -> jax.Array:
    """Expected mean quality of the k most confident rows."""
    return topk_expected_sums(c, q)[k - 1] / k


@jax.jit
def spearman_core(c: jax.Array, q: jax.Array) -> jax.Array:
    """Pearson correlation of average ranks; NaN when either side is constant."""
    rc, rq = average_ranks(c), average_ranks(q)
    rc, rq = rc - jnp.mean(rc), rq - jnp.mean(rq)
    den = jnp.sqrt(jnp.sum(rc**2)) * jnp.sqrt(jnp.sum(rq**2))
    return jnp.where(den > 0, jnp.sum(rc * rq) / jnp.where(den > 0, den, 1.0), jnp.nan)


# Why a metric is NaN on the full data (the warning calling it gives; bootstrap_metrics gives the same).
UNDEFINED = {
    "auroc": "correct has a single class, so AUROC is undefined",
    "auprc": "correct has no positive (correct) row, so AUPRC is undefined",
    "prr": "quality is constant (or max_rejection * n < 1), so oracle and random coincide",
    "spearman": "confidence or quality is constant, so the rank correlation is undefined",
}


def _warn_nan(value: float, metric: str) -> float:
    if math.isnan(value):
        warnings.warn(f"{metric}: {UNDEFINED[metric]}; returning NaN", RuntimeWarning, stacklevel=3)
    return value


def _run(core: Any, confidence: Any, second: Any, soft: bool, name: str, **static: Any) -> Any:
    """Call a core on traced inputs directly, or validate concrete ones and return a float."""
    if validate.is_traced(confidence, second):
        return core(jnp.asarray(confidence, jnp.float32), jnp.asarray(second, jnp.float32), **static)
    c, y = validate.pair(confidence, second, soft=soft, second=name)
    return float(core(jnp.asarray(c), jnp.asarray(y), **static))


def auroc(confidence: Any, correct: Any) -> float:
    """Area under the ROC curve of confidence separating correct from wrong (equals sklearn's roc_auc_score).

    Labels of a single class make it undefined: NaN with a RuntimeWarning.
    """
    out = _run(auroc_core, confidence, correct, False, "correct")
    if isinstance(out, float):
        _warn_nan(out, "auroc")
    return out


def auprc(confidence: Any, correct: Any) -> float:
    """Area under the precision-recall curve for "correct" as the positive class (sklearn's average_precision_score).

    No correct answers make it undefined: NaN with a RuntimeWarning.
    """
    out = _run(auprc_core, confidence, correct, False, "correct")
    if isinstance(out, float):
        _warn_nan(out, "auprc")
    return out


def prr(confidence: Any, quality: Any, max_rejection: float = 1.0) -> float:
    """Prediction-rejection ratio: (AUC_model - AUC_random) / (AUC_oracle - AUC_random), 1 = oracle, 0 = random.

    quality in [0, 1] (correctness or a soft score) is min-max normalised first, as LM-Polygraph does. The AUC
    averages the mean quality of the kept rows over rejecting 0 .. int(max_rejection * n) - 1 of the least
    confident rows; use max_rejection=0.5 for PRR@50. AUC_random is its exact expectation, mean(quality).
    Constant quality makes PRR undefined: NaN with a warning.
    """
    rho = validate.fraction(max_rejection, "max_rejection")
    out = _run(prr_core, confidence, quality, True, "quality", max_rejection=rho)
    if isinstance(out, float):
        _warn_nan(out, "prr")
    return out


def aurc(confidence: Any, correct: Any) -> float:
    """Area under the risk-coverage curve (lower is better): mean over k = 1..n of 1 - accuracy of the top-k.

    `correct` may be a soft quality in [0, 1]; equals LM-Polygraph's rcc-auc for 0/1 correctness.
    """
    return _run(aurc_core, confidence, correct, True, "correct")


def auarc(confidence: Any, correct: Any) -> float:
    """Area under the accuracy-rejection curve (higher is better): 1 - aurc."""
    return _run(auarc_core, confidence, correct, True, "correct")


def selective_accuracy(confidence: Any, correct: Any, coverage: float = 0.1) -> float:
    """Accuracy of the ceil(coverage * n) most confident rows (HELM's selective_acc@10 at coverage=0.1).

    HELM (via uncertainty-calibration's get_selective_stats) keeps int(coverage * n) + 1 rows instead.
    """
    cov = validate.fraction(coverage, "coverage")
    traced = validate.is_traced(confidence, correct)
    if traced:
        c, y = jnp.asarray(confidence, jnp.float32), jnp.asarray(correct, jnp.float32)
    else:
        c, y = validate.pair(confidence, correct, soft=True)
    n = c.shape[0]
    k = max(1, min(n, math.ceil(cov * n - 1e-9)))
    out = selective_accuracy_core(jnp.asarray(c), jnp.asarray(y), k=k)
    return out if traced else float(out)


def spearman(confidence: Any, quality: Any) -> float:
    """Spearman rank correlation of confidence with quality (average ranks for ties, as scipy.stats.spearmanr).

    quality may be any finite numbers. Constant input makes it undefined: NaN with a warning.
    """
    if validate.is_traced(confidence, quality):
        return spearman_core(jnp.asarray(confidence, jnp.float32), jnp.asarray(quality, jnp.float32))
    c = validate.unit_interval(confidence, "confidence")
    q = validate.finite_vector(quality, "quality")
    validate.same_length(("confidence", c), ("quality", q))
    out = float(spearman_core(jnp.asarray(c), jnp.asarray(q, jnp.float32)))
    return _warn_nan(out, "spearman")
