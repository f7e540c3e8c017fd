"""Class-conditional calibration errors over every class probability: ACE (adaptive) and classwise (static) ECE.

Both take probabilities [n, K] with integer labels [n], or a confidence [n] with 0/1 correctness, which is read
as the two-class problem [1 - c, c] with label `correct`. For each class k the column p[:, k] is binned against
1[label = k]; the per-class errors are then averaged over classes (Nixon et al. 2019, "Measuring Calibration in
Deep Learning").
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from calib.metrics import validate
from calib.metrics.calibration import BINNINGS, NORMS, ece_core


@partial(jax.jit, static_argnames=("n_bins", "binning", "norm"))
def classwise_core(probs: jax.Array, labels: jax.Array, n_bins: int, binning: str, norm: str) -> jax.Array:
    """Per-class binned CE of columns of probs [n, K], combined as (mean_k CE_k^p)^(1/p) or max_k for "max"."""
    k = probs.shape[1]
    onehot = (labels[:, None] == jnp.arange(k)[None, :]).astype(jnp.float32)
    per_class = jax.vmap(lambda p, y: ece_core(p, y, n_bins, binning, norm), in_axes=(1, 1))(probs, onehot)
    if norm == "l1":
        return jnp.mean(per_class)
    if norm == "l2":
        return jnp.sqrt(jnp.mean(per_class**2))
    return jnp.max(per_class)


def _ndim(x: Any) -> int | None:
    try:
        return np.ndim(x)
    except ValueError:  # ragged input: the 2-D validation reports it
        return None


def _as_classes(probs: Any, labels: Any) -> tuple[Any, Any]:
    """Validated (probs [n, K], int labels [n]); a 1-D confidence becomes the two-class problem [1 - c, c]."""
    if validate.is_traced(probs, labels):
        p = jnp.asarray(probs, jnp.float32)
        if p.ndim == 1:
            return jnp.stack([1 - p, p], axis=1), jnp.asarray(labels).astype(jnp.int32)
        return p, jnp.asarray(labels).astype(jnp.int32)
    if _ndim(probs) == 1:
        c, y = validate.pair(probs, labels)
        return jnp.stack([1 - c, c], axis=1), jnp.asarray(y, jnp.int32)
    p = validate.prob_rows(probs, "probs")
    y = validate.class_labels(labels, p.shape[1], "labels")
    validate.same_length(("probs", p), ("labels", y))
    return p, y


def _run(probs: Any, labels: Any, n_bins: int, binning: str, norm: str) -> Any:
    validate.positive_int(n_bins, "n_bins")
    validate.choice(binning, "binning", BINNINGS)
    validate.choice(norm, "norm", NORMS)
    traced = validate.is_traced(probs, labels)
    p, y = _as_classes(probs, labels)
    out = classwise_core(p, y, n_bins=n_bins, binning=binning, norm=norm)
    return out if traced else float(out)


def ace(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """Adaptive calibration error (Nixon et al. 2019): equal-mass bins per class, averaged over classes.

    Each class's bins hold (nearly) equal numbers of rows, so weighting bins by their counts, as done here,
    equals Nixon et al.'s equal weighting 1/(K R) whenever n splits evenly into the R bins; tied probabilities
    stay in one bin (calibration.py describes the quantile bins).
    """
    return _run(probs, labels, n_bins, "quantile", "l1")


def classwise_ece(probs: Any, labels: Any, n_bins: int = 15, norm: str = "l1") -> float:
    """Classwise / static calibration error (SCE, Nixon et al. 2019): equal-width bins per class, averaged.

    With norm "l2" the per-class errors are combined as sqrt(mean_k CE_k^2), as uncertainty-calibration's
    marginal calibration error does; "max" takes the worst class.
    """
    return _run(probs, labels, n_bins, "uniform", norm)
