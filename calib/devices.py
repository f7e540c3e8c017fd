"""Device placement: a 2-D ("data", "model") Mesh, per-parameter PartitionSpecs by path, batch and cache layouts.

Rows (prompts x samples) split over "data"; attention heads, kv-heads, the MLP hidden dimension and the vocabulary
split over "model" (Megatron-style: column-parallel in, row-parallel out, so each block needs one all-reduce per
projection pair). The spec of a parameter comes from a rule table keyed by its path, so any companion tensor whose
path extends a matrix's path (e.g. int8 per-channel scales, `blocks.0.mlp.gate.scale`) follows that matrix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from calib.errors import CalibError

AXES = ("data", "model")
M = "model"

# (path pattern, spec of the matrix): the first pattern that matches the start of a parameter's path wins. Shapes:
# embedding [V, D], head [D, V], q [D, N, H], k/v [D, K, H], o [N, H, D], biases [N or K, H], gate/up [D, F],
# down [F, D]. The tied embedding is split over the vocabulary: the lookup gathers one row per token (an all-reduce
# of [B, T, D]) and the head's logits come out split over V, with no copy of the [V, D] matrix on any device.
PARAM_RULES: list[tuple[str, tuple]] = [
    (r"embedding", (M, None)),
    (r"head", (None, M)),
    (r"blocks\.\d+\.attn\.(q|k|v)_bias", (M, None)),
    (r"blocks\.\d+\.attn\.(q|k|v)", (None, M, None)),
    (r"blocks\.\d+\.attn\.o", (M, None, None)),
    (r"blocks\.\d+\.mlp\.(gate|up)", (None, M)),
    (r"blocks\.\d+\.mlp\.down", (M, None)),
]
MATRIX_SHAPES = {  # the matrix shape each rule describes, so a companion tensor can align its axes to it
    "embedding": lambda c: (c.vocab_size, c.embed_dim),
    "head": lambda c: (c.embed_dim, c.vocab_size),
    "q": lambda c: (c.embed_dim, c.num_heads, c.head_dim),
    "k": lambda c: (c.embed_dim, c.num_kv_heads, c.head_dim),
    "v": lambda c: (c.embed_dim, c.num_kv_heads, c.head_dim),
    "o": lambda c: (c.num_heads, c.head_dim, c.embed_dim),
    "q_bias": lambda c: (c.num_heads, c.head_dim),
    "k_bias": lambda c: (c.num_kv_heads, c.head_dim),
    "v_bias": lambda c: (c.num_kv_heads, c.head_dim),
    "gate": lambda c: (c.embed_dim, c.ffw_dim),
    "up": lambda c: (c.embed_dim, c.ffw_dim),
    "down": lambda c: (c.ffw_dim, c.embed_dim),
}


def make_mesh(data: int | None = None, model: int = 1, devices: Sequence | None = None) -> Mesh:
    """A ("data", "model") Mesh over `devices` (default: this process's devices); data=None takes all the rest."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if model < 1 or (data is not None and data < 1):
        raise CalibError(f"devices.data ({data}) and devices.model ({model}) must be >= 1")
    if data is None:
        if len(devices) % model:
            raise CalibError(
                f"devices.model={model} does not divide the {len(devices)} devices: pick a divisor or set devices.data"
            )
        data = len(devices) // model
    if data * model > len(devices):
        raise CalibError(
            f"devices.data x devices.model = {data} x {model} = {data * model} devices, but only {len(devices)} "
            "are visible: lower them (XLA_FLAGS=--xla_force_host_platform_device_count=N emulates N on CPU)"
        )
    return Mesh(np.asarray(devices[: data * model]).reshape(data, model), AXES)


def data_mesh(devices: Sequence | None = None) -> Mesh:
    """Every device on "data" (model axis of size 1): the default, parameters replicated."""
    return make_mesh(None, 1, devices)


def data_size(mesh: Mesh | None) -> int:
    """How many ways rows are split (1 without a mesh): batch sizes are padded to a multiple of it."""
    return 1 if mesh is None else int(mesh.shape.get("data", 1))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the "data" axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def _fits(spec: tuple, shape: tuple, mesh: Mesh) -> PartitionSpec:
    """Drop a split over a mesh axis of size 1 (a no-op) or one that does not divide the array axis evenly (that
    axis is then replicated)."""
    return PartitionSpec(
        *(
            a if a is not None and mesh.shape[a] > 1 and size % mesh.shape[a] == 0 else None
            for a, size in zip(spec, shape)
        )
    )


def param_spec(path: str, shape: tuple, mesh: Mesh, cfg=None) -> PartitionSpec:
    """The PartitionSpec of the parameter at `path` ("blocks.3.attn.q") of this shape.

    A tensor whose path extends a rule's matrix (a scale, "blocks.3.attn.q.scale") shares the matrix's split on the
    axes it has in common, aligned from the right like numpy broadcasting; an axis of size 1 is never split.
    """
    for pattern, spec in PARAM_RULES:
        match = re.match(pattern + r"(?=\.|$)", path)
        if match is None:
            continue
        if match.end() == len(path):
            return _fits(spec, shape, mesh)
        name = path[: match.end()].rsplit(".", 1)[-1]
        full = MATRIX_SHAPES[name](cfg) if cfg is not None else (None,) * len(spec)
        aligned = list(zip(spec, full))[-len(shape) :] if shape else []
        aligned = [(None, None)] * (len(shape) - len(aligned)) + aligned
        companion = tuple(
            a if a is not None and (full_size is None or size == full_size) and size > 1 else None
            for (a, full_size), size in zip(aligned, shape)
        )
        return _fits(companion, shape, mesh)
    return PartitionSpec()  # norms and anything unknown: replicated


def param_shardings(state, mesh: Mesh, cfg=None):
    """A NamedSharding per leaf of an nnx State (or any pytree keyed by module path), by `param_spec`."""

    def one(path, leaf):
        return NamedSharding(mesh, param_spec(path_name(path), tuple(leaf.shape), mesh, cfg))

    return jax.tree_util.tree_map_with_path(one, state)


def path_name(path: tuple) -> str:
    """A pytree key path of an nnx State -> "blocks.0.attn.q" (the Variable's own `.value` left out)."""
    parts = [getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path]
    return ".".join(str(p) for p in parts if p != "value")


def cache_sharding(mesh: Mesh, num_kv_heads: int) -> NamedSharding:
    """KV cache [B, K, S, H]: rows on "data", kv-heads on "model" (replicated when the heads do not divide)."""
    return NamedSharding(mesh, _fits(("data", M, None, None), (0, num_kv_heads, 0, 0), mesh))


def constrain(x, mesh: Mesh | None, *spec):
    """with_sharding_constraint inside jit, a no-op on one device (so single-device programs stay unchanged)."""
    if mesh is None or mesh.devices.size == 1:
        return x
    spec = spec + (None,) * (x.ndim - len(spec))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, _fits(spec, tuple(x.shape), mesh)))


def _row_spec(shape: tuple, mesh: Mesh) -> PartitionSpec:
    """Rows on "data"; a 4-D leaf is a KV cache [B, K, S, H] and also splits its kv-heads on "model"."""
    spec = ("data", M, None, None) if len(shape) == 4 else ("data",) + (None,) * (len(shape) - 1)
    return _fits(spec, shape, mesh)


def state_shardings(tree, mesh: Mesh):
    """NamedShardings for a decode state (or any pytree of per-row arrays): see `_row_spec`."""
    return jax.tree.map(lambda x: NamedSharding(mesh, _row_spec(tuple(x.shape), mesh)), tree)


def constrain_state(tree, mesh: Mesh | None):
    """Inside jit: declare a per-row pytree's layout (`_row_spec`); a no-op without a multi-device mesh."""
    if mesh is None or mesh.devices.size == 1:
        return tree
    return jax.tree.map(
        lambda x: (
            jax.lax.with_sharding_constraint(x, NamedSharding(mesh, _row_spec(tuple(x.shape), mesh)))
            if x.ndim
            else x
        ),
        tree,
    )


def put_rows(tree, mesh: Mesh | None):
    """Host arrays -> device arrays split over "data" by rows (`_row_spec`); unchanged without a multi-device mesh."""
    if mesh is None or mesh.devices.size == 1:
        return tree
    return jax.device_put(tree, state_shardings(tree, mesh))
