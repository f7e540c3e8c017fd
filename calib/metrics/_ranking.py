"""Sorting helpers for the rank-based metrics (AUROC, AUPRC, PRR, AURC, quantile bins, Spearman).

XLA's CPU sort is several times faster on a single int32 array than on floats or on several operands, so
scores are sorted through their IEEE bit patterns: for floats >= 0 the int32 bit pattern orders exactly like the
value. Ties are handled by grouping equal values (every metric here averages over the order inside a tie group,
which makes it independent of the order of the input rows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def unit_keys(x: jax.Array) -> jax.Array:
    """int32 keys ordered like the float32 values x >= 0 (abs folds -0.0 onto +0.0); all keys are < 2**30."""
    return jax.lax.bitcast_convert_type(jnp.abs(x.astype(jnp.float32)), jnp.int32)


def sortable_keys(x: jax.Array) -> jax.Array:
    """int32 keys ordered like arbitrary finite float32 values (negative floats have their magnitude bits flipped)."""
    x = x.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, jnp.float32(0), x), jnp.int32)
    return jnp.where(bits < 0, bits ^ jnp.int32(0x7FFFFFFF), bits)


def sort_unit(x: jax.Array) -> jax.Array:
    """Ascending sort of values in [0, 1] via their int32 keys."""
    return jax.lax.bitcast_convert_type(jnp.sort(unit_keys(x)), jnp.float32)


def group_start(sorted_keys: jax.Array) -> jax.Array:
    """For each position of a sorted array, the first position holding the same value."""
    idx = jnp.arange(sorted_keys.shape[0], dtype=jnp.int32)
    new = jnp.concatenate([jnp.array([True]), sorted_keys[1:] != sorted_keys[:-1]])
    return jax.lax.cummax(jnp.where(new, idx, 0))


def group_end(sorted_keys: jax.Array) -> jax.Array:
    """For each position of a sorted array, one past the last position holding the same value."""
    n = sorted_keys.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    last = jnp.concatenate([sorted_keys[1:] != sorted_keys[:-1], jnp.array([True])])
    return jax.lax.cummin(jnp.where(last, idx + 1, n), reverse=True)


def exclusive_cumsum(x: jax.Array) -> jax.Array:
    """Cumulative sum with a leading zero: out[i] = sum(x[:i]), length n + 1."""
    return jnp.concatenate([jnp.zeros((1,), x.dtype), jnp.cumsum(x)])


def average_ranks(x: jax.Array) -> jax.Array:
    """1-based ranks with ties given their average rank (scipy.stats.rankdata(method='average'))."""
    keys = sortable_keys(x)
    order = jnp.argsort(keys, stable=False)
    sk = keys[order]
    avg = (group_start(sk) + group_end(sk) + 1).astype(jnp.float32) / 2
    return jnp.zeros(x.shape[0], jnp.float32).at[order].set(avg)


@jax.jit  # also called eagerly (the risk-coverage plot): op by op it was ~35 programs per sample size
def topk_expected_sums(confidence: jax.Array, quality: jax.Array) -> jax.Array:
    """S[k-1] = expected sum of quality over the k most confident rows, k = 1..n, ties broken uniformly at random.

    Keeping the k most confident may cut through a group of equal confidences; the expectation over the order
    inside that group is its mean quality times the number of its rows kept.
    """
    n = confidence.shape[0]
    keys, q = jax.lax.sort((unit_keys(confidence), quality.astype(jnp.float32)), num_keys=1, is_stable=False)
    start, end = group_start(keys), group_end(keys)
    cq = exclusive_cumsum(q)
    j = n - jnp.arange(1, n + 1)  # first kept ascending position when keeping k rows
    a, b = start[j], end[j]
    above = cq[n] - cq[b]
    partial = (b - j).astype(jnp.float32) / (b - a).astype(jnp.float32) * (cq[b] - cq[a])
    return above + partial
