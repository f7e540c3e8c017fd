"""The decoder: embedding, a stack of blocks, final norm and (tied) output head."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from calib.models.config import ModelConfig
from calib.models.layers import Attention, Block, KVCache, RMSNorm, attention_impl, init_param
from calib.models.quant import QArray, head_logits, stack_qarrays


class Transformer(nnx.Module):
    """Decoder-only LM. `hidden` and `project` are separate so samplers compute logits only where needed."""

    def __init__(self, cfg: ModelConfig, *, dtype=jnp.float32, rngs: nnx.Rngs | None):
        """Random weights from rngs; rngs=None builds shape-only placeholders that a checkpoint fills (params.py)."""
        self.cfg = cfg
        self.dtype = jnp.dtype(dtype)  # the compute dtype (int8 weights dequantize to it)
        self.embedding = init_param(rngs, (cfg.vocab_size, cfg.embed_dim), dtype, scale=0.02)
        self.blocks = nnx.List([Block(cfg, i, dtype, rngs) for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.embed_dim, cfg.norm_eps, cfg.norm_plus_one, dtype, rngs)
        if not cfg.tie_embeddings:
            self.head = init_param(rngs, (cfg.embed_dim, cfg.vocab_size), dtype, scale=0.02)

    def hidden(
        self, ids: jax.Array, positions: jax.Array, cache: list[KVCache] | None = None
    ) -> tuple[jax.Array, list[KVCache] | None]:
        """ids, positions [B, T] -> final-normed hidden states [B, T, D] and the updated cache."""
        emb = self.embedding.get_value()
        quantized = isinstance(emb, QArray)
        x = emb.rows(ids) if quantized else jnp.take(emb, ids, axis=0)
        if self.cfg.scale_embeddings:
            x = x * jnp.asarray(self.cfg.embed_dim**0.5, dtype=x.dtype)
        new_cache, i = [], 0
        for block in self.blocks:
            if isinstance(block, BlockRun):
                x, run_cache = block(x, positions, None if cache is None else cache[i : i + block.length])
                new_cache.extend(run_cache or [])
                i += block.length
                continue
            graphdef, state = nnx.split(block)
            if quantized:  # this block's weights are converted only once the previous block's output exists
                state, x = jax.lax.optimization_barrier((state, x))
            x, layer_cache = _block(graphdef, state, x, positions, None if cache is None else cache[i])
            new_cache.append(layer_cache)
            i += 1
        return self.final_norm(x), (None if cache is None else new_cache)

    def project(self, h: jax.Array, dtype=jnp.float32) -> jax.Array:
        """Hidden states [..., D] -> float32 logits [..., V] (the decoders' contract, whatever the weights)."""
        weight = (self.embedding if self.cfg.tie_embeddings else self.head).get_value()
        if isinstance(weight, QArray):
            return head_logits(h, weight, 0 if self.cfg.tie_embeddings else 1, dtype)
        if self.cfg.tie_embeddings:
            logits = jnp.einsum("...D,VD->...V", h, self.embedding[...])
        else:
            logits = jnp.einsum("...D,DV->...V", h, self.head[...])
        return logits.astype(dtype)

    def __call__(self, ids: jax.Array, positions: jax.Array | None = None) -> jax.Array:
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
        h, _ = self.hidden(ids, positions)
        return self.project(h, jnp.promote_types(h.dtype, jnp.float32))  # float64 weights: float64 logits


class BlockRun(nnx.Module):
    """Consecutive blocks of one kind (same window and RoPE) with their parameters stacked on a leading layer axis
    and run under `lax.scan`: XLA converts one layer's int8 weights per iteration into one reused buffer. Unrolled,
    the conversions of every layer were materialised side by side (measured 2-5x slower than scan on CPU)."""

    def __init__(self, blocks: list[Block]):
        self.length = len(blocks)
        self.block = blocks[0]  # the template: its parameters become the stacked ones
        states = [nnx.state(b) for b in blocks]
        stack = lambda *a: stack_qarrays(a) if isinstance(a[0], QArray) else jnp.stack(a)  # noqa: E731
        nnx.update(self.block, jax.tree.map(stack, *states, is_leaf=lambda v: isinstance(v, QArray)))

    def __call__(
        self, x: jax.Array, positions: jax.Array, cache: list[KVCache] | None
    ) -> tuple[jax.Array, list[KVCache] | None]:
        graphdef, state = nnx.split(self.block)
        stacked = None if cache is None else jax.tree.map(lambda *c: jnp.stack(c), *cache)

        def layer(x, inputs):
            layer_state, layer_cache = inputs
            return nnx.merge(graphdef, layer_state)(x, positions, layer_cache)

        x, out = jax.lax.scan(layer, x, (state, stacked))
        if cache is None:
            return x, None
        return x, [(out[0][j], out[1][j]) for j in range(self.length)]


def stack_runs(model: Transformer) -> Transformer:
    """Replace runs of two or more consecutive blocks of one kind by BlockRuns (done for int8 weights, in place)."""
    blocks, cfg = list(model.blocks), model.cfg
    kind = lambda i: (cfg.is_sliding(i), cfg.rope_for(i))  # noqa: E731
    items, start = [], 0
    for end in range(1, len(blocks) + 1):
        if end == len(blocks) or kind(end) != kind(start):
            run = blocks[start:end]
            items.append(BlockRun(run) if len(run) > 1 else run[0])
            start = end
    model.blocks = nnx.List(items)
    return model


@functools.partial(jax.jit, static_argnums=0)
def _block(graphdef, state, x, positions, cache):
    """One block as its own jitted function: blocks of one kind share a graphdef, so a model of L blocks is traced
    and lowered once per kind, not L times. XLA inlines the calls before optimizing, so run time does not change."""
    return nnx.merge(graphdef, state)(x, positions, cache)


def use_attention(model: Transformer, impl: str) -> Transformer:
    """Run multi-token attention with `impl` (auto | einsum | xla | cudnn; layers.attention_impl), in place. Checked
    now, so a "cudnn" that cannot run fails before anything compiles. Call it before nnx.split: the choice is part of
    the graphdef (a LanguageModel splits once, so set it on lm.model before the first call)."""
    attention_impl(impl, model.dtype)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, Attention):
            node.impl = impl
    return model


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> list[KVCache]:
    """Zeroed KV cache: one (keys, values) pair of [B, K, S, H] per layer."""
    shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(cfg.num_layers)]


def cache_bytes(cfg: ModelConfig, batch: int, length: int, dtype=jnp.float32) -> int:
    """Bytes a KV cache of this size needs, computed before allocating."""
    return 2 * cfg.num_layers * batch * length * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize
