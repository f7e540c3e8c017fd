"""generate(): greedy answers and K samples per prompt, with per-token statistics, in a few compiled batches."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from calib.decode.continuation import DecodeSession, collect
from calib.decode.planning import DecodePlan, cache_length, decode_plan, prompts_per_batch
from calib.decode.types import Generations, Sampling
from calib.devices import data_size
from calib.errors import CalibError
from calib.models.lm import LanguageModel
from calib.progress import progress_bar


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
    prompt_index_offset: int = 0,
    top_logprobs: int = 5,
    memory_budget: int | None = None,
    max_rows: int | None = None,
    progress: bool = False,
    plan: DecodePlan | None = None,
) -> Generations:
    """Decode each prompt K times (or once greedily) in one compiled loop per batch.

    With include_greedy=True each prompt also gets a greedy answer as sample 0 (so K + 1 answers; see
    Generations.split_greedy). Same arguments and seed -> identical samples, on one device or several, in any
    batch size. Row randomness depends on (seed, prompt_index_offset + prompt position, sample index), so a caller
    that generates a long list in shards passes each shard's offset and gets exactly the one-call result.
    Batch sizes follow `plan` (default: the backend's DecodePlan; max_rows: its row cap unless given).
    """
    _validate(prompts, num_samples, max_new_tokens, temperature, top_k, top_p, min_p)
    sampling = Sampling(max_new_tokens, temperature, top_p, top_k, min_p, tuple(stop or ()), top_logprobs)
    started = time.perf_counter()
    encoded = encode_prompts(lm, prompts, max_new_tokens)
    k = 1 if greedy else num_samples
    rows_per_prompt = k + (1 if include_greedy and not greedy else 0)
    greedy_rows = ([True] if rows_per_prompt > k else []) + [greedy] * k
    n_dev = data_size(lm.mesh)  # rows per batch: a multiple of the "data" axis
    plan = plan or decode_plan()
    per_batch = prompts_per_batch(
        lm.config,
        len(prompts),
        rows_per_prompt,
        cache_length(max(map(len, encoded)), max_new_tokens),
        plan.buffer(max_new_tokens),  # the record the loop fills is the plan's buffer long
        top_logprobs,
        jnp.dtype(lm.dtype).itemsize,
        memory_budget,
        max_rows or plan.max_rows,
        n_dev,
        plan=plan,
        longest_prompt=max(map(len, encoded)),
    )
    # batches of similar length: less padding in prefill and shorter caches to attend over in every decode step
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    records = []
    for start in progress_bar(range(0, len(prompts), per_batch), "generate", enabled=progress, unit="batch"):
        members = order[start : start + per_batch]
        decoder = DecodeSession(
            lm,
            [encoded[i] for i in members],
            rows_per_prompt,
            greedy_rows,
            max_new_tokens,
            seed,
            batch_prompts=per_batch,
            prompt_indices=[prompt_index_offset + i for i in members],
            plan=plan,
        )
        records.append((len(members), decoder.decode(sampling)))
    gens = collect(lm, [prompts[i] for i in order], records, rows_per_prompt, sampling.stop)
    gens = gens.reorder(np.argsort(order))
    gens.meta.update(
        num_samples=k,
        include_greedy=rows_per_prompt > k,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        stop=list(sampling.stop),
        seed=seed,
        prompt_index_offset=prompt_index_offset,
        seconds=time.perf_counter() - started,
        prompt_tokens=int(sum(map(len, encoded))),
    )
    return gens
