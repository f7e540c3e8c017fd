"""The compiled core: prefill, append and a jitted while_loop decode over a per-row KV cache.

Rows are (prompt, sample) pairs. Slot s of a row's cache holds the token at position s, so prompts are right-padded
and every row carries its own next position and stop flag. All shapes are static per call (bucketed by the caller).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.decode.sampling import choose_tokens, token_statistics
from calib.decode.types import Sampling
from calib.devices import constrain, constrain_state
from calib.models.transformer import init_cache

REASON_RUNNING, REASON_STOP, REASON_EOS, REASON_LENGTH = 0, 1, 2, 3


class LayerCache(NamedTuple):
    """One layer's KV cache, [R, K, S, H] each: slot s of row r holds the token at position s."""

    keys: jax.Array
    values: jax.Array


def layer_caches(cache) -> list[LayerCache]:
    """The model's per-layer (keys, values) pairs as named LayerCaches (the loop's carry keeps one structure)."""
    return [LayerCache(*c) for c in cache]


@jax.tree_util.register_dataclass
@dataclass
class DecodeState:
    """Everything needed to continue decoding a batch of rows; every field has the rows as its first axis."""

    cache: list[LayerCache]  # per layer
    positions: jax.Array  # [R] next slot to write
    logits: jax.Array  # [R, V] distribution of the next token
    hidden: jax.Array  # [R, D] hidden state that produced `logits`
    keys: jax.Array  # [R] one PRNG key per row; step keys are fold_in(row key, position), never reused
    done: jax.Array  # [R] bool: the row samples no more in this pass (stopped, or batch padding)
    tokens: jax.Array  # [R] int32: each row's last sampled token, not yet fed to the cache


@jax.tree_util.register_dataclass
@dataclass
class RowSampling:
    """Per-row sampling parameters [R]: changing their values never recompiles."""

    greedy: jax.Array  # bool: argmax instead of a sample
    temperature: jax.Array
    top_p: jax.Array  # read only when SamplingSpec.use_top_p
    min_p: jax.Array  # read only when SamplingSpec.use_min_p

    @classmethod
    def of(cls, sampling: Sampling, greedy: np.ndarray) -> RowSampling:
        """Host arrays of one pass's settings for rows marked `greedy` [R]."""
        full = lambda value: np.full(greedy.shape, value, np.float32)  # noqa: E731
        return cls(
            np.asarray(greedy, bool),
            full(sampling.temperature),
            full(sampling.top_p or 1.0),
            full(sampling.min_p or 0.0),
        )


@jax.tree_util.register_dataclass
@dataclass
class StopCriteria:
    """When a row stops: a token of `stop_mask` or `eos_mask` [V], or `steps` sampled tokens (a traced scalar, so
    one program serves every max_new_tokens up to the record buffer's length)."""

    steps: jax.Array  # int32 []
    stop_mask: jax.Array  # [V] bool
    eos_mask: jax.Array  # [V] bool
    pad_id: jax.Array  # int32 []: what stopped rows feed


@jax.tree_util.register_dataclass
@dataclass
class Record:
    """What one decode call produced, per row and step (the first `steps` of `buffer` columns are written)."""

    tokens: jax.Array  # [R, M] int32
    logprobs: jax.Array  # [R, M] under the untempered model
    sample_logprobs: jax.Array  # [R, M] under the sampling distribution
    entropies: jax.Array  # [R, M]
    top_ids: jax.Array  # [R, M, top]
    top_logprobs: jax.Array  # [R, M, top]
    lengths: jax.Array  # [R] tokens sampled, terminator included
    reasons: jax.Array  # [R] REASON_*
    answer_hidden: jax.Array  # [R, D] hidden state that produced the last sampled token's distribution


@jax.tree_util.register_dataclass
@dataclass
class DecodeLoop:
    """The while_loop's carry: the step about to be sampled, the rows' state and what was sampled so far."""

    step: jax.Array  # int32 []
    state: DecodeState
    record: Record


STEP_FIELDS = ("tokens", "logprobs", "sample_logprobs", "entropies", "top_ids", "top_logprobs")  # [R, M, ...]


@dataclass(frozen=True)
class SamplingSpec:
    """The compiled decoding settings (changing these recompiles); per-row values and lengths live in arrays."""

    buffer: int  # steps the record holds: the largest max_new_tokens this program serves (DecodePlan.buffer)
    top: int = 5
    top_k: int | None = None
    use_top_p: bool = False
    use_min_p: bool = False

    @classmethod
    def of(cls, sampling: Sampling, buffer: int) -> SamplingSpec:
        """What of `sampling` the program depends on: the filters used, top-k and the statistics' width."""
        return cls(
            buffer,
            sampling.top_logprobs,
            sampling.top_k,
            sampling.top_p is not None,
            sampling.min_p is not None,
        )


def row_keys(seed: int, prompt_index: np.ndarray, repeats: int) -> jax.Array:
    """Key of row (prompt g, sample s) = fold_in(fold_in(key(seed), g), s): samples do not depend on batching."""
    return _row_keys(np.asarray(prompt_index, np.int32), seed=seed, repeats=repeats)


@functools.partial(jax.jit, static_argnames=("seed", "repeats"))
def _row_keys(prompt_index: jax.Array, *, seed: int, repeats: int) -> jax.Array:
    base = jax.random.key(seed)
    per_prompt = jax.vmap(lambda g: jax.random.fold_in(base, g))(prompt_index)
    return jax.vmap(lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(jnp.arange(repeats)))(
        per_prompt
    ).reshape(-1)


@functools.partial(jax.jit, static_argnames=("cfg", "rows", "cache_len", "dtype"))
def empty_state(cfg, rows: int, cache_len: int, dtype, keys: jax.Array) -> DecodeState:
    """A state of `rows` rows with a zeroed cache, for `prefill_into` to fill a group of prompts at a time.

    One program (not an eager op per array): eager jnp.zeros builds a program for every new shape."""
    return DecodeState(
        cache=layer_caches(init_cache(cfg, rows, cache_len, dtype)),
        positions=jnp.ones((rows,), jnp.int32),
        logits=jnp.zeros((rows, cfg.vocab_size), jnp.float32),
        hidden=jnp.zeros((rows, cfg.embed_dim), dtype),
        keys=keys,
        done=jnp.zeros((rows,), bool),
        tokens=jnp.zeros((rows,), jnp.int32),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "repeats", "mesh"), donate_argnames=("state",))
def prefill_into(
    graphdef,
    params,
    state: DecodeState,
    ids: jax.Array,
    lengths: jax.Array,
    slots: jax.Array,
    *,
    repeats: int,
    mesh=None,
) -> DecodeState:
    """Encode right-padded prompts [b, P] and write them into the rows of prompt slots [b] (each `repeats` rows).

    Prompts of similar length are encoded together, each group padded only to its own length bucket: one batch of
    200 verbalized-confidence prompts (30 to 83 tokens) no longer pads every prompt to 96. With a `mesh` the
    prompts are split over "data" (each device encodes its share) and the state keeps its layout.
    """
    model = nnx.merge(graphdef, params)
    b, p = ids.shape
    h, cache = model.hidden(
        ids, jnp.broadcast_to(jnp.arange(p), (b, p)), init_cache(model.cfg, b, p, state.hidden.dtype)
    )
    h, cache = constrain(h, mesh, "data"), constrain_state(cache, mesh)
    last = h[jnp.arange(b), lengths - 1]
    rows = (slots[:, None] * repeats + jnp.arange(repeats)[None, :]).reshape(-1)
    rep = lambda x: jnp.repeat(x, repeats, axis=0)  # noqa: E731
    written = [
        LayerCache(old.keys.at[rows, :, :p].set(rep(k)), old.values.at[rows, :, :p].set(rep(v)))
        for old, (k, v) in zip(state.cache, cache)
    ]
    new = replace(
        state,
        cache=written,
        positions=state.positions.at[rows].set(rep(lengths.astype(jnp.int32))),
        logits=state.logits.at[rows].set(rep(model.project(last))),
        hidden=state.hidden.at[rows].set(rep(last)),
    )
    return constrain_state(new, mesh)


@functools.partial(jax.jit, static_argnames=("graphdef", "mesh"), donate_argnames=("state",))
def append(
    graphdef, params, state: DecodeState, ids: jax.Array, lengths: jax.Array, *, mesh=None
) -> DecodeState:
    """Feed right-padded tokens [R, L] (row r uses its first lengths[r]) after each row's current position."""
    model = nnx.merge(graphdef, params)
    r, length = ids.shape
    positions = state.positions[:, None] + jnp.arange(length)[None, :]
    h, cache = model.hidden(ids, positions, state.cache)
    last = h[jnp.arange(r), jnp.maximum(lengths - 1, 0)]
    fed = lengths > 0
    new = replace(
        state,
        cache=layer_caches(cache),
        positions=state.positions + lengths.astype(jnp.int32),
        logits=jnp.where(fed[:, None], model.project(last), state.logits),
        hidden=jnp.where(fed[:, None], last, state.hidden),
    )
    return constrain_state(new, mesh)


@functools.partial(jax.jit, static_argnames=("graphdef", "spec", "mesh"), donate_argnames=("state",))
def decode(
    graphdef,
    params,
    state: DecodeState,
    rows: RowSampling,
    stops: StopCriteria,
    start: jax.Array,
    stop_below: jax.Array,
    feed_first: jax.Array,
    *,
    spec: SamplingSpec,
    mesh=None,
) -> tuple[DecodeState, Record, jax.Array]:
    """Sample steps start, start + 1, ... < stops.steps in one lax.while_loop; returns (state, record, end step).

    Rows with `state.done` set never sample (batch padding). The loop ends when every row has stopped, or early
    once no more than `stop_below` rows are running, so the caller can go on with only those rows in a smaller
    batch (DecodeSession does on CPU, see DecodePlan): it calls again with `feed_first` set, and each row's last
    sampled token (`state.tokens`) is fed before the next step. `feed_first`, the step range and every per-row
    value are traced: one program serves fresh and resumed passes of every length up to `spec.buffer`.
    """
    model = nnx.merge(graphdef, params)
    n_rows, buffer = state.logits.shape[0], spec.buffer
    top_p_arg = rows.top_p if spec.use_top_p else None
    min_p_arg = rows.min_p if spec.use_min_p else None

    def sample(t, state: DecodeState, record: Record) -> tuple[DecodeState, Record]:
        step_keys = jax.vmap(jax.random.fold_in)(state.keys, state.positions)
        tokens, sample_lp = choose_tokens(
            step_keys, state.logits, rows.greedy, rows.temperature, spec.top_k, top_p_arg, min_p_arg
        )
        log_normaliser, entropy, top_ids, top_lp = token_statistics(state.logits, spec.top)
        chosen = jnp.take_along_axis(state.logits, tokens[:, None], axis=-1)[:, 0]
        chosen_lp = chosen.astype(jnp.float32) - log_normaliser
        put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, t, axis=1)  # noqa: E731
        active = ~state.done
        reason = jnp.where(
            stops.stop_mask[tokens],
            REASON_STOP,
            jnp.where(stops.eos_mask[tokens], REASON_EOS, REASON_RUNNING),
        )
        reason = jnp.where((reason == REASON_RUNNING) & (t + 1 >= stops.steps), REASON_LENGTH, reason)
        record = Record(
            tokens=put(record.tokens, tokens),
            logprobs=put(record.logprobs, chosen_lp),
            sample_logprobs=put(record.sample_logprobs, sample_lp),
            entropies=put(record.entropies, entropy),
            top_ids=put(record.top_ids, top_ids),
            top_logprobs=put(record.top_logprobs, top_lp),
            lengths=record.lengths + active,
            reasons=jnp.where(active, reason, record.reasons),
            answer_hidden=jnp.where(active[:, None], state.hidden, record.answer_hidden),
        )
        return replace(state, tokens=tokens, done=state.done | (reason != REASON_RUNNING)), record

    def forward(state: DecodeState) -> DecodeState:
        """Feed each running row its last token (a stopped row's terminator stays unfed, as after any pass)."""
        feed = jnp.where(state.done, stops.pad_id, state.tokens)
        h, cache = model.hidden(feed[:, None], state.positions[:, None], state.cache)
        h = h[:, 0]
        return replace(
            state,
            cache=layer_caches(cache),
            positions=state.positions + (~state.done),
            logits=model.project(h),
            hidden=h,
        )

    def body(loop: DecodeLoop) -> DecodeLoop:
        state, record = sample(loop.step, constrain_state(forward(loop.state), mesh), loop.record)
        return DecodeLoop(loop.step + 1, state, constrain_state(record, mesh))

    def cond(loop: DecodeLoop) -> jax.Array:
        running = jnp.sum(~loop.state.done)
        return (loop.step < stops.steps) & (running > stop_below)

    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((n_rows, *shape), dtype)  # noqa: E731
    record = Record(
        tokens=zeros(buffer, dtype=jnp.int32),
        logprobs=zeros(buffer),
        sample_logprobs=zeros(buffer),
        entropies=zeros(buffer),
        top_ids=zeros(buffer, spec.top, dtype=jnp.int32),
        top_logprobs=zeros(buffer, spec.top),
        lengths=zeros(dtype=jnp.int32),
        reasons=zeros(dtype=jnp.int32),
        answer_hidden=jnp.zeros_like(state.hidden),
    )
    # the first step outside the loop: a resumed pass feeds its pending tokens first, a fresh one samples at once
    state = jax.lax.cond(feed_first, forward, lambda s: s, state)
    state, record = sample(start, state, record)
    record = constrain_state(record, mesh)
    loop = jax.lax.while_loop(cond, body, DecodeLoop(start + 1, state, record))
    return constrain_state(loop.state, mesh), constrain_state(loop.record, mesh), loop.step


@jax.jit
def take_rows(state: DecodeState, rows: jax.Array) -> DecodeState:
    """The state of some rows only (a smaller batch to go on decoding with)."""
    return jax.tree.map(lambda x: x[rows], state)


@functools.partial(jax.jit, donate_argnames=("state",))
def put_rows(state: DecodeState, rows: jax.Array, part: DecodeState) -> DecodeState:
    """Write row i of `part` back into `state` at rows[i]; an index past the last row skips that row of `part`.

    `rows` has one entry per row of `part` (the batch size taken), so one program serves every number of rows
    written back; with one index per written row it was a program per count (21 of the main job's 48 generate
    programs)."""
    return jax.tree.map(lambda x, y: x.at[rows].set(y, mode="drop"), state, part)
