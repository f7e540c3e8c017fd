"""The decode plan: programs counted, one compiled decode program for every length, and the same tokens whatever
the length asked for or the batch a prompt is decoded in."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib.pipeline import programs


def test_program_counter_counts_each_new_shape_once():
    """Cross-checked against jit's own cache of traced shapes: one program per new shape, none for a repeat."""
    programs.install()
    programs.install()  # idempotent: a second install must not double-count

    @jax.jit
    def twice_plus_one(x):
        return x * 2 + 1

    before = programs.snapshot()
    for n in (3, 5, 7, 5, 3):
        twice_plus_one(np.arange(n, dtype=np.float32))
    built = programs.snapshot().since(before)
    assert built.programs == twice_plus_one._cache_size() == 3
    assert built.by_function == {"jit(twice_plus_one)": 3}
    assert 0 <= built.loaded <= built.programs and built.compiled == built.programs - built.loaded
    record = built.record()
    assert record["programs"] == 3 and record["by_function"] == {"jit(twice_plus_one)": 3}


def test_numpy_inputs_build_no_extra_programs():
    """Why the decode code hands numpy arrays to its jitted functions: jnp.asarray builds a program per shape."""
    programs.install()
    before = programs.snapshot()
    jax.jit(lambda x: x + 1)(np.ones(11, np.int32))
    assert programs.snapshot().since(before).programs == 1


PROMPTS = ["hello there", "what is the capital of France?", "x", "a b c d e f g"]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


def test_one_decode_program_serves_every_length_with_identical_tokens(tiny_llama):
    """max_new_tokens is traced: 5, 9 and 16 new tokens run the same program (no decode compiled after the first)
    and a shorter answer is exactly the start of a longer one, tokens and log-probs bit for bit."""
    from calib.decode import generate

    programs.install()
    kwargs = dict(num_samples=3, include_greedy=True, stop=(), seed=11)
    longest = generate(tiny_llama, PROMPTS, max_new_tokens=16, **kwargs)
    before = programs.snapshot()
    for steps in (5, 9):
        short = generate(tiny_llama, PROMPTS, max_new_tokens=steps, **kwargs)
        for i in range(len(PROMPTS)):
            for k in range(4):
                n = len(short.token_ids[i][k])
                assert n <= steps and (n == steps or short.stop_reasons[i][k] == "eos")
                np.testing.assert_array_equal(short.token_ids[i][k], longest.token_ids[i][k][:n])
                np.testing.assert_array_equal(short.token_logprobs[i][k], longest.token_logprobs[i][k][:n])
                np.testing.assert_array_equal(short.top_ids[i][k], longest.top_ids[i][k][:n])
    built = programs.snapshot().since(before).by_function
    assert built.get("jit(decode)", 0) == 0 and built.get("jit(prefill_into)", 0) == 0, built


def test_log_probs_equal_the_full_forward_pass_in_any_batch(tiny_llama):
    """A prompt decoded alone or among others gives the same tokens; each token's log-prob and entropy equal a
    numpy log-softmax of the model's plain (cache-free) forward pass over prompt + answer."""
    from calib.decode import generate

    kwargs = dict(num_samples=2, include_greedy=True, max_new_tokens=7, stop=(), seed=5)
    together = generate(tiny_llama, PROMPTS, **kwargs)
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny_llama, [prompt], prompt_index_offset=i, **kwargs)
        assert alone.texts[0] == together.texts[i]
        prompt_ids = tiny_llama.encode(prompt)
        for k in range(3):
            ids = list(together.token_ids[i][k])
            np.testing.assert_array_equal(alone.token_ids[0][k], ids)
            logp = _log_softmax(tiny_llama.logits([prompt_ids + ids])[0])
            at = np.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(ids))
            np.testing.assert_allclose(together.token_logprobs[i][k], logp[at, ids], atol=2e-5)
            np.testing.assert_allclose(alone.token_logprobs[0][k], together.token_logprobs[i][k], atol=1e-5)
            entropy = -(np.exp(logp[at]) * logp[at]).sum(-1)
            np.testing.assert_allclose(together.token_entropies[i][k], entropy, atol=2e-4)


def test_each_backend_gets_its_plan():
    from calib.decode.planning import CPU_PLAN, decode_plan

    assert decode_plan("cpu") is CPU_PLAN and decode_plan() is decode_plan(jax.default_backend())
    assert (
        CPU_PLAN.stop_below(176) == 44 and CPU_PLAN.stop_below(16) == 0
    )  # shrink only batches of >= 32 rows
    assert [CPU_PLAN.shrunk_rows(n, 1) for n in (1, 8, 9, 44)] == [8, 8, 16, 64]
    assert CPU_PLAN.shrunk_rows(9, 3) % 3 == 0
    for backend in ("gpu", "tpu"):
        plan = decode_plan(backend)
        assert not plan.shrink and plan.stop_below(1024) == 0 and plan.max_rows > CPU_PLAN.max_rows
    assert [CPU_PLAN.buffer(n) for n in (1, 8, 16, 17, 40)] == [16, 16, 16, 32, 64]


@pytest.mark.parametrize(("prompts", "length"), [(4, 64), (16, 128), (8, 256)])
def test_prefill_memory_estimate_bounds_what_xla_allocates(tiny_llama, prompts, length):
    """prefill_bytes (attention scores [B, K, G, P, P] f32, activations, cache) is an upper bound of the temporaries
    and outputs XLA's compiled prefill really allocates, and not a wild one (within 2x)."""
    from flax import nnx

    from calib.decode.planning import prefill_bytes
    from calib.models.transformer import init_cache

    graphdef, params = tiny_llama.graphdef_and_state
    cfg = tiny_llama.config

    def prefill(params, ids):
        b, p = ids.shape
        model = nnx.merge(graphdef, params)
        return model.hidden(ids, jnp.broadcast_to(jnp.arange(p), (b, p)), init_cache(cfg, b, p))

    shape = jax.ShapeDtypeStruct((prompts, length), jnp.int32)
    analysis = jax.jit(prefill).lower(params, shape).compile().memory_analysis()
    used = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    assert used <= prefill_bytes(cfg, prompts, length, 4) <= 2 * used


def test_accelerator_batches_leave_room_for_prefill(tiny_llama):
    """On an accelerator plan the budget first sets aside one prefill call, so long prompts get fewer per batch."""
    from calib.decode.planning import cache_length, decode_plan, prefill_bytes, prompts_per_batch

    cfg, plan = tiny_llama.config, decode_plan("gpu")
    args = (cfg, 512, 11, cache_length(400, 16), 16, 5, 4)
    budget = 64 * prefill_bytes(cfg, 1, 400, 4)
    cpu = prompts_per_batch(*args, budget, 10**6, 1)
    gpu = prompts_per_batch(*args, budget, 10**6, 1, plan=plan, longest_prompt=400)
    assert 1 <= gpu < cpu


def test_prefill_groups_shrink_to_fit_on_an_accelerator(tiny_llama):
    from calib.decode.planning import (
        decode_plan,
        free_memory_bytes,
        prefill_bytes,
        prefill_group_for,
        prefill_group_size,
    )

    cfg = tiny_llama.config
    assert (
        prefill_group_for(decode_plan("cpu"), cfg, 500, 4) == 16
    )  # CPU: the measured group, whatever the length
    gpu = decode_plan("gpu")
    group = prefill_group_for(gpu, cfg, 500, 4)
    assert 1 <= group <= gpu.prefill_group and prefill_bytes(cfg, group, 512, 4) <= free_memory_bytes() // 4
    budget = prefill_bytes(cfg, 5, 512, 4)  # room for 5 prompts: the largest power of two that fits is 4
    assert prefill_group_size(gpu, cfg, 512, 4, budget) == 4


def test_cache_lengths_are_few_fixed_sizes():
    """Cache slots are multiples of 64 and hold the prompt bucket plus the room: the main job's shards (longest
    prompts 89 to 117 tokens, 16 new tokens) share two cache lengths instead of three."""
    from calib.decode.planning import CACHE_STEP, bucket, bucket_length, cache_length

    for prompt in range(1, 700, 7):
        for room in (1, 8, 16, 24, 100):
            slots = cache_length(prompt, room)
            assert slots % CACHE_STEP == 0 and bucket_length(prompt) + bucket(room) <= slots
            assert slots < bucket_length(prompt) + bucket(room) + CACHE_STEP
    assert {cache_length(n, 16) for n in (89, 116, 109, 117, 112, 107)} == {128, 192}


def test_rows_written_back_need_one_program_for_any_count():
    """put_rows writes a taken batch back with out-of-range indices for its idle rows: the result is numpy's
    assignment of the running rows only, and 1, 3 or 5 running rows of an 8-row part share one program."""
    from calib.decode import session

    rng = np.random.default_rng(0)
    base = {"a": rng.normal(size=(20, 3)).astype(np.float32), "b": np.arange(20, dtype=np.int32)}
    part = {"a": rng.normal(size=(8, 3)).astype(np.float32), "b": 100 + np.arange(8, dtype=np.int32)}
    take = rng.permutation(20)[:8]
    programs.install()
    before = programs.snapshot()
    for running in (1, 3, 5):
        rows = np.where(np.arange(8) < running, take, 20).astype(np.int32)
        got = session.put_rows(jax.tree.map(np.copy, base), rows, part)
        for name in base:
            want = base[name].copy()
            want[take[:running]] = part[name][:running]
            np.testing.assert_array_equal(np.asarray(got[name]), want)
    assert programs.snapshot().since(before).by_function.get("jit(put_rows)", 0) == 1
