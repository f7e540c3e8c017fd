"""generate(): greedy answers and K samples per prompt, with per-token statistics, in a few compiled batches."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from calib.cache import enable_compilation_cache
from calib.decode import session
from calib.decode.planning import bucket, prompts_per_batch
from calib.decode.stops import eos_token_mask, stop_token_mask, truncate_at_stop
from calib.decode.types import Generations
from calib.devices import batch_sharded
from calib.errors import CalibError
from calib.models.lm import LanguageModel
from calib.progress import progress_bar

REASON_NAMES = {session.REASON_STOP: "stop", session.REASON_EOS: "eos", session.REASON_LENGTH: "length"}


def _validate(prompts, num_samples, max_new_tokens, temperature, top_k, top_p, min_p) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise CalibError("generate() needs a non-empty list of prompt strings")
    if not all(isinstance(p, str) for p in prompts):
        raise CalibError("generate() prompts must all be strings")
    if num_samples < 1:
        raise CalibError(f"num_samples must be >= 1, got {num_samples}")
    if max_new_tokens < 1:
        raise CalibError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or math.isnan(temperature):
        raise CalibError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise CalibError(f"top_p must lie in (0, 1], got {top_p}")
    if min_p is not None and not 0 <= min_p < 1:
        raise CalibError(f"min_p must lie in [0, 1), got {min_p}")
    if top_k is not None and top_k < 1:
        raise CalibError(f"top_k must be >= 1, got {top_k}")


def encode_prompts(lm: LanguageModel, prompts: Sequence[str], room: int) -> list[list[int]]:
    """Token ids of each prompt, checked against the context with `room` tokens left for the answer."""
    encoded = [lm.encode(p) for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise CalibError(f"prompt {i} is empty after tokenization: give it some text")
        if len(ids) + room > lm.config.max_context:
            raise CalibError(
                f"prompt {i} has {len(ids)} tokens; with {room} new tokens it exceeds {lm.name}'s context of "
                f"{lm.config.max_context}: shorten it or lower max_new_tokens"
            )
    return encoded


def generate(
    lm: LanguageModel,
    prompts: Sequence[str],
    num_samples: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    greedy: bool = False,
    include_greedy: bool = False,
    stop: Sequence[str] = ("\n",),
    seed: int = 0,
    top_logprobs: int = 5,
    memory_budget: int | None = None,
    max_rows: int = 256,
    progress: bool = False,
) -> Generations:
    """Decode each prompt K times (or once greedily) in one compiled loop per batch.

    With include_greedy=True each prompt also gets a greedy answer as sample 0 (so K + 1 answers; see
    Generations.split_greedy). Same arguments and seed -> identical samples, on one device or several.
    """
    _validate(prompts, num_samples, max_new_tokens, temperature, top_k, top_p, min_p)
    enable_compilation_cache()
    stop = tuple(stop or ())
    cfg = lm.config
    started = time.perf_counter()
    encoded = encode_prompts(lm, prompts, max_new_tokens)
    k = 1 if greedy else num_samples
    rows_per_prompt = k + (1 if include_greedy and not greedy else 0)
    row_greedy = np.array(([True] if rows_per_prompt > k else []) + [greedy] * k)
    prompt_len = bucket(max(len(e) for e in encoded))
    cache_len = prompt_len + bucket(max_new_tokens)
    spec = session.SamplingSpec(max_new_tokens, top_logprobs, top_k, top_p is not None, min_p is not None)
    n_dev = lm.mesh.devices.size if lm.mesh is not None else 1
    per_batch = prompts_per_batch(
        cfg,
        len(prompts),
        rows_per_prompt,
        cache_len,
        max_new_tokens,
        top_logprobs,
        jnp.dtype(lm.dtype).itemsize,
        memory_budget,
        max_rows,
        n_dev,
    )
    graphdef, params = lm.graphdef_and_state
    masks = (
        jnp.asarray(stop_token_mask(lm.tokenizer, stop, cfg.vocab_size)),
        jnp.asarray(eos_token_mask(lm.eos_ids, cfg.vocab_size)),
    )
    rows_sharding = batch_sharded(lm.mesh) if lm.mesh is not None and n_dev > 1 else None
    records = []
    starts = range(0, len(prompts), per_batch)
    for start in progress_bar(starts, "generate", enabled=progress, unit="batch"):
        chunk = encoded[start : start + per_batch]
        ids = np.full((per_batch, prompt_len), cfg.pad_id, np.int32)
        lengths = np.ones(per_batch, np.int32)
        for j, e in enumerate(chunk):
            ids[j, : len(e)], lengths[j] = e, len(e)
        keys = session.row_keys(seed, jnp.arange(start, start + per_batch), rows_per_prompt)
        ids, lengths = jnp.asarray(ids), jnp.asarray(lengths)
        if rows_sharding is not None:
            ids, lengths, keys = jax.device_put((ids, lengths, keys), batch_sharded(lm.mesh))
        state = session.prefill(
            graphdef, params, ids, lengths, keys, cache_len=cache_len, repeats=rows_per_prompt
        )
        rows = per_batch * rows_per_prompt
        per_row = (
            jnp.asarray(np.tile(row_greedy, per_batch)),
            jnp.full((rows,), temperature, jnp.float32),
            jnp.full((rows,), top_p or 1.0, jnp.float32),
            jnp.full((rows,), min_p or 0.0, jnp.float32),
        )
        if rows_sharding is not None:
            state = jax.device_put(state, _state_shardings(state, lm.mesh))
            per_row = jax.device_put(per_row, rows_sharding)
        _, record = session.decode(
            graphdef, params, state, *per_row, *masks, jnp.int32(cfg.pad_id), spec=spec
        )
        records.append((len(chunk), jax.device_get(record)))
    gens = _collect(lm, prompts, records, rows_per_prompt, stop)
    gens.meta.update(
        num_samples=k,
        include_greedy=rows_per_prompt > k,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        stop=list(stop),
        seed=seed,
        seconds=time.perf_counter() - started,
        prompt_tokens=int(sum(map(len, encoded))),
    )
    return gens


def _state_shardings(state: session.DecodeState, mesh):
    rows = batch_sharded(mesh)
    return session.DecodeState(
        cache=jax.tree.map(lambda _: rows, state.cache),
        positions=rows,
        logits=rows,
        hidden=rows,
        keys=rows,
    )


def _collect(lm: LanguageModel, prompts, records, rows_per_prompt: int, stop: tuple[str, ...]) -> Generations:
    """Host side: cut each row at its terminator or stop string and regroup rows as [prompt][sample]."""
    fields = {
        name: []
        for name in (
            "texts",
            "token_ids",
            "token_logprobs",
            "sample_logprobs",
            "token_entropies",
            "top_ids",
            "top_logprobs",
            "stop_reasons",
        )
    }
    hidden = []
    for n_prompts, rec in records:
        for p in range(n_prompts):
            per_sample = {name: [] for name in fields}
            for s in range(rows_per_prompt):
                r = p * rows_per_prompt + s
                n, reason = int(rec.lengths[r]), int(rec.reasons[r])
                if reason == session.REASON_EOS:
                    n -= 1
                text, kept, found = truncate_at_stop(lm.tokenizer, rec.tokens[r, :n], stop)
                name = (
                    "stop" if found or reason == session.REASON_STOP else REASON_NAMES.get(reason, "length")
                )
                per_sample["texts"].append(text.strip())
                per_sample["token_ids"].append(rec.tokens[r, :kept])
                per_sample["token_logprobs"].append(rec.logprobs[r, :kept])
                per_sample["sample_logprobs"].append(rec.sample_logprobs[r, :kept])
                per_sample["token_entropies"].append(rec.entropies[r, :kept])
                per_sample["top_ids"].append(rec.top_ids[r, :kept])
                per_sample["top_logprobs"].append(rec.top_logprobs[r, :kept])
                per_sample["stop_reasons"].append(name)
            for name in fields:
                fields[name].append(per_sample[name])
            hidden.append(
                np.asarray(rec.answer_hidden[p * rows_per_prompt : (p + 1) * rows_per_prompt], np.float32)
            )
    return Generations(prompts=list(prompts), hidden=hidden, **fields)
