"""Decoder layers shared by every architecture (Flax NNX). Einsum names: B batch, T query time, S key slot,
D model dim, N query heads, K kv heads, G query heads per kv head, H head dim, F feed-forward dim, V vocab."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.errors import CalibError
from calib.models.config import ModelConfig

# keys, values: [B, K, S, H]; slot s holds the token at position s. Heads before slots, so the attention products
# are batched matmuls over (B, K) without a transpose of the cache: with [B, S, K, H] a 176-row decode step at 128
# slots took 12% longer. (Keys as [B, K, H, S] measured slower again inside the model.)
KVCache = tuple[jax.Array, jax.Array]


def wide(dtype) -> jnp.dtype:
    """The dtype norms, RoPE and softmax compute in: float32, or float64 when the weights are float64."""
    return jnp.promote_types(dtype, jnp.float32)


def init_param(rngs: nnx.Rngs | None, shape: tuple[int, ...], dtype, scale: float | None = None) -> nnx.Param:
    """A normal(0, 1/fan_in) parameter, or a shape-only placeholder when rngs is None (weights come from a file)."""
    if rngs is None:
        return nnx.Param(jax.ShapeDtypeStruct(shape, dtype))
    fan_in = shape[0]
    std = scale if scale is not None else fan_in**-0.5
    return nnx.Param((jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype))


class RMSNorm(nnx.Module):
    """RMSNorm in float32 (float64 for float64 inputs); Gemma scales by (1 + w), Llama by w."""

    def __init__(self, dim: int, eps: float, plus_one: bool, dtype, rngs: nnx.Rngs | None):
        init = jnp.zeros if plus_one else jnp.ones
        self.scale = nnx.Param(
            init((dim,), dtype) if rngs is not None else jax.ShapeDtypeStruct((dim,), dtype)
        )
        self.eps, self.plus_one = eps, plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(wide(x.dtype))
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        w = self.scale[...].astype(x32.dtype)
        return (y * (1.0 + w if self.plus_one else w)).astype(x.dtype)


ROPE_DIGIT, ROPE_LEVELS = 256, 3  # positions as 3 base-256 digits: exact tables cover 2**24 positions


@functools.lru_cache(maxsize=64)
def rope_tables(half: int, base: float, divisors: tuple[float, ...]) -> np.ndarray:
    """cos and sin of digit * 256**level * inv_freq, computed in float64 on the host: [levels, 2, 256, half].
    Why: in float32, `position * inv_freq` rounds the angle to ulp(angle) (3e-5 rad at position 800) before cos/sin
    see it, and that error was the largest part of calib's float32 distance from a float64 forward pass on long
    prompts (docs/architecture.md, Models). Products of table entries are off by a few float32 ulps at any position."""
    inv_freq = 1.0 / base ** (np.arange(half, dtype=np.float64) / half)
    if divisors:
        inv_freq = inv_freq / np.asarray(divisors, np.float64)
    digits = np.arange(ROPE_DIGIT, dtype=np.float64)[:, None]
    angles = np.stack([digits * float(ROPE_DIGIT**level) * inv_freq for level in range(ROPE_LEVELS)])
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def rope_cos_sin(positions: jax.Array, half: int, base: float, divisors: tuple[float, ...], dtype):
    """cos, sin of positions * inv_freq [B, T, half] in dtype, by the angle-addition formula over the digits of
    the position (cos(a + b) = cos a cos b - sin a sin b): no float32 angle is ever formed."""
    tables = jnp.asarray(rope_tables(half, float(base), tuple(divisors)), dtype)
    pos = positions.astype(jnp.int32)
    cos, sin = None, None
    for level in range(ROPE_LEVELS):
        digit = (pos // ROPE_DIGIT**level) % ROPE_DIGIT
        c, s = tables[level, 0][digit], tables[level, 1][digit]
        cos, sin = (c, s) if cos is None else (cos * c - sin * s, sin * c + cos * s)
    return cos, sin


def apply_rope(
    x: jax.Array, positions: jax.Array, base: float, divisors: tuple[float, ...] = ()
) -> jax.Array:
    """Rotary embedding, half-split ("rotate_half") convention as in transformers. x: [B, T, N, H]. divisors
    (one per frequency, static) scale the inverse frequencies down: linear and Llama 3 RoPE scaling."""
    half, w = x.shape[-1] // 2, wide(x.dtype)
    cos, sin = rope_cos_sin(positions, half, base, divisors, w)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    x1, x2 = x[..., :half].astype(w), x[..., half:].astype(w)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def write_cache(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
    """Write new [B, T, K, H] into cache [B, K, S, H] at a per-row slot offset start [B]."""
    update = lambda c, n, s: jax.lax.dynamic_update_slice(c, n, (s * 0, s, s * 0))  # noqa: E731 (int64 under x64)
    return jax.vmap(update)(cache, jnp.swapaxes(new, 1, 2).astype(cache.dtype), start)


def attention_mask(q_pos: jax.Array, k_pos: jax.Array, window: int | None) -> jax.Array:
    """Causal (and optionally sliding-window) mask [B, T, S]: query q sees key k iff 0 <= q - k (< window)."""
    delta = q_pos[:, :, None] - k_pos[:, None, :]
    mask = delta >= 0
    if window is not None:
        mask &= delta < window
    return mask


ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn")
HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def attention_impl(requested: str, dtype, backend: str | None = None) -> str:
    """The implementation multi-token attention (prefill, scoring) runs for `requested` and the compute dtype on
    `backend` (jax.default_backend() when None). "auto": the einsums on CPU (measured faster there, see
    docs/benchmarks.md) and for float64 weights (jax.nn.dot_product_attention takes its softmax in float32); cuDNN's
    fused kernel on GPU for bfloat16/float16, XLA's jax.nn.dot_product_attention otherwise. An explicit "cudnn" that
    cannot run (no GPU, or float32/float64) is refused, not silently replaced."""
    if requested not in ATTENTION_IMPLS:
        raise CalibError(f"unknown attention {requested!r}: choose one of {list(ATTENTION_IMPLS)}")
    backend = backend or jax.default_backend()
    dtype = jnp.dtype(dtype)
    if requested == "auto":
        if backend == "cpu" or dtype == jnp.float64:
            return "einsum"
        return "cudnn" if backend == "gpu" and dtype in HALF_DTYPES else "xla"
    if requested == "cudnn" and (backend != "gpu" or dtype not in HALF_DTYPES):
        raise CalibError(
            f"attention 'cudnn' needs a CUDA GPU and bfloat16/float16 weights (here: {backend}, {dtype.name}); "
            "use attention 'auto', 'xla' or 'einsum'"
        )
    return requested


class Attention(nnx.Module):
    """Grouped-query attention with RoPE, optional q/k/v biases and QK-norm, over a KV cache or the input itself."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs | None):
        d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q = init_param(rngs, (d, n, h), dtype)
        self.k = init_param(rngs, (d, k, h), dtype)
        self.v = init_param(rngs, (d, k, h), dtype)
        self.o = init_param(rngs, (n, h, d), dtype, scale=(n * h) ** -0.5)
        if cfg.qkv_bias:
            self.q_bias = init_param(rngs, (n, h), dtype, scale=0.02)
            self.k_bias = init_param(rngs, (k, h), dtype, scale=0.02)
            self.v_bias = init_param(rngs, (k, h), dtype, scale=0.02)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(h, cfg.norm_eps, cfg.norm_plus_one, dtype, rngs)
            self.k_norm = RMSNorm(h, cfg.norm_eps, cfg.norm_plus_one, dtype, rngs)
        self.cfg = cfg
        self.scale = cfg.query_scale if cfg.query_scale is not None else cfg.head_dim**-0.5
        self.impl = "auto"  # multi-token attention: see attention_impl; transformer.use_attention sets it

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        rope: tuple[float, tuple[float, ...]],
        window: int | None,
        cache: KVCache | None,
    ) -> tuple[jax.Array, KVCache | None]:
        cfg = self.cfg
        q = jnp.einsum("BTD,DNH->BTNH", x, self.q[...])
        k = jnp.einsum("BTD,DKH->BTKH", x, self.k[...])
        v = jnp.einsum("BTD,DKH->BTKH", x, self.v[...])
        if cfg.qkv_bias:
            q, k, v = q + self.q_bias[...], k + self.k_bias[...], v + self.v_bias[...]
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, positions, *rope), apply_rope(k, positions, *rope)

        b, t, n, h = q.shape
        impl = attention_impl(self.impl, q.dtype) if t > 1 else "einsum"  # decode steps: measured, see docs
        if cache is None:
            keys, values, k_pos = k, v, positions  # [B, S, K, H]: dot_product_attention's layout
            if impl == "einsum":
                keys, values = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)
        else:
            keys = write_cache(cache[0], k, positions[:, 0])
            values = write_cache(cache[1], v, positions[:, 0])
            cache = (keys, values)
            k_pos = jnp.broadcast_to(jnp.arange(keys.shape[2]), (x.shape[0], keys.shape[2]))
            if impl != "einsum":
                keys, values = jnp.swapaxes(keys, 1, 2), jnp.swapaxes(values, 1, 2)
        # per-row positions (right padding, cache offsets) and the sliding window as one boolean mask [B, T, S]: a
        # `local_window_size` would count query and key indices from 0 in both, which cache offsets break
        mask = attention_mask(positions, k_pos, window)

        if impl == "einsum":
            out = self._einsum_attention(q, keys, values, mask)
        else:  # GQA by jax's own kv-head grouping (query head n reads kv head n // G, as the einsums do); queries
            # scaled before the product as in the einsums, so both round the same scaled queries in bfloat16
            out = jax.nn.dot_product_attention(
                q * self.scale,
                keys.astype(q.dtype),
                values.astype(q.dtype),
                mask=mask[:, None],
                scale=1.0,
                implementation=impl,
            ).reshape(b, t, n * h)
        # (N, H) flattened on both sides: as a two-axis contraction XLA:CPU transposed the [N, H, D] weights every
        # call (1.3 MB per layer per decode step) instead of the small activations
        o = self.o[...].reshape(n * h, -1)
        return jnp.einsum("BTE,ED->BTD", out.astype(x.dtype), o), cache

    def _einsum_attention(
        self, q: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array
    ) -> jax.Array:
        """q [B, T, N, H], keys and values [B, K, S, H], mask [B, T, S] -> [B, T, N * H]; scores in float32."""
        b, t, n, h = q.shape
        kv = self.cfg.num_kv_heads
        q = (q * self.scale).reshape(b, t, kv, n // kv, h)
        logits = jnp.einsum("BTKGH,BKSH->BKGTS", q, keys.astype(q.dtype)).astype(wide(q.dtype))
        logits = jnp.where(mask[:, None, None], logits, jnp.finfo(logits.dtype).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(values.dtype)
        return jnp.einsum("BKGTS,BKSH->BTKGH", probs, values).reshape(b, t, n * h)


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x)): SwiGLU for Llama, GeGLU-tanh for Gemma."""

    def __init__(self, cfg: ModelConfig, dtype, rngs: nnx.Rngs | None):
        self.gate = init_param(rngs, (cfg.embed_dim, cfg.ffw_dim), dtype)
        self.up = init_param(rngs, (cfg.embed_dim, cfg.ffw_dim), dtype)
        self.down = init_param(rngs, (cfg.ffw_dim, cfg.embed_dim), dtype)
        self.activation = cfg.activation

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = jnp.einsum("BTD,DF->BTF", x, self.gate[...])
        act = jax.nn.silu(gate) if self.activation == "silu" else jax.nn.gelu(gate, approximate=True)
        return jnp.einsum("BTF,FD->BTD", act * jnp.einsum("BTD,DF->BTF", x, self.up[...]), self.down[...])


class Block(nnx.Module):
    """Pre-norm residual block; Gemma 3 adds post-attention and post-MLP norms ("sandwich")."""

    def __init__(self, cfg: ModelConfig, layer: int, dtype, rngs: nnx.Rngs | None):
        norm = lambda: RMSNorm(cfg.embed_dim, cfg.norm_eps, cfg.norm_plus_one, dtype, rngs)  # noqa: E731
        self.pre_attn_norm, self.pre_ffw_norm = norm(), norm()
        if cfg.sandwich_norms:
            self.post_attn_norm, self.post_ffw_norm = norm(), norm()
        self.attn = Attention(cfg, dtype, rngs)
        self.mlp = GatedMLP(cfg, dtype, rngs)
        self.sandwich = cfg.sandwich_norms
        self.window = cfg.sliding_window if cfg.is_sliding(layer) else None
        self.rope = cfg.rope_for(layer)  # (base, divisors): static, so blocks of one kind share a graphdef

    def __call__(
        self, x: jax.Array, positions: jax.Array, cache: KVCache | None
    ) -> tuple[jax.Array, KVCache | None]:
        h, cache = self.attn(self.pre_attn_norm(x), positions, self.rope, self.window, cache)
        x = x + (self.post_attn_norm(h) if self.sandwich else h)
        h = self.mlp(self.pre_ffw_norm(x))
        return x + (self.post_ffw_norm(h) if self.sandwich else h), cache
