"""Sampler correctness on tiny models: greedy = argmax decoding, log-probs = score, seeds, filters, devices."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.decode import generate, score, score_with_stats
from calib.decode.sampling import choose_tokens
from calib.errors import CalibError

PROMPTS = ["hello there", "what is the capital of France?", "x"]


def _argmax_decode(lm, prompt, steps):
    ids = lm.encode(prompt)
    out = []
    for _ in range(steps):
        nxt = int(lm.logits([ids + out])[0, -1].argmax())
        out.append(nxt)
        if nxt in lm.eos_ids:
            break
    return out


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])
def test_greedy_equals_step_by_step_argmax(name, request):
    lm = request.getfixturevalue(name)
    gens = generate(
        lm, PROMPTS, greedy=True, max_new_tokens=24, stop=()
    )  # tiny-gemma3's window is 8: exercised
    for i, prompt in enumerate(PROMPTS):
        expected = _argmax_decode(lm, prompt, 24)
        got = list(gens.token_ids[i][0])
        if gens.stop_reasons[i][0] == "eos":
            expected = expected[:-1]
        assert got == expected


def test_token_logprobs_equal_teacher_forced_score(tiny_gemma3):
    gens = generate(tiny_gemma3, PROMPTS, num_samples=3, max_new_tokens=16, stop=(), seed=3)
    pairs = [
        (PROMPTS[i], ids, lp)
        for i in range(3)
        for ids, lp in zip(gens.token_ids[i], gens.token_logprobs[i])
        if len(ids)
    ]
    scored = score(tiny_gemma3, [p for p, _, _ in pairs], [ids for _, ids, _ in pairs])
    flat = [lp for _, _, lp in pairs]
    assert len(flat) >= 6
    for a, b in zip(scored, flat):
        np.testing.assert_allclose(a, b, atol=1e-4)
    ent = gens.token_entropies[0][0]
    assert (ent >= 0).all() and (ent <= np.log(tiny_gemma3.config.vocab_size) + 1e-4).all()


@pytest.mark.parametrize(
    "common", ["", "Instructions shared by every prompt of the call: answer (A) or (B). "]
)
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])
def test_score_equals_log_softmax_of_full_logits_with_shared_prompts(name, common, request):
    """score() encodes a prefix common to all prompts once, each prompt once, and lets pairs that share a prompt
    reuse its cache; every continuation's log-probs still equal log_softmax(lm.logits(prompt + continuation)) at
    its positions. The long prompt crosses tiny Gemma's sliding window (8)."""
    lm = request.getfixturevalue(name)
    long_prompt = " ".join(["word"] * 40)
    prompts = [common + p for p in ["hello there"] * 3 + ["x"] + [long_prompt] * 2]
    conts = [" (A)", " (B)", " maybe so", " y", " yes", " no, never again"]
    scored = score(lm, prompts, conts, batch_size=2)
    for p, c, got in zip(prompts, conts, scored):
        p_ids, c_ids = lm.encode(p), lm.tokenizer(c, add_special_tokens=False)["input_ids"]
        logp = jax.nn.log_softmax(lm.logits([p_ids + c_ids])[0], axis=-1)
        expected = [float(logp[len(p_ids) - 1 + t, tok]) for t, tok in enumerate(c_ids)]
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_common_prefix_is_found_and_leaves_every_prompt_a_token():
    from calib.decode.score import _shared_prefix

    assert _shared_prefix([([1, 2, 3, 4], [9]), ([1, 2, 3, 5, 6], [9])]) == 3
    assert _shared_prefix([([1, 2, 3], [9]), ([1, 2, 3, 4], [9])]) == 2
    assert _shared_prefix([([7, 2], [9]), ([1, 2], [9])]) == 0


def test_seeds_and_temperature_zero(tiny_llama):
    a = generate(tiny_llama, PROMPTS, num_samples=4, max_new_tokens=12, stop=(), seed=7)
    b = generate(tiny_llama, PROMPTS, num_samples=4, max_new_tokens=12, stop=(), seed=7)
    c = generate(tiny_llama, PROMPTS, num_samples=4, max_new_tokens=12, stop=(), seed=8)
    assert a.texts == b.texts and a.texts != c.texts
    assert len({tuple(t) for t in a.token_ids[0]}) > 1  # samples of one prompt differ
    greedy = generate(tiny_llama, PROMPTS, greedy=True, max_new_tokens=12, stop=())
    for temp in (0.0, 1e-4):
        cold = generate(tiny_llama, PROMPTS, num_samples=2, temperature=temp, max_new_tokens=12, stop=())
        for i in range(len(PROMPTS)):
            for k in range(2):
                assert list(cold.token_ids[i][k]) == list(greedy.token_ids[i][0])


def test_include_greedy_and_batching_do_not_change_samples(tiny_llama):
    both = generate(
        tiny_llama, PROMPTS, num_samples=3, include_greedy=True, max_new_tokens=10, stop=(), seed=1
    )
    greedy, samples = both.split_greedy()
    assert greedy.num_samples == 1 and samples.num_samples == 3
    alone = generate(tiny_llama, PROMPTS, greedy=True, max_new_tokens=10, stop=())
    assert greedy.texts == alone.texts
    small_batches = generate(
        tiny_llama,
        PROMPTS,
        num_samples=3,
        include_greedy=True,
        max_new_tokens=10,
        stop=(),
        seed=1,
        max_rows=4,
    )  # one prompt per compiled batch
    assert small_batches.texts == both.texts


def test_stop_strings_cut_text_and_tokens(tiny_llama):
    gens = generate(tiny_llama, PROMPTS * 3, num_samples=4, max_new_tokens=20, stop=("a", "e"), seed=0)
    stopped = 0
    for i, row in enumerate(gens.texts):
        for k, text in enumerate(row):
            assert "a" not in text and "e" not in text
            assert tiny_llama.decode(gens.token_ids[i][k]).strip() == text
            stopped += gens.stop_reasons[i][k] == "stop"
    assert stopped > 0


def test_top_k_samples_stay_in_the_top_k(tiny_llama):
    gens = generate(tiny_llama, PROMPTS, num_samples=8, max_new_tokens=8, top_k=3, stop=(), seed=2)
    for i in range(len(PROMPTS)):
        for k in range(8):
            for t, tok in enumerate(gens.token_ids[i][k]):
                assert tok in gens.top_ids[i][k][t][:3]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16), top_k=st.integers(1, 6), top_p=st.floats(0.05, 1.0), temp=st.floats(0.2, 2.0)
)
def test_filters_never_emit_disallowed_tokens(seed, top_k, top_p, temp):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(16, 50)) * 3, jnp.float32)
    keys = jax.random.split(jax.random.key(seed), 16)
    temps = jnp.full((16,), temp)
    toks, _ = choose_tokens(keys, logits, jnp.zeros(16, bool), temps, top_k, None, None)
    ranks = np.argsort(-np.asarray(logits), axis=1)
    for r, tok in enumerate(np.asarray(toks)):
        assert tok in ranks[r, :top_k]
    toks, _ = choose_tokens(keys, logits, jnp.zeros(16, bool), temps, None, jnp.full((16,), top_p), None)
    scaled = np.asarray(logits, np.float64) / temp
    for r, tok in enumerate(np.asarray(toks)):
        p = np.exp(scaled[r] - scaled[r].max())
        p /= p.sum()
        mass_before = p[p > p[tok]].sum()
        assert mass_before < top_p + 1e-5


def test_full_ece_sums_equal_a_dense_numpy_computation(tiny_llama):
    prompts, conts = ["abc", "hello", "zz"], ["def ghi", " world!", "top"]
    logprobs, stats = score_with_stats(tiny_llama, prompts, conts, n_bins=10)
    counts, sum_p, hits, n = np.zeros(10), np.zeros(10), np.zeros(10), 0
    for p, c, lp in zip(prompts, conts, logprobs):
        p_ids, c_ids = tiny_llama.encode(p), tiny_llama.tokenizer(c, add_special_tokens=False)["input_ids"]
        logits = tiny_llama.logits([p_ids + c_ids])[0].astype(np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        for j, tok in enumerate(c_ids):
            row = probs[len(p_ids) - 1 + j]
            bins = np.minimum((row * 10).astype(int), 9)
            np.add.at(counts, bins, 1)
            np.add.at(sum_p, bins, row)
            hits[bins[tok]] += 1
            n += 1
        np.testing.assert_allclose(
            lp, np.log(probs[np.arange(len(c_ids)) + len(p_ids) - 1, c_ids]), atol=1e-4
        )
    np.testing.assert_allclose(stats.count, counts)
    np.testing.assert_allclose(stats.sum_prob, sum_p, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(stats.sum_hit, hits)
    assert stats.n_positions == n
    assert abs(stats.full_ece() - np.abs(hits - sum_p).sum() / n) < 1e-5


def test_bad_arguments_are_one_line_errors(tiny_llama):
    cases = [
        (dict(prompts=[]), "non-empty"),
        (dict(num_samples=0), "num_samples"),
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(prompts=["a" * 600]), "context"),
    ]
    for kwargs, match in cases:
        args = dict(prompts=["hi"]) | kwargs
        with pytest.raises(CalibError, match=match):
            generate(tiny_llama, args.pop("prompts"), **args)


_DEVICE_SCRIPT = """
import json, sys
from calib.models import load_model
from calib.decode import generate
import jax
lm = load_model("tiny-llama")
g = generate(lm, ["hello", "abc", "what", "x y z"], num_samples=3, max_new_tokens=10, stop=(), seed=5)
print(json.dumps({"devices": len(jax.devices()), "ids": [[t.tolist() for t in row] for row in g.token_ids]}))
"""


def _run_with_devices(n):
    env = dict(
        os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", CALIB_NO_COMPILATION_CACHE="1"
    )
    out = subprocess.run(
        [sys.executable, "-c", _DEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_two_devices_give_identical_samples():
    one, two = _run_with_devices(1), _run_with_devices(2)
    assert (one["devices"], two["devices"]) == (1, 2)
    assert one["ids"] == two["ids"]


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])
def test_continuing_from_the_cache_equals_decoding_from_scratch(name, request):
    from calib.decode.continuation import DecodeSession, Sampling

    lm = request.getfixturevalue(name)
    prompts = [lm.encode("first prompt"), lm.encode("a much longer second prompt")]
    sess = DecodeSession(lm, prompts, rows_per_prompt=2, greedy_rows=[True, False], room=64, seed=4)
    sess.decode(Sampling(max_new_tokens=6, stop=()))
    cue = lm.tokenizer(" Wait, let me check.", add_special_tokens=False)["input_ids"]
    sess.append([cue] * sess.rows)
    record = sess.decode(Sampling(max_new_tokens=10, stop=()))
    for r in range(sess.rows):
        n = int(record.lengths[r])
        before = len(sess.history[r]) - (n - 1)  # history now also holds this pass's fed tokens
        full = sess.history[r][:before] + [int(t) for t in record.tokens[r, :n]]
        logits = lm.logits([full])[0].astype(np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        expected = logp[np.arange(before - 1, before - 1 + n), full[before:]]
        np.testing.assert_allclose(record.logprobs[r, :n], expected, atol=1e-4)
        assert full[before - len(cue) : before] == cue  # the cue really sits in the history


def test_going_on_with_the_running_rows_in_a_smaller_batch_changes_nothing(tiny_llama, monkeypatch):
    from dataclasses import replace

    from calib.decode import session
    from calib.decode.planning import CPU_PLAN

    calls = []
    take_rows = session.take_rows
    monkeypatch.setattr(
        session, "take_rows", lambda state, rows: calls.append(len(rows)) or take_rows(state, rows)
    )
    stop = tuple("abcdefghijklmnopqrstuvwxyz")  # most answers of this random model stop within a few tokens
    kwargs = dict(num_samples=7, include_greedy=True, max_new_tokens=24, stop=stop, seed=3)
    prompts = [f"{p} {n}" for n in range(4) for p in PROMPTS]  # 12 prompts x 8 rows: one batch of 96 rows
    shrunk = generate(tiny_llama, prompts, **kwargs)
    assert calls and calls[0] < 96  # some answers ran long after most had stopped
    whole = generate(tiny_llama, prompts, plan=replace(CPU_PLAN, shrink=False), **kwargs)
    assert shrunk.texts == whole.texts and shrunk.stop_reasons == whole.stop_reasons
    assert {r for row in shrunk.stop_reasons for r in row} == {"stop", "length"}
    for field in ("token_ids", "token_logprobs", "token_entropies", "top_ids", "top_logprobs"):
        for a, b in zip(getattr(shrunk, field), getattr(whole, field)):
            for x, y in zip(a, b):
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.stack(shrunk.hidden), np.stack(whole.hidden), rtol=1e-5, atol=1e-5)


def test_memory_budget_splits_work_into_batches_with_identical_results(tiny_llama):
    from calib.decode.planning import bytes_per_row, cache_length, decode_plan

    kwargs = dict(num_samples=2, max_new_tokens=8, stop=(), seed=9)
    whole = generate(tiny_llama, PROMPTS, **kwargs)
    cache_len = cache_length(max(len(tiny_llama.encode(p)) for p in PROMPTS), 8)
    one_prompt = 2 * bytes_per_row(tiny_llama.config, cache_len, decode_plan().buffer(8), 5, 4)
    split = generate(tiny_llama, PROMPTS, memory_budget=one_prompt, **kwargs)
    assert split.texts == whole.texts
    with pytest.raises(CalibError, match="memory budget"):
        generate(tiny_llama, PROMPTS, memory_budget=one_prompt // 4, **kwargs)


def test_length_buckets_are_multiples_of_16_then_of_64():
    from calib.decode.planning import bucket_length

    assert [bucket_length(n) for n in (1, 16, 17, 42, 100, 128)] == [16, 16, 32, 48, 112, 128]
    assert [bucket_length(n) for n in (129, 155, 192, 193, 1000)] == [192, 192, 192, 256, 1024]
    assert all(bucket_length(n) >= n for n in range(1, 2000))


def test_batch_sizes_are_powers_of_two_unless_one_batch_of_more_than_16_holds_every_prompt(tiny_llama):
    from calib.decode.planning import prompts_per_batch

    def per_batch(prompts: int, rows: int = 1, devices: int = 1) -> int:
        return prompts_per_batch(tiny_llama.config, prompts, rows, 64, 8, 5, 4, 1 << 40, 256, devices)

    assert [per_batch(n) for n in (1, 3, 12, 16)] == [1, 4, 16, 16]
    assert [per_batch(n) for n in (17, 200, 250, 256)] == [32, 208, 256, 256]
    assert per_batch(300) == 256  # two batches: powers of two keep the compiled shapes few
    assert per_batch(32, rows=11) == 16  # the runner's shards: 23 prompts fit, so batches of 16
    assert per_batch(200, devices=3) % 3 == 0


@pytest.mark.parametrize("vocab,ties", [(3000, False), (49152, False), (5000, True), (900, False)])
def test_blocked_top_k_and_token_statistics_match_numpy(vocab, ties):
    """Top-k through block maxima equals lax.top_k (ids too, ties included); log-normaliser and entropy equal
    numpy's logsumexp and -sum p log p."""
    from calib.decode.sampling import token_statistics, top_k_blocked

    rng = np.random.default_rng(vocab)
    x = rng.integers(0, 40, (6, vocab)).astype(np.float32) if ties else rng.normal(0, 3, (6, vocab))
    x = jnp.asarray(x, jnp.float32)
    for k in (1, 5, 8):
        got_v, got_i = top_k_blocked(x, k)
        want_v, want_i = jax.lax.top_k(x, k)
        np.testing.assert_array_equal(np.asarray(got_i), np.asarray(want_i))
        np.testing.assert_array_equal(np.asarray(got_v), np.asarray(want_v))
    log_norm, entropy, top_ids, top_lp = token_statistics(x, 5)
    z = np.asarray(x, np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    p = np.exp(z - lse[:, None])
    np.testing.assert_allclose(np.asarray(log_norm), lse, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(entropy), -(p * np.log(p)).sum(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(top_lp), np.take_along_axis(z, np.asarray(top_ids), -1) - lse[:, None], atol=1e-5
    )
