"""Clustering answers by meaning, batched over questions and jitted in JAX.

Two rules over a boolean equivalence matrix E (symmetric):
- "greedy" (Kuhn et al. 2023, Algorithm 1): answers are visited in order; each joins the first existing cluster whose
  representative (its first member) it is equivalent to, otherwise it opens a new cluster.
- "components": connected components of E (equivalence made transitive).
Cluster ids are 0, 1, ... in order of first appearance; padded (masked-out) answers get -1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from calib.errors import CalibError

Method = Literal["greedy", "components"]


def _greedy_one(eq: jax.Array, mask: jax.Array) -> jax.Array:
    m = eq.shape[0]

    def body(j, state):
        labels, is_rep, next_id = state
        candidates = is_rep & eq[:, j]
        found = candidates.any()
        label = jnp.where(found, labels[jnp.argmax(candidates)], next_id)
        opens = mask[j] & ~found
        labels = labels.at[j].set(jnp.where(mask[j], label, -1))
        return labels, is_rep.at[j].set(opens), next_id + opens.astype(jnp.int32)

    init = (jnp.full(m, -1, jnp.int32), jnp.zeros(m, bool), jnp.int32(0))
    return jax.lax.fori_loop(0, m, body, init)[0]


def _components_one(eq: jax.Array, mask: jax.Array) -> jax.Array:
    m = eq.shape[0]
    index = jnp.arange(m, dtype=jnp.int32)
    adjacency = (eq & mask[:, None] & mask[None, :]) | jnp.eye(m, dtype=bool)

    def step(state):
        labels, _ = state  # every node takes the smallest label among its neighbours until nothing changes
        new = jnp.min(jnp.where(adjacency, labels[None, :], m), axis=1).astype(jnp.int32)
        return new, jnp.any(new != labels)

    root, _ = jax.lax.while_loop(lambda s: s[1], step, (index, jnp.bool_(True)))
    is_root = (root == index) & mask  # the smallest index of a component is also its first member
    canonical = jnp.cumsum(is_root.astype(jnp.int32)) - 1
    return jnp.where(mask, canonical[root], -1)


@jax.jit
def _greedy_batch(eq: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.vmap(_greedy_one)(eq, mask)


@jax.jit
def _components_batch(eq: jax.Array, mask: jax.Array) -> jax.Array:
    return jax.vmap(_components_one)(eq, mask)


def pad_stack(matrices: Sequence[np.ndarray], fill: float | bool = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stack ragged [M_i, M_i] matrices into [B, M, M] plus a [B, M] mask of real entries."""
    size = max((mat.shape[0] for mat in matrices), default=0)
    first = np.asarray(matrices[0]) if len(matrices) else np.zeros((0, 0))
    out = np.full((len(matrices), size, size), fill, dtype=first.dtype)
    mask = np.zeros((len(matrices), size), dtype=bool)
    for b, mat in enumerate(matrices):
        m = mat.shape[0]
        out[b, :m, :m] = mat
        mask[b, :m] = True
    return out, mask


def cluster_batch(
    equivalent: np.ndarray, mask: np.ndarray | None = None, method: Method = "greedy"
) -> np.ndarray:
    """Cluster ids [B, M] for a stacked boolean equivalence [B, M, M] (mask [B, M] marks real answers)."""
    equivalent = np.asarray(equivalent, dtype=bool)
    if equivalent.ndim != 3 or equivalent.shape[1] != equivalent.shape[2]:
        raise CalibError(f"clustering: equivalence must be [B, M, M], got shape {equivalent.shape}")
    if mask is None:
        mask = np.ones(equivalent.shape[:2], dtype=bool)
    if equivalent.shape[0] == 0 or equivalent.shape[1] == 0:
        return np.full(equivalent.shape[:2], -1, dtype=np.int32)
    if method == "greedy":
        labels = _greedy_batch(jnp.asarray(equivalent), jnp.asarray(mask))
    elif method == "components":
        labels = _components_batch(jnp.asarray(equivalent), jnp.asarray(mask))
    else:
        raise CalibError(f"clustering: unknown method {method!r}; use 'greedy' or 'components'")
    return np.asarray(labels)


def cluster(equivalent: Sequence[np.ndarray], method: Method = "greedy") -> list[np.ndarray]:
    """Cluster ids per question for ragged [M_i, M_i] boolean equivalence matrices (one jitted batch)."""
    if len(equivalent) == 0:
        return []
    stacked, mask = pad_stack([np.asarray(e, dtype=bool) for e in equivalent], fill=False)
    labels = cluster_batch(stacked, mask, method)
    return [labels[b, : e.shape[0]] for b, e in enumerate(equivalent)]


def representatives(labels: np.ndarray) -> np.ndarray:
    """Index of the first member of each cluster, in cluster-id order."""
    labels = np.asarray(labels)
    count = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    return np.array([int(np.argmax(labels == c)) for c in range(count)], dtype=np.int64)
