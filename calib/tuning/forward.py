"""Teacher-forced passes that expose what the decoders keep inside: every block's output (for probes) and the
frozen-below / adapted-above split of a LoRA step. They call the model's own modules (embedding, blocks, final norm)
in the order `Transformer.hidden` does, so they follow any change to the layers."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.decode.planning import bucket_length
from calib.progress import progress_bar


def embed(model: nnx.Module, ids: jax.Array) -> jax.Array:
    """Token embeddings as `Transformer.hidden` computes them (scaled for Gemma)."""
    emb = model.embedding[...]
    x = jnp.take(emb, ids, axis=0)
    if model.cfg.scale_embeddings:
        x = x * jnp.asarray(model.cfg.embed_dim**0.5, dtype=emb.dtype)
    return x


def run_blocks(model: nnx.Module, x: jax.Array, positions: jax.Array, start: int, stop: int) -> jax.Array:
    """Blocks start..stop-1 over x [B, T, D] without a cache."""
    for block in list(model.blocks)[start:stop]:
        x, _ = block(x, positions, None)
    return x


@functools.partial(jax.jit, static_argnames=("graphdef", "layers"))
def _layer_states(graphdef, state, ids, lengths, first, last, *, layers: tuple[int, ...]):
    """[B, len(layers), 2, D]: the mean over answer tokens [first, last) and the last answer token's state, after
    each requested block (index L = the final norm's output, what the LM head reads)."""
    model = nnx.merge(graphdef, state)
    b, t = ids.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    x = embed(model, ids)
    outs = {}
    n = len(model.blocks)
    for i, block in enumerate(model.blocks):
        x, _ = block(x, positions, None)
        if i + 1 in layers and i + 1 < n:
            outs[i + 1] = x
    outs[n] = model.final_norm(x)
    in_answer = (jnp.arange(t)[None, :] >= first[:, None]) & (jnp.arange(t)[None, :] < last[:, None])
    weights = in_answer / jnp.maximum(in_answer.sum(1, keepdims=True), 1)
    rows = []
    for layer in layers:
        h = outs[layer].astype(jnp.float32)
        mean = jnp.einsum("BT,BTD->BD", weights.astype(jnp.float32), h)
        final = h[jnp.arange(b), jnp.maximum(last - 1, 0)]
        rows.append(jnp.stack([mean, final], axis=1))
    del lengths
    return jnp.stack(rows, axis=1)


def answer_states(
    lm,
    prompts: Sequence[str],
    answers: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 16,
    progress: bool = False,
) -> np.ndarray:
    """Hidden states of each answer after its prompt, float32 [N, len(layers), 2, D]: index 0 of the third axis is
    the mean over the answer's tokens, 1 the last answer token. Layer l is the output of block l (1..L-1), and L
    the final-normed state the LM head reads. An empty answer reads the prompt's last token."""
    layers = tuple(int(layer) for layer in layers)
    graphdef, state = lm.graphdef_and_state
    rows = []
    for p, a in zip(prompts, answers):
        prompt_ids = lm.encode(p)
        answer_ids = lm.tokenizer(a, add_special_tokens=False)["input_ids"] if a else []
        ids = (prompt_ids + list(answer_ids))[: lm.config.max_context]
        first = min(len(prompt_ids), len(ids) - 1) if answer_ids else len(ids) - 1
        rows.append((ids, first, len(ids)))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out = np.zeros((len(rows), len(layers), 2, lm.config.embed_dim), np.float32)
    starts = range(0, len(order), batch_size)
    for s in progress_bar(starts, "answer states", enabled=progress, unit="batch"):
        chosen = order[s : s + batch_size]
        t = bucket_length(max(len(rows[i][0]) for i in chosen))
        ids = np.zeros((batch_size, t), np.int32)
        first, last = np.zeros(batch_size, np.int32), np.ones(batch_size, np.int32)
        for r, i in enumerate(chosen):
            ids[r, : len(rows[i][0])] = rows[i][0]
            first[r], last[r] = rows[i][1], rows[i][2]
        states = _layer_states(graphdef, state, ids, last, first, last, layers=layers)
        out[chosen] = np.asarray(states)[: len(chosen)]
    return out
