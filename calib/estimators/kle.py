"""Kernel language entropy (Nikitin et al. 2024): von Neumann entropy of a unit-trace semantic kernel.

The kernel is the heat kernel exp(-t L) of the samples' similarity graph (W = ½(S + Sᵀ), L = D - W), normalised to a
unit diagonal and divided by K so its trace is 1: VNE = -tr(K log K) = -Σ μ log μ over its eigenvalues μ, in
[0, log K]. Confidence exp(-VNE), the same map as semantic entropy (KLE generalises discrete SE: for a graph of C
disconnected complete clusters it tends to SE_D as t grows).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_entropy
from calib.estimators.bundle import Bundle
from calib.estimators.graph import symmetric
from calib.estimators.registry import register_estimator


@jax.jit
def heat_kernel(w: jax.Array, t: float) -> jax.Array:
    """exp(-t (D - W)) through the eigen-decomposition of the symmetric Laplacian."""
    laplacian = jnp.eye(w.shape[-1], dtype=w.dtype) * w.sum(axis=-1)[..., None] - w
    eigenvalues, vectors = jnp.linalg.eigh(laplacian)
    return (vectors * jnp.exp(-t * eigenvalues)[..., None, :]) @ jnp.swapaxes(vectors, -1, -2)


@jax.jit
def unit_trace(kernel: jax.Array) -> jax.Array:
    """K_ij / sqrt(K_ii K_jj) / n: unit diagonal, then trace one."""
    diagonal = jnp.sqrt(jnp.diagonal(kernel, axis1=-2, axis2=-1))
    return kernel / (diagonal[..., :, None] * diagonal[..., None, :]) / kernel.shape[-1]


@jax.jit
def von_neumann_entropy(density: jax.Array) -> jax.Array:
    """-Σ μ log μ over the eigenvalues μ of a unit-trace PSD matrix (μ ≤ 0 contribute nothing)."""
    mu = jnp.linalg.eigh(density)[0]
    safe = jnp.where(mu > 1e-12, mu, 1.0)
    return -jnp.sum(jnp.where(mu > 1e-12, mu * jnp.log(safe), 0.0), axis=-1)


def kernel_language_entropy(similarity: np.ndarray, t: float = 0.3) -> np.ndarray:
    """KLE per question for a batch of similarity matrices [N, K, K]."""
    kernel = unit_trace(heat_kernel(symmetric(similarity), t))
    return np.asarray(von_neumann_entropy(kernel), dtype=np.float64)


@register_estimator
class KernelLanguageEntropy:
    """KLE with the heat kernel; t = 0.3 as in LM-Polygraph's implementation of the paper."""

    name = "kle"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __init__(self, t: float = 0.3):
        self.t = t

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        vne = kernel_language_entropy(bundle.sample_similarity, self.t)
        return EstimatorResult(confidence=confidence_from_entropy(vne), raw=vne, higher_raw_means="uncertain")
