"""The compiled core: prefill, append and a jitted while_loop decode over a per-row KV cache.

Rows are (prompt, sample) pairs. Slot s of a row's cache holds the token at position s, so prompts are right-padded
and every row carries its own next position and stop flag. All shapes are static per call (bucketed by the caller).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from calib.decode.sampling import choose_tokens, token_statistics
from calib.devices import constrain, constrain_state
from calib.models.layers import KVCache
from calib.models.transformer import init_cache

REASON_RUNNING, REASON_STOP, REASON_EOS, REASON_LENGTH = 0, 1, 2, 3


@jax.tree_util.register_dataclass
@dataclass
class DecodeState:
    """Everything needed to continue decoding a batch of rows."""

    cache: list[KVCache]  # per layer (keys, values) [R, K, S, H]
    positions: jax.Array  # [R] next slot to write
    logits: jax.Array  # [R, V] distribution of the next token
    hidden: jax.Array  # [R, D] hidden state that produced `logits`
    keys: jax.Array  # [R] one PRNG key per row; step keys are fold_in(row key, position), never reused


@jax.tree_util.register_dataclass
@dataclass
class Record:
    """What one decode call produced, per row and step."""

    tokens: jax.Array  # [R, M] int32
    logprobs: jax.Array  # [R, M] under the untempered model
    sample_logprobs: jax.Array  # [R, M] under the sampling distribution
    entropies: jax.Array  # [R, M]
    top_ids: jax.Array  # [R, M, top]
    top_logprobs: jax.Array  # [R, M, top]
    lengths: jax.Array  # [R] tokens sampled, terminator included
    reasons: jax.Array  # [R] REASON_*
    answer_hidden: jax.Array  # [R, D] hidden state that produced the last sampled token's distribution


STEP_FIELDS = ("tokens", "logprobs", "sample_logprobs", "entropies", "top_ids", "top_logprobs")  # [R, M, ...]


@dataclass(frozen=True)
class SamplingSpec:
    """Static decoding settings (changing these recompiles); per-row values live in arrays."""

    max_new_tokens: int
    top: int = 5
    top_k: int | None = None
    use_top_p: bool = False
    use_min_p: bool = False


def row_keys(seed: int, prompt_index: jax.Array, repeats: int) -> jax.Array:
    """Key of row (prompt g, sample s) = fold_in(fold_in(key(seed), g), s): samples do not depend on batching."""
    base = jax.random.key(seed)
    per_prompt = jax.vmap(lambda g: jax.random.fold_in(base, g))(prompt_index)
    return jax.vmap(lambda k: jax.vmap(lambda s: jax.random.fold_in(k, s))(jnp.arange(repeats)))(
        per_prompt
    ).reshape(-1)


def empty_state(cfg, rows: int, cache_len: int, dtype, keys: jax.Array) -> DecodeState:
    """A state of `rows` rows with a zeroed cache, for `prefill_into` to fill a group of prompts at a time."""
    return DecodeState(
        cache=init_cache(cfg, rows, cache_len, dtype),
        positions=jnp.ones((rows,), jnp.int32),
        logits=jnp.zeros((rows, cfg.vocab_size), jnp.float32),
        hidden=jnp.zeros((rows, cfg.embed_dim), dtype),
        keys=keys,
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
        (keys.at[rows, :, :p].set(rep(k)), values.at[rows, :, :p].set(rep(v)))
        for (keys, values), (k, v) in zip(state.cache, cache)
    ]
    new = DecodeState(
        cache=written,
        positions=state.positions.at[rows].set(rep(lengths.astype(jnp.int32))),
        logits=state.logits.at[rows].set(rep(model.project(last))),
        hidden=state.hidden.at[rows].set(rep(last)),
        keys=state.keys,
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
    new = DecodeState(
        cache=cache,
        positions=state.positions + lengths.astype(jnp.int32),
        logits=jnp.where(fed[:, None], model.project(last), state.logits),
        hidden=jnp.where(fed[:, None], last, state.hidden),
        keys=state.keys,
    )
    return constrain_state(new, mesh)


@functools.partial(
    jax.jit, static_argnames=("graphdef", "spec", "resume", "mesh"), donate_argnames=("state",)
)
def decode(
    graphdef,
    params,
    state: DecodeState,
    greedy: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    min_p: jax.Array,
    done: jax.Array,
    tokens: jax.Array,
    start: jax.Array,
    stop_below: jax.Array,
    stop_mask: jax.Array,
    eos_mask: jax.Array,
    pad_id: jax.Array,
    *,
    spec: SamplingSpec,
    resume: bool = False,
    mesh=None,
) -> tuple[DecodeState, Record, jax.Array, jax.Array]:
    """Sample steps start, start + 1, ... < spec.max_new_tokens in one lax.while_loop.

    Returns the state, the record, the step the loop ended at and the last sampled tokens. Rows with `done` set
    never sample (batch padding). The loop ends when every row has stopped, or early once no more than
    `stop_below` rows are running, so the caller can go on with only those rows in a smaller batch (DecodeSession
    does): it calls again with `resume=True` and their last `tokens`, which are fed before the next step.
    """
    model = nnx.merge(graphdef, params)
    rows, steps = state.logits.shape[0], spec.max_new_tokens
    top_p_arg = top_p if spec.use_top_p else None
    min_p_arg = min_p if spec.use_min_p else None

    def sample(t, state: DecodeState, record: Record, done: jax.Array):
        step_keys = jax.vmap(jax.random.fold_in)(state.keys, state.positions)
        tokens, sample_lp = choose_tokens(
            step_keys, state.logits, greedy, temperature, spec.top_k, top_p_arg, min_p_arg
        )
        log_normaliser, entropy, top_ids, top_lp = token_statistics(state.logits, spec.top)
        chosen = jnp.take_along_axis(state.logits, tokens[:, None], axis=-1)[:, 0]
        chosen_lp = chosen.astype(jnp.float32) - log_normaliser
        put = lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, t, axis=1)  # noqa: E731
        active = ~done
        reason = jnp.where(
            stop_mask[tokens], REASON_STOP, jnp.where(eos_mask[tokens], REASON_EOS, REASON_RUNNING)
        )
        reason = jnp.where((reason == REASON_RUNNING) & (t + 1 >= steps), REASON_LENGTH, reason)
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
        return record, tokens, done | (reason != REASON_RUNNING)

    def forward(state: DecodeState, tokens: jax.Array, done: jax.Array) -> DecodeState:
        """Feed each running row its last token (a stopped row's terminator stays unfed, as after any pass)."""
        feed = jnp.where(done, pad_id, tokens)
        h, cache = model.hidden(feed[:, None], state.positions[:, None], state.cache)
        h = h[:, 0]
        return DecodeState(cache, state.positions + (~done), model.project(h), h, state.keys)

    def body(carry):
        t, state, record, tokens, done = carry
        state = constrain_state(forward(state, tokens, done), mesh)
        record, tokens, done = sample(t, state, record, done)
        return t + 1, state, constrain_state(record, mesh), tokens, done

    def cond(carry):
        t, _, _, _, done = carry
        running = jnp.sum(~done)
        return (t < steps) & (running > 0) & ((running > stop_below) | (resume & (t == start)))

    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((rows, *shape), dtype)  # noqa: E731
    record = Record(
        tokens=zeros(steps, dtype=jnp.int32),
        logprobs=zeros(steps),
        sample_logprobs=zeros(steps),
        entropies=zeros(steps),
        top_ids=zeros(steps, spec.top, dtype=jnp.int32),
        top_logprobs=zeros(steps, spec.top),
        lengths=zeros(dtype=jnp.int32),
        reasons=zeros(dtype=jnp.int32),
        answer_hidden=jnp.zeros_like(state.hidden),
    )
    t = start
    if not resume:
        record, tokens, done = sample(start, state, record, done)
        t = start + 1
    record = constrain_state(record, mesh)
    end, state, record, tokens, _ = jax.lax.while_loop(cond, body, (t, state, record, tokens, done))
    return constrain_state(state, mesh), constrain_state(record, mesh), end, tokens


@jax.jit
def take_rows(state: DecodeState, rows: jax.Array) -> DecodeState:
    """The state of some rows only (a smaller batch to go on decoding with)."""
    return jax.tree.map(lambda x: x[rows], state)


@functools.partial(jax.jit, donate_argnames=("state",))
def put_rows(state: DecodeState, rows: jax.Array, part: DecodeState) -> DecodeState:
    """Write the first len(rows) rows of `part` back into `state` at `rows`."""
    n = rows.shape[0]
    return jax.tree.map(lambda x, y: x.at[rows].set(y[:n]), state, part)
