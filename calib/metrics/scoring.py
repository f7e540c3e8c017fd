"""Proper scoring rules: Brier score (binary and multi-class), Brier skill score, negative log-likelihood.

Binary inputs are a confidence [n] with correctness [n] (0/1 or a soft score in [0, 1]); multi-class inputs are
probabilities [n, K] with integer labels [n]. Binary Brier is mean (c - y)^2 (sklearn's brier_score_loss);
multi-class Brier is mean_i sum_k (p_ik - 1[y_i = k])^2 (Brier 1950, without sklearn's optional halving).
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calib.metrics import validate

# log p is clipped at p = float32 machine epsilon, as sklearn's log_loss does for float32 input.
EPS = float(np.finfo(np.float32).eps)


def _inputs(probs: Any, labels: Any) -> tuple[jax.Array, jax.Array, bool]:
    """(probs, labels, multiclass) validated unless traced; 1-D probs are binary confidences."""
    if validate.is_traced(probs, labels):
        p = jnp.asarray(probs, jnp.float32)
        y = jnp.asarray(labels)
        return p, (y.astype(jnp.int32) if p.ndim == 2 else y.astype(jnp.float32)), p.ndim == 2
    try:
        ndim = np.ndim(probs)
    except ValueError:
        ndim = 2  # ragged: the 2-D validation names the problem
    if ndim == 1:
        c, y = validate.pair(probs, labels, soft=True)
        return jnp.asarray(c), jnp.asarray(y), False
    p = validate.prob_rows(probs, "probs")
    y = validate.class_labels(labels, p.shape[1], "labels")
    validate.same_length(("probs", p), ("labels", y))
    return jnp.asarray(p), jnp.asarray(y), True


@jax.jit
def _brier_binary(c: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((c - y) ** 2)


@jax.jit
def _brier_multi(p: jax.Array, y: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(y, p.shape[1], dtype=p.dtype)
    return jnp.mean(jnp.sum((p - onehot) ** 2, axis=1))


@jax.jit
def _brier_ref_binary(y: jax.Array) -> jax.Array:
    base = jnp.mean(y)
    return jnp.mean((base - y) ** 2)


@jax.jit
def _brier_ref_multi(p: jax.Array, y: jax.Array) -> jax.Array:
    onehot = jax.nn.one_hot(y, p.shape[1], dtype=p.dtype)
    return _brier_multi(jnp.broadcast_to(jnp.mean(onehot, axis=0), p.shape), y)


@jax.jit
def _nll_binary(c: jax.Array, y: jax.Array) -> jax.Array:
    c = jnp.clip(c, EPS, 1 - EPS)
    return -jnp.mean(y * jnp.log(c) + (1 - y) * jnp.log1p(-c))


@jax.jit
def _nll_multi(p: jax.Array, y: jax.Array) -> jax.Array:
    picked = jnp.take_along_axis(p, y[:, None], axis=1)[:, 0]
    return -jnp.mean(jnp.log(jnp.clip(picked, EPS, 1.0)))


def _finish(value: jax.Array, traced: bool) -> Any:
    return value if traced else float(value)


def brier(probs: Any, labels: Any) -> float:
    """Brier score: binary mean (c - y)^2 for a confidence [n]; mean sum_k (p_k - 1[y=k])^2 for probs [n, K]."""
    p, y, multi = _inputs(probs, labels)
    return _finish(_brier_multi(p, y) if multi else _brier_binary(p, y), validate.is_traced(probs, labels))


def brier_skill(probs: Any, labels: Any) -> float:
    """Brier skill score 1 - B / B_ref, with B_ref the Brier score of always predicting the observed base rate(s).

    1 = perfect, 0 = no better than the base rate, negative = worse. NaN (with a warning) when every label is
    the same, because then the base rate is already perfect and the ratio is undefined.
    """
    traced = validate.is_traced(probs, labels)
    p, y, multi = _inputs(probs, labels)
    score = _brier_multi(p, y) if multi else _brier_binary(p, y)
    ref = _brier_ref_multi(p, y) if multi else _brier_ref_binary(y)
    out = jnp.where(ref > 0, 1 - score / jnp.where(ref > 0, ref, 1.0), jnp.nan)
    if not traced and not float(ref) > 0:
        warnings.warn(
            "brier_skill: all labels are the same, so the base-rate reference is perfect; returning NaN",
            RuntimeWarning,
            stacklevel=2,
        )
    return _finish(out, traced)


def nll(probs: Any, labels: Any) -> float:
    """Negative log-likelihood (log loss): -mean log p(label), probabilities clipped to [eps, 1 - eps].

    Binary: -mean[y log c + (1 - y) log(1 - c)] (soft y allowed); multi-class: -mean log p[i, y_i].
    """
    p, y, multi = _inputs(probs, labels)
    return _finish(_nll_multi(p, y) if multi else _nll_binary(p, y), validate.is_traced(probs, labels))
