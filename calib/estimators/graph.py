"""Graph measures of Lin, Trivedi & Sun (2023) on the samples' similarity graph, batched and jitted in JAX.

W_ij = ½(a(s_i, s_j) + a(s_j, s_i)) with a the backend's directional similarity (diagonal 1), D = diag(Σ_j W_ij),
L = I - D^{-1/2} W D^{-1/2} with eigenvalues λ_k (jnp.linalg.eigh).
- EigV: U = Σ_k max(0, 1 - λ_k), a soft count of clusters in [1, K]; confidence 1/U.
- Degree: U = tr(K·I - D)/K² = 1 - mean(W); confidence 1 - U = mean(W).
- Degree of the greedy answer (per-answer C_Deg): mean similarity of the greedy answer to the K samples.
- Eccentricity: each answer embedded by the eigenvectors with λ < 0.9; U = ‖[v_1 - v̄, …, v_K - v̄]‖_F, which lies in
  [0, √(K-1)] (√(K-1) when no two answers are similar); confidence 1 - U/√(K-1).
Precision: the computation keeps the similarity's precision; the bundle's is float64, and JAX computes in float64 for
it (under `jax.enable_x64`) instead of casting to its default float32.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_count
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator


def symmetric(similarity: np.ndarray) -> np.ndarray:
    """W = ½(S + Sᵀ) over the last two axes, in the input's floating precision (float32 for non-float input)."""
    s = np.asarray(similarity)
    s = s.astype(np.result_type(s.dtype, np.float32))
    return 0.5 * (s + np.swapaxes(s, -1, -2))


def in_precision(array: np.ndarray) -> contextlib.AbstractContextManager:
    """A context in which JAX keeps `array`'s precision: float64 in, float64 computation (JAX would cast to float32)."""
    return jax.enable_x64(True) if np.asarray(array).dtype == np.float64 else contextlib.nullcontext()


def _graph_measure(fn, similarity: np.ndarray, *args) -> np.ndarray:
    """fn(W, *args) per graph, computed in the similarity's precision, as float64 numpy."""
    w = symmetric(similarity)
    with in_precision(w):
        out = fn(jnp.asarray(w), *args)
        return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)


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
        u = _graph_measure(eigv, bundle.sample_similarity)
        return EstimatorResult(confidence=confidence_from_count(u), raw=u, higher_raw_means="uncertain")


@register_estimator
class Degree:
    name = "degree"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        u = _graph_measure(degree, bundle.sample_similarity)
        return EstimatorResult(confidence=np.clip(1.0 - u, 0.0, 1.0), raw=u, higher_raw_means="uncertain")


@register_estimator
class DegreeAnswer:
    """C_Deg of the greedy answer in the graph of [greedy answer, samples], without its self-loop."""

    name = "degree_answer"
    needs = frozenset({Need.GREEDY, Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        w = symmetric(bundle.answer_similarity).astype(np.float64)
        c = np.clip(w[:, 0, 1:].mean(axis=1), 0.0, 1.0)
        return EstimatorResult(confidence=c, raw=c, higher_raw_means="confident")


@register_estimator
class Eccentricity:
    name = "eccentricity"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        u = _graph_measure(eccentricity, bundle.sample_similarity, self.threshold)
        scale = np.sqrt(max(bundle.sample_similarity.shape[-1] - 1, 1))
        return EstimatorResult(
            confidence=np.clip(1.0 - u / scale, 0.0, 1.0), raw=u, higher_raw_means="uncertain"
        )
