"""Binned calibration errors of a confidence score: ECE (l1), RMSCE (l2), MCE (max), bin-averaged CE, debiased l2.

Bin conventions (docs/metrics.md):
- "uniform": M equal-width bins with float32 edges e_k = float32(k / M); bin b holds e_b <= c < e_{b+1}, the last
  bin also holds c = 1. A confidence equal to an edge goes to the bin above it, so 0.3 with M = 10 is in bin 3.
  (torchmetrics puts c = 1.0 in an extra bin of its own; uncertainty-calibration uses (a, b] bins.)
- "quantile" (equal mass): the sorted confidences are split into M groups of sizes as numpy.array_split gives;
  edges are midpoints between neighbouring groups and c lands in the first bin whose upper edge is >= c. With no
  ties this is exactly the rank split; tied values never straddle two bins. This is uncertainty-calibration's
  get_equal_bins, the scheme HELM's ece_10_bin uses.
Empty bins contribute nothing. With n < M quantile bins, M is reduced to n (as uncertainty-calibration does).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calib.metrics import validate
from calib.metrics._ranking import sort_unit

BINNINGS = ("uniform", "quantile")
NORMS = ("l1", "l2", "max")


def uniform_edges(n_bins: int) -> np.ndarray:
    """The M + 1 float32 edges float32(k / M) of the equal-width bins."""
    return (np.arange(n_bins + 1, dtype=np.float64) / n_bins).astype(np.float32)


def uniform_bin_index(c: jax.Array, n_bins: int) -> jax.Array:
    """Bin of each confidence under the [e_b, e_{b+1}) convention (1.0 in the last bin); O(n) for any M."""
    edges = jnp.asarray(uniform_edges(n_bins))
    b = jnp.clip(jnp.floor(c * n_bins).astype(jnp.int32), 0, n_bins - 1)
    # c * M can round across an edge; one step either way restores the exact comparison with the float32 edges.
    b = jnp.where(c < edges[b], b - 1, b)
    b = jnp.where((b < n_bins - 1) & (c >= edges[jnp.minimum(b + 1, n_bins)]), b + 1, b)
    return jnp.clip(b, 0, n_bins - 1)


def quantile_edges(c: jax.Array, n_bins: int) -> jax.Array:
    """The min(M, n) - 1 inner edges of equal-mass bins: midpoints between array_split groups of sorted c."""
    n = c.shape[0]
    m = min(n_bins, n)
    sizes = np.full(m, n // m)
    sizes[: n % m] += 1
    starts = np.cumsum(sizes)[:-1]
    s = sort_unit(c)
    return (s[starts - 1] + s[starts]) / 2


def quantile_bin_index(c: jax.Array, n_bins: int) -> jax.Array:
    """Bin of each confidence for equal-mass bins; a value equal to an edge goes to the lower bin."""
    edges = quantile_edges(c, n_bins)
    if edges.shape[0] == 0:
        return jnp.zeros(c.shape, jnp.int32)
    return jnp.searchsorted(edges, c, side="left", method="compare_all").astype(jnp.int32)


def bin_index(c: jax.Array, n_bins: int, binning: str) -> jax.Array:
    """Bin of each confidence under the named binning."""
    return uniform_bin_index(c, n_bins) if binning == "uniform" else quantile_bin_index(c, n_bins)


def bin_sums(c: jax.Array, y: jax.Array, n_bins: int, binning: str) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin (count, sum of confidence - correctness, sum of correctness), each [M]."""
    idx = bin_index(c, n_bins, binning)
    count = jax.ops.segment_sum(jnp.ones_like(c), idx, n_bins)
    resid = jax.ops.segment_sum(c - y, idx, n_bins)
    hits = jax.ops.segment_sum(y, idx, n_bins)
    return count, resid, hits


def ce_from_sums(count: jax.Array, resid: jax.Array, norm: str) -> jax.Array:
    """Count-weighted calibration error from per-bin counts and residual sums."""
    n = jnp.sum(count)
    safe = jnp.maximum(count, 1.0)
    if norm == "l1":
        return jnp.sum(jnp.abs(resid)) / n
    if norm == "l2":
        return jnp.sqrt(jnp.sum(resid**2 / safe) / n)
    return jnp.max(jnp.where(count > 0, jnp.abs(resid) / safe, 0.0))


@partial(jax.jit, static_argnames=("n_bins", "binning", "norm"))
def ece_core(c: jax.Array, y: jax.Array, n_bins: int, binning: str, norm: str) -> jax.Array:
    """Pure jnp ECE (jit/vmap-safe); inputs already valid float32 [n]."""
    count, resid, _ = bin_sums(c, y, n_bins, binning)
    return ce_from_sums(count, resid, norm)


@partial(jax.jit, static_argnames=("n_bins", "binning"))
def average_bin_ce_core(c: jax.Array, y: jax.Array, n_bins: int, binning: str) -> jax.Array:
    """Mean over non-empty bins of |conf_b - acc_b|, every bin weighted equally."""
    count, resid, _ = bin_sums(c, y, n_bins, binning)
    nonempty = count > 0
    gaps = jnp.where(nonempty, jnp.abs(resid) / jnp.maximum(count, 1.0), 0.0)
    return jnp.sum(gaps) / jnp.sum(nonempty)


@partial(jax.jit, static_argnames=("n_bins", "binning"))
def debiased_l2_core(c: jax.Array, y: jax.Array, n_bins: int, binning: str) -> jax.Array:
    """Kumar et al. (2019): sqrt(max(0, sum_b w_b [(conf_b - acc_b)^2 - acc_b (1 - acc_b) / (n_b - 1)]))."""
    count, resid, hits = bin_sums(c, y, n_bins, binning)
    safe = jnp.maximum(count, 1.0)
    acc = hits / safe
    per_bin = (resid / safe) ** 2 - acc * (1 - acc) / jnp.maximum(count - 1, 1.0)
    squared = jnp.sum(jnp.where(count >= 2, count / jnp.sum(count) * per_bin, 0.0))
    return jnp.sqrt(jnp.maximum(squared, 0.0))


def _binned(core: Any, confidence: Any, correct: Any, n_bins: int, binning: str, **kw: Any) -> Any:
    validate.positive_int(n_bins, "n_bins")
    validate.choice(binning, "binning", BINNINGS)
    if validate.is_traced(confidence, correct):
        c, y = jnp.asarray(confidence, jnp.float32), jnp.asarray(correct, jnp.float32)
        return core(c, y, n_bins=n_bins, binning=binning, **kw)
    c, y = validate.pair(confidence, correct, soft=True)
    return float(core(c, y, n_bins=n_bins, binning=binning, **kw))


def ece(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "uniform", norm: str = "l1") -> float:
    """Expected calibration error (Guo et al. 2017): sum_b (n_b / N) |acc_b - conf_b| for norm "l1".

    norm "l2" gives sqrt(sum_b (n_b / N)(acc_b - conf_b)^2) and "max" gives max_b |acc_b - conf_b| over
    non-empty bins, as torchmetrics' BinaryCalibrationError. `correct` may be 0/1 or a soft score in [0, 1].
    """
    validate.choice(norm, "norm", NORMS)
    return _binned(ece_core, confidence, correct, n_bins, binning, norm=norm)


def mce(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "uniform") -> float:
    """Maximum calibration error: the largest |acc_b - conf_b| over non-empty bins."""
    return ece(confidence, correct, n_bins=n_bins, binning=binning, norm="max")


def rmsce(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "uniform") -> float:
    """Root-mean-square (l2) calibration error over bins, weighted by bin mass."""
    return ece(confidence, correct, n_bins=n_bins, binning=binning, norm="l2")


def average_bin_ce(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "uniform") -> float:
    """Mean |acc_b - conf_b| over non-empty bins, each bin weighted equally (netcal calls this "ACE").

    Not Nixon et al.'s adaptive calibration error, which is `calib.metrics.ace`.
    """
    return _binned(average_bin_ce_core, confidence, correct, n_bins, binning)


def debiased_l2_ce(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "quantile") -> float:
    """Debiased l2 calibration error (Kumar et al. 2019), as uncertainty-calibration's unbiased_l2_ce.

    Subtracts each bin's label-noise term acc_b (1 - acc_b) / (n_b - 1) from the squared gap (bins with fewer
    than 2 rows count as 0), clips the sum at 0 and returns its square root. `correct` must be 0/1.
    """
    if not validate.is_traced(confidence, correct):
        validate.binary(correct, "correct")
    return _binned(debiased_l2_core, confidence, correct, n_bins, binning)


_bin_sums_jit = jax.jit(bin_sums, static_argnums=(2, 3))
_quantile_edges_jit = jax.jit(quantile_edges, static_argnums=1)


def reliability_bins(confidence: Any, correct: Any, n_bins: int = 15, binning: str = "uniform") -> dict:
    """Per-bin count, mean confidence, accuracy and edges (numpy), for reliability diagrams and tables."""
    validate.positive_int(n_bins, "n_bins")
    validate.choice(binning, "binning", BINNINGS)
    c, y = validate.pair(
        confidence, correct, soft=True
    )  # numpy in: an eager jnp.asarray is a program per shape
    count, resid, hits = (np.asarray(a, np.float64) for a in _bin_sums_jit(c, y, n_bins, binning))
    if binning == "uniform":
        edges = uniform_edges(n_bins).astype(np.float64)
    else:
        inner = np.asarray(_quantile_edges_jit(c, n_bins), np.float64)
        edges = np.concatenate([[0.0], inner, [1.0]])
        count, resid, hits = count[: len(edges) - 1], resid[: len(edges) - 1], hits[: len(edges) - 1]
    safe = np.maximum(count, 1.0)
    with np.errstate(invalid="ignore"):
        accuracy = np.where(count > 0, hits / safe, np.nan)
        mean_conf = np.where(count > 0, (resid + hits) / safe, np.nan)
    return {"edges": edges, "count": count, "accuracy": accuracy, "confidence": mean_conf}
