"""Full-ECE (Liu et al. 2024, arXiv 2406.11345): token-level calibration over the whole predicted distribution.

Every probability p_ik of every vocabulary entry k at every position i goes into the same M equal-width bins
(calib's [a, b) convention, 1.0 in the last bin; see calibration.py). With n positions,

    Full-ECE = (1/n) sum_m | sum_{(i,k) in bin m} (1[y_i = k] - p_ik) |.

Only three running sums per bin are needed (count, sum p, sum of hits), so the sampler accumulates them on
device with `full_ece_accumulate` and never materialises [n, V] on the host; `full_ece_from_bins` finishes.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calib.errors import CalibError
from calib.metrics import validate
from calib.metrics.calibration import uniform_bin_index

# Accumulated float32 sums drift by rounding; checks between them allow this relative slack.
SUM_TOLERANCE = 1e-3


@partial(jax.jit, static_argnames=("n_bins",))
def full_ece_accumulate(
    probs: jax.Array, labels: jax.Array, n_bins: int = 15, mask: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-bin (count, sum of p, sum of 1[y = k]) over probs [n, V] and labels [n]; pure jnp, jit/vmap-safe.

    `mask` [n] (1 = real position, 0 = padding) drops padded positions. Add the results of several calls to
    accumulate over batches.
    """
    probs = jnp.asarray(probs, jnp.float32)
    n, v = probs.shape
    weight = jnp.ones((n,), jnp.float32) if mask is None else jnp.asarray(mask, jnp.float32)
    hit = (jnp.asarray(labels)[:, None] == jnp.arange(v)[None, :]).astype(jnp.float32)
    idx = uniform_bin_index(probs.reshape(-1), n_bins)
    w = jnp.broadcast_to(weight[:, None], (n, v)).reshape(-1)
    count = jax.ops.segment_sum(w, idx, n_bins)
    sum_prob = jax.ops.segment_sum(w * probs.reshape(-1), idx, n_bins)
    sum_hit = jax.ops.segment_sum(w * hit.reshape(-1), idx, n_bins)
    return count, sum_prob, sum_hit


@jax.jit
def full_ece_from_bins_core(sum_prob: jax.Array, sum_hit: jax.Array, n_positions: jax.Array) -> jax.Array:
    """Pure jnp Full-ECE from per-bin sums."""
    return jnp.sum(jnp.abs(sum_hit - sum_prob)) / n_positions


def _bin_array(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise CalibError(
            f"{name}: cannot be read as numbers ({err}); pass the per-bin sums as a 1-D array"
        ) from err
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise CalibError(f"{name}: has shape {arr.shape}; pass one value per bin as a non-empty 1-D array")
    if not np.isfinite(arr).all():
        raise CalibError(f"{name}: has NaN or infinite values; the accumulation overflowed or was corrupted")
    if (arr < 0).any():
        raise CalibError(f"{name}: has negative values; per-bin counts and sums are never negative")
    return arr


def full_ece_from_bins(count: Any, sum_prob: Any, sum_hit: Any, n_positions: int | float) -> float:
    """Full-ECE from the per-bin accumulators [M] the sampler produces and the number of positions n."""
    if validate.is_traced(count, sum_prob, sum_hit, n_positions):
        return full_ece_from_bins_core(jnp.asarray(sum_prob), jnp.asarray(sum_hit), jnp.asarray(n_positions))
    cnt, sp, sh = _bin_array(count, "count"), _bin_array(sum_prob, "sum_prob"), _bin_array(sum_hit, "sum_hit")
    validate.same_length(("count", cnt), ("sum_prob", sp), ("sum_hit", sh))
    if isinstance(n_positions, bool) or not np.isfinite(n_positions) or n_positions <= 0:
        raise CalibError(f"n_positions: got {n_positions!r}; pass the number of scored positions (> 0)")
    slack = SUM_TOLERANCE * max(1.0, float(cnt.sum()))
    if (sp > cnt + slack).any() or (sh > cnt + slack).any():
        raise CalibError(
            "sum_prob/sum_hit: exceed count in some bin; pass (count, sum_prob, sum_hit) in this order"
        )
    if sh.sum() > n_positions * (1 + SUM_TOLERANCE):
        raise CalibError(
            f"sum_hit: totals {sh.sum():g} hits but n_positions is {n_positions:g}; each position has one label"
        )
    return float(np.abs(sh - sp).sum() / float(n_positions))


def full_ece(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Full-ECE from dense probabilities [n, V] (rows summing to 1) and the observed token ids [n]."""
    validate.positive_int(n_bins, "n_bins")
    if validate.is_traced(probs, labels):
        count, sp, sh = full_ece_accumulate(probs, labels, n_bins)
        return full_ece_from_bins_core(sp, sh, jnp.float32(jnp.shape(probs)[0]))
    p = validate.prob_rows(probs, "probs")
    y = validate.class_labels(labels, p.shape[1], "labels")
    validate.same_length(("probs", p), ("labels", y))
    count, sp, sh = full_ece_accumulate(jnp.asarray(p), jnp.asarray(y), n_bins)
    return full_ece_from_bins(np.asarray(count), np.asarray(sp), np.asarray(sh), p.shape[0])
