"""Graph measures of Lin, Trivedi & Sun (2023) on the samples' similarity graph, batched and jitted in JAX.

W_ij = ½(a(s_i, s_j) + a(s_j, s_i)) with a the backend's directional similarity (diagonal 1), D = diag(Σ_j W_ij),
L = I - D^{-1/2} W D^{-1/2} with eigenvalues λ_k (jnp.linalg.eigh).
- EigV: U = Σ_k max(0, 1 - λ_k), a soft count of clusters in [1, K]; confidence 1/U.
- Degree: U = tr(K·I - D)/K² = 1 - mean(W); confidence 1 - U = mean(W).
- Degree of the greedy answer (per-answer C_Deg): mean similarity of the greedy answer to the K samples.
- Eccentricity: each answer embedded by the eigenvectors with λ < 0.9; U = ‖[v_1 - v̄, …, v_K - v̄]‖_F, which lies in
  [0, √(K-1)] (√(K-1) when no two answers are similar); confidence 1 - U/√(K-1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_count
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator


def symmetric(similarity: np.ndarray) -> jax.Array:
    """W = ½(S + Sᵀ) over the last two axes."""
    s = jnp.asarray(similarity, dtype=jnp.float32)
    return 0.5 * (s + jnp.swapaxes(s, -1, -2))


@jax.jit
def normalized_laplacian(w: jax.Array) -> jax.Array:
    """I - D^{-1/2} W D^{-1/2} for a batch [..., K, K] of non-negative weights with positive degrees."""
    inv_sqrt = 1.0 / jnp.sqrt(w.sum(axis=-1))
    return jnp.eye(w.shape[-1], dtype=w.dtype) - inv_sqrt[..., :, None] * w * inv_sqrt[..., None, :]


@jax.jit
def eigv(w: jax.Array) -> jax.Array:
    """Σ_k max(0, 1 - λ_k) of the normalised Laplacian, per graph."""
    eigenvalues = jnp.linalg.eigh(normalized_laplacian(w))[0]
    return jnp.sum(jnp.maximum(0.0, 1.0 - eigenvalues), axis=-1)


@jax.jit
def degree(w: jax.Array) -> jax.Array:
    """tr(K·I - D) / K² per graph."""
    k = w.shape[-1]
    return (k * k - w.sum(axis=(-2, -1))) / (k * k)


@jax.jit
def eccentricity(w: jax.Array, threshold: float = 0.9) -> tuple[jax.Array, jax.Array]:
    """(U per graph, ‖v_j - v̄‖ per answer) with v_j the rows of the eigenvectors whose eigenvalue < threshold."""
    eigenvalues, vectors = jnp.linalg.eigh(normalized_laplacian(w))
    kept = vectors * (eigenvalues < threshold)[..., None, :].astype(vectors.dtype)
    centred = kept - kept.mean(axis=-2, keepdims=True)
    distance = jnp.linalg.norm(centred, axis=-1)
    return jnp.sqrt(jnp.sum(distance**2, axis=-1)), distance


@register_estimator
class EigV:
    name = "eigv"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        u = np.asarray(eigv(symmetric(bundle.sample_similarity)), dtype=np.float64)
        return EstimatorResult(confidence=confidence_from_count(u), raw=u, higher_raw_means="uncertain")


@register_estimator
class Degree:
    name = "degree"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        u = np.asarray(degree(symmetric(bundle.sample_similarity)), dtype=np.float64)
        return EstimatorResult(confidence=np.clip(1.0 - u, 0.0, 1.0), raw=u, higher_raw_means="uncertain")


@register_estimator
class DegreeAnswer:
    """C_Deg of the greedy answer in the graph of [greedy answer, samples], without its self-loop."""

    name = "degree_answer"
    needs = frozenset({Need.GREEDY, Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        w = np.asarray(symmetric(bundle.answer_similarity), dtype=np.float64)
        c = np.clip(w[:, 0, 1:].mean(axis=1), 0.0, 1.0)
        return EstimatorResult(confidence=c, raw=c, higher_raw_means="confident")


@register_estimator
class Eccentricity:
    name = "eccentricity"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        w = symmetric(bundle.sample_similarity)
        u = np.asarray(eccentricity(w, self.threshold)[0], dtype=np.float64)
        scale = np.sqrt(max(w.shape[-1] - 1, 1))
        return EstimatorResult(
            confidence=np.clip(1.0 - u / scale, 0.0, 1.0), raw=u, higher_raw_means="uncertain"
        )
