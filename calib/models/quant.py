"""Weight-only int8: per-output-channel symmetric scales, quantised on the host one tensor at a time, converted back
to the compute dtype inside the compiled program one layer (or one 2048-row head chunk) at a time.

Why this layout: on CPU the cost of int8 weights is materialising compute-dtype copies, not the int8 itself. A
QArray dequantizes where a layer reads its weight (`self.q[...]`), the transformer ties each block's weights to the
previous block's output with an optimization barrier so XLA converts one layer at a time (the temporaries stay
small and are reused), and the LM head converts 2048-row chunks under `lax.map`, scaling the logits rather than the
weights.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.errors import CalibError

WEIGHTS = ("full", "int8")  # model.weights: full = every tensor in the compute dtype (model.dtype)
HEAD_CHUNK = 2048
CHUNK_ELEMENTS = (
    1 << 22
)  # entries quantised at a time on the host  # vocabulary rows converted per step of the head's lax.map

GROUP = (
    32  # input channels per scale: a scale per (output channel, 32 inputs), the block of GGUF Q8_0/Q4 formats
)

# parameter path -> the axis its matrix contracts over in groups of GROUP (other axes keep a scale per index)
CONTRACTED = {
    r"blocks\.\d+\.attn\.[qkv]": 0,  # [D, N|K, H]
    r"blocks\.\d+\.attn\.o": 1,  # [N, H, D]: groups within a head
    r"blocks\.\d+\.mlp\.(gate|up|down)": 0,  # [D, F] / [F, D]
    r"embedding": 1,  # [V, D]: a vocabulary row is the tied head's output channel
    r"head": 0,  # [D, V]
}


def contracted_axis(path: str) -> int | None:
    """The (grouped) contraction axis of a quantised parameter, or None for one that stays in the compute dtype
    (norms, biases)."""
    for pattern, axis in CONTRACTED.items():
        if re.fullmatch(pattern, path):
            return axis
    return None


def check_weights(weights: str) -> str:
    if weights not in WEIGHTS:
        raise CalibError(f"unknown model weights {weights!r}: choose one of {list(WEIGHTS)} (model.weights)")
    return weights


def grouped_shape(shape: tuple[int, ...], axis: int, group: int = GROUP) -> tuple[int, ...]:
    """shape with `axis` split into (groups, group); an axis that `group` does not divide is one group."""
    size = shape[axis]
    g = group if size % group == 0 else size
    return (*shape[:axis], size // g, g, *shape[axis + 1 :])


def quantize(
    w: np.ndarray, axis: int, group: int | None = None, name: str = "weight"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 q, float32 scale and offset with w ~ q * scale + offset (see `fit`). group=None: 32, or 16 when
    16-wide groups hold a sample of the tensor exactly and 32-wide ones do not (GGUF Q6_K's 16-entry blocks)."""
    w32 = np.asarray(w, np.float32)
    if not np.isfinite(w32).all():
        raise CalibError(
            f"{name} has inf or nan values and cannot be quantised to int8; load it with model.weights=full"
        )
    levels = True
    if group is None:  # sample 16 output channels: a GGUF file's blocks share one type
        out = 0 if axis != 0 else w32.ndim - 1
        sample = np.take(w32, np.arange(min(16, w32.shape[out])), axis=out)
        tol = 1e-5 * float(np.abs(sample).max())
        exact = [
            fit(sample, axis, g)[3].max() <= tol if sample.shape[axis] % g == 0 else False for g in (32, 16)
        ]
        group = 16 if exact[1] and not exact[0] else GROUP
        levels = any(exact)  # a tensor on no level grid (bf16/f32 checkpoints) skips the per-group sort
    out = 0 if axis != 0 else w32.ndim - 1  # fit slices of output channels: host temporaries stay ~32 MB
    step = max(1, CHUNK_ELEMENTS * w32.shape[out] // max(w32.size, 1))
    parts = [fit(_slice(w32, out, i, step), axis, group, levels)[:3] for i in range(0, w32.shape[out], step)]
    if len(parts) == 1:
        return parts[0]
    q, scale, offset = zip(*parts, strict=True)
    grouped_out = out + 1 if out > axis else out  # scales carry the extra group axis after `axis`
    return (
        np.concatenate(q, axis=out),
        np.concatenate(scale, axis=grouped_out),
        np.concatenate(offset, axis=grouped_out),
    )


def _slice(w: np.ndarray, axis: int, start: int, size: int) -> np.ndarray:
    return w[(slice(None),) * axis + (slice(start, start + size),)]


def _level_step(g: np.ndarray, axis: int, tol: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Per group, the largest step that every gap between the sorted values is (within tol) a multiple of: a
    float Euclid over the gaps, started from the smallest one (inf where there is no gap)."""
    gaps = np.diff(np.sort(g, axis=axis), axis=axis)
    gaps = np.where(gaps > tol, gaps, np.inf)
    step = gaps.min(axis=axis, keepdims=True)
    for _ in range(rounds):
        with np.errstate(invalid="ignore"):
            rem = np.abs(gaps - step * np.rint(gaps / step))
        rem = np.where(np.isfinite(gaps) & (rem > tol), rem, np.inf).min(axis=axis, keepdims=True)
        step = np.where(np.isfinite(rem), np.minimum(step, rem), step)
    span = g.max(axis=axis, keepdims=True) - g.min(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore"):
        levels = np.rint(span / step)
    return np.where(levels >= 1, span / levels, step)  # the spacing that lands on both ends exactly


def fit(
    w: np.ndarray, axis: int, group: int = GROUP, levels: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """int8 q, float32 scale and offset with w ~ q * scale + offset, one (scale, offset) per output channel and per
    `group` consecutive entries of the contraction `axis` (scale and offset have the grouped shape, group axis of
    size 1; q keeps w's shape). Each group takes whichever of three int8 grids has the smallest max error:
    symmetric (scale max|w| / 127), min-max (scale (max - min) / 255), or the group's own level spacing (the
    smallest gap between its sorted values) when at most 256 such levels span it. The last holds the blocks of
    GGUF's Q4_0/Q4_1/Q5_0/Q8_0/Q4_K exactly, so int8 adds no error to a model that came as one of those.
    Returns q, scale, offset and each group's max error."""
    w32 = np.asarray(w, np.float32)
    g = w32.reshape(grouped_shape(w32.shape, axis, group))
    red = dict(axis=axis + 1, keepdims=True)
    lo, hi = g.min(**red), g.max(**red)
    step = _level_step(g, axis + 1, tol=1e-5 * np.maximum(np.abs(lo), np.abs(hi))) if levels else None
    candidates = [
        (np.maximum(np.abs(lo), np.abs(hi)) / 127.0, np.zeros_like(lo), -127, 127),  # symmetric
        ((hi - lo) / 255.0, lo + 128.0 * (hi - lo) / 255.0, -128, 127),  # min-max
    ]
    if levels:
        candidates.append((step, lo + 128.0 * step, -128, 127))  # the group's own level spacing
    best = None
    for scale, offset, qmin, qmax in candidates:
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0).astype(np.float32)
        offset = np.where(np.isfinite(offset), offset, lo).astype(np.float32)
        q = np.clip(np.rint((g - offset) / scale), qmin, qmax)
        err = np.abs(q * scale + offset - g).max(**red)
        if best is None:
            best = [q, scale, offset, err]
            continue
        better = err < best[3]
        best = [np.where(better, new, old) for new, old in zip((q, scale, offset, err), best, strict=True)]
    q, scale, offset, err = best
    return q.astype(np.int8).reshape(w32.shape), scale.astype(np.float32), offset.astype(np.float32), err


@jax.tree_util.register_pytree_node_class
class QArray:
    """An int8 weight with its scales, standing in for the array a Param holds: `param[...]` (what the layers read)
    dequantizes to the compute dtype inside the traced program. axis: the grouped contraction axis."""

    def __init__(self, q, scale, offset, axis: int, dtype):
        self.q, self.scale, self.offset = q, scale, offset
        self.axis, self._dtype = axis, jnp.dtype(dtype)

    def tree_flatten(self):
        return (self.q, self.scale, self.offset), (self.axis, self._dtype)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.q.shape)

    @property
    def dtype(self):
        return self._dtype

    @property
    def nbytes(self) -> int:
        return int(self.q.size + 2 * self.scale.size * self.scale.dtype.itemsize)

    def __getitem__(self, key):
        if key is not Ellipsis:
            raise TypeError("a QArray is read whole ([...]); slice the dequantized array")
        return dequantize(self.q, self.scale, self.offset, self.axis, self._dtype)

    def rows(self, ids: jax.Array) -> jax.Array:
        """Rows of a [V, D] matrix (the embedding lookup), dequantized per row: the table is never converted."""
        rows = [jnp.take(a, ids, axis=0) for a in (self.q, self.scale, self.offset)]
        return dequantize(*rows, ids.ndim + self.axis - 1, self._dtype)


def dequantize(q: jax.Array, scale: jax.Array, offset: jax.Array, axis: int, dtype) -> jax.Array:
    """q * scale + offset (both in q's grouped shape along `axis`) in float32 (float64 for float64 compute), then
    the compute dtype."""
    wide = jnp.promote_types(dtype, jnp.float32)
    grouped = q.reshape(grouped_shape(q.shape, axis, q.shape[axis] // scale.shape[axis])).astype(wide)
    return (grouped * scale.astype(wide) + offset.astype(wide)).reshape(q.shape).astype(dtype)


def head_logits(h: jax.Array, w: QArray, vocab_axis: int, dtype=jnp.float32) -> jax.Array:
    """h [..., D] times an int8 LM head ([V, D] tied, vocab_axis 0; [D, V], vocab_axis 1) -> logits [..., V] in
    `dtype`. 2048 vocabulary rows are converted per `lax.map` step, so no converted copy of the whole head exists
    (the issue's micro-benchmark: 1.4x faster than the float32 head on CPU)."""
    vocab = w.shape[vocab_axis]
    n, rest = divmod(vocab, HEAD_CHUNK)
    spec = "...D,VD->...V" if vocab_axis == 0 else "...D,DV->...V"
    scale_axis = vocab_axis if vocab_axis == 0 else w.scale.ndim - 1  # [V, D/G, 1] or [D/G, 1, V]

    def part(start, size):
        q = jax.lax.dynamic_slice_in_dim(w.q, start, size, axis=vocab_axis)
        s, o = (jax.lax.dynamic_slice_in_dim(a, start, size, axis=scale_axis) for a in (w.scale, w.offset))
        return jnp.einsum(spec, h, dequantize(q, s, o, w.axis, h.dtype), preferred_element_type=dtype)

    pieces = []
    if n:
        chunks = jax.lax.map(lambda i: part(i * HEAD_CHUNK, HEAD_CHUNK), jnp.arange(n))  # [n, ..., C]
        pieces.append(jnp.moveaxis(chunks, 0, -2).reshape(*h.shape[:-1], n * HEAD_CHUNK))
    if rest:
        pieces.append(part(n * HEAD_CHUNK, rest))
    out = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
    return out.astype(dtype)


def stack_qarrays(arrays) -> QArray:
    """Layers' QArrays stacked on a new leading axis; coarser groups are repeated to the finest group size among
    them (a 32-entry group's scale and offset hold for both of its 16-entry halves, exactly)."""
    first = arrays[0]
    groups = max(a.scale.shape[a.axis] for a in arrays)

    def refine(x, a):
        return jnp.repeat(x, groups // a.scale.shape[a.axis], axis=a.axis)

    return QArray(
        jnp.stack([a.q for a in arrays]),
        jnp.stack([refine(a.scale, a) for a in arrays]),
        jnp.stack([refine(a.offset, a) for a in arrays]),
        first.axis,
        first.dtype,
    )


def quantized_value(path: str, value: np.ndarray, dtype, sharding=None):
    """The Param value for a host array: a QArray on the device for a quantised matrix, else None."""
    axis = contracted_axis(path)
    if axis is None:
        return None
    q, scale, offset = quantize(value, axis, name=path)
    return QArray(*(jax.device_put(a, sharding) for a in (q, scale, offset)), axis, dtype)


def quantize_model(model: nnx.Module, sharding=None) -> nnx.Module:
    """Quantise a model built in full precision (the random tiny models, tests), in place, one tensor at a time."""
    for path, var in nnx.iter_graph(model):
        if not isinstance(var, nnx.Param) or isinstance(var.get_value(), QArray):
            continue
        name = ".".join(str(p) for p in path)
        value = var.get_value()
        new = quantized_value(name, np.asarray(jax.device_get(value)), value.dtype, sharding)
        if new is not None:
            var.set_value(new)
    return model


def is_quantized(model: nnx.Module) -> bool:
    return isinstance(model.embedding.get_value(), QArray)
