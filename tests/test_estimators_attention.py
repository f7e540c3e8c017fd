"""RAUQ and the attention score: the recomputed attention probabilities against each block's own output, the
teacher-forced pass against those probabilities, and both estimators by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, available_needs, check_needs, get_estimator
from calib.estimators.attention import (
    CSL_PROMPT,
    CSL_SUFFIX,
    attention_probabilities,
    attention_score,
    attention_statistics,
    csl,
    middle_layers,
    rauq,
)
from calib.estimators.synthetic import generations_from


def _block_inputs(lm, ids):
    """Each block's attention input (after its pre-attention norm), from the model's own embedding and blocks."""
    model = lm.model
    x = jnp.take(model.embedding[...], jnp.asarray([ids]), axis=0)
    if model.cfg.scale_embeddings:
        x = x * jnp.asarray(model.cfg.embed_dim**0.5, dtype=x.dtype)
    positions = jnp.arange(len(ids))[None, :]
    for block in model.blocks:
        yield block, block.pre_attn_norm(x), positions
        x, _ = block(x, positions, None)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_gemma3"])  # GQA; QK-norm, sliding window, local RoPE
def test_probabilities_reproduce_each_blocks_attention_output(name, request):
    lm = request.getfixturevalue(name)
    ids = lm.encode("Attention weights, checked against the block itself.")
    for block, a, positions in _block_inputs(lm, ids):
        probs = attention_probabilities(block.attn, a, positions, block.rope, block.window)  # [1, N, T, T]
        p = np.asarray(probs[0], dtype=np.float64)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
        assert np.all(np.triu(p, k=1) == 0)  # causal
        cfg = block.attn.cfg
        v = jnp.einsum("BTD,DKH->BTKH", a, block.attn.v[...])
        if cfg.qkv_bias:
            v = v + block.attn.v_bias[...]
        v = np.repeat(
            np.asarray(v[0]), cfg.num_heads // cfg.num_kv_heads, axis=1
        )  # [T, N, H]: head n reads n // G
        mixed = np.einsum("nts,snh->tnh", p, v).reshape(len(ids), -1)
        want = mixed @ np.asarray(block.attn.o[...]).reshape(cfg.num_heads * cfg.head_dim, -1)
        got = np.asarray(block.attn(a, positions, block.rope, block.window, None)[0][0])
        np.testing.assert_allclose(want, got, rtol=1e-4, atol=1e-5)


def test_teacher_forced_pass_keeps_the_diagonal_and_last_row(tiny_llama):
    prompt, answer = "Q: 2+2?\nA:", [52, 10, 33]
    stats = attention_statistics(tiny_llama, [prompt], [answer])[0]
    ids = tiny_llama.encode(prompt) + answer
    cfg = tiny_llama.model.cfg
    assert stats.shape == (cfg.num_layers, cfg.num_heads, 2, len(ids))
    for layer, (block, a, positions) in enumerate(_block_inputs(tiny_llama, ids)):
        p = np.asarray(attention_probabilities(block.attn, a, positions, block.rope, block.window)[0])
        np.testing.assert_allclose(stats[layer, :, 0], np.diagonal(p, axis1=-2, axis2=-1), atol=1e-6)
        np.testing.assert_allclose(stats[layer, :, 1], p[:, -1, :], atol=1e-6)


def test_rauq_by_hand():
    p = [0.5, 0.8, 0.4]
    previous = np.zeros((3, 2, 2))
    previous[1] = [[0.1, 0.2], [0.9, 0.5]]  # layer 1: head 1 attends most to the previous token
    previous[2] = [[1.0, 1.0], [0.0, 0.0]]  # layer 2: head 0, full attention
    # layer 1, α = 0.2: c = 0.5, 0.2·0.8 + 0.8·0.9·0.5 = 0.52, 0.2·0.4 + 0.8·0.5·0.52 = 0.288
    u1 = -(math.log(0.5) + math.log(0.52) + math.log(0.288)) / 3
    # layer 2: c = 0.5, 0.16 + 0.8·0.5 = 0.56, 0.08 + 0.8·0.56 = 0.528
    u2 = -(math.log(0.5) + math.log(0.56) + math.log(0.528)) / 3
    assert rauq(np.log(p), previous, 0.2, [1]) == pytest.approx(u1)
    assert rauq(np.log(p), previous, 0.2, [1, 2]) == pytest.approx(max(u1, u2))
    assert middle_layers(30) == list(range(10, 21))  # LM-Polygraph's ⌊L/3⌋ .. ⌈2L/3⌉
    assert middle_layers(2) == [0, 1]  # clipped to the model's layers


def test_attention_score_by_hand():
    diagonal = np.array([[1.0, 0.5, 0.25], [1.0, 1.0, 0.5]])  # two heads over three positions
    want = (math.log(0.5) + math.log(0.25) + math.log(0.5)) / 2
    assert attention_score(diagonal) == pytest.approx(want, abs=1e-10)


def test_estimators_read_the_answer_positions_through_the_bundle():
    # prompt of 2 tokens + answer of 3; L = 3 layers, H = 2 heads; diagonal values at positions 2, 3 are a_1, a_2
    stats = np.full((3, 2, 2, 5), 0.5)
    stats[:, :, 0, :] = [1.0, 0.5, 0.9, 0.5, 0.2]
    calls = []

    def attention_fn(prompts, token_ids, suffix):
        calls.append([len(t) for t in token_ids])
        return [stats for _ in prompts]

    lp = np.log([0.5, 0.8, 0.4])
    greedy = generations_from([["a b c"], [""]], logprobs=[[lp], [[]]], token_ids=[[[1, 2, 3]], [[]]])
    bundle = Bundle(greedy, attention_fn=attention_fn)
    result = get_estimator("rauq")(bundle)
    c = [0.5, 0.2 * 0.8 + 0.8 * 0.9 * 0.5]
    c.append(0.2 * 0.4 + 0.8 * 0.5 * c[1])
    np.testing.assert_allclose(result.raw, [-np.mean(np.log(c)), np.nan])
    np.testing.assert_allclose(result.confidence[0], math.exp(-result.raw[0]))
    score = get_estimator("attention_score")(bundle)  # layer 3 // 2 = 1, all five positions
    want = np.sum(np.log([1.0, 0.5, 0.9, 0.5, 0.2]))
    np.testing.assert_allclose(score.raw, [want, np.nan])
    np.testing.assert_allclose(score.confidence[0], 1 / (1 - want))
    assert calls == [[3]]  # one pass, shared; the empty answer is not run


def test_without_a_model_they_say_what_they_need():
    with pytest.raises(CalibError, match=r"'rauq' needs attention .*load a model"):
        check_needs([get_estimator("rauq")], available_needs(num_samples=1, has_model=False))


def test_csl_by_hand_and_through_the_eliciting_prompt():
    lp = np.log([0.5, 0.8])
    last_row = np.array(
        [[[0.1, 0.3]], [[0.3, 0.3]]]
    )  # [L = 2, H = 1, T = 2]: mean weights 0.2, 0.3 -> 0.4, 0.6
    assert csl(lp, last_row) == pytest.approx(0.4 * math.log(0.5) + 0.6 * math.log(0.8))
    seen = []

    def attention_fn(prompts, token_ids, suffix):
        seen.append((prompts, suffix))
        out = np.zeros((2, 1, 2, 7))  # 5 prompt positions + the 2 answer tokens
        out[:, :, 1, 5:] = last_row
        return [out for _ in prompts]

    greedy = generations_from([["x y"]], logprobs=[[lp]], token_ids=[[[4, 5]]])
    bundle = Bundle(
        greedy, examples=[SimpleNamespace(question="Who wrote Hamlet?")], attention_fn=attention_fn
    )
    result = get_estimator("csl")(bundle)
    np.testing.assert_allclose(result.confidence, [0.5**0.4 * 0.8**0.6])
    ((prompts, suffix),) = seen
    assert prompts[0] == CSL_PROMPT.format(q="Who wrote Hamlet?") and suffix == CSL_SUFFIX
    assert prompts[0].endswith("Question: Who wrote Hamlet?\nAnswer: ")


def test_the_suffix_moves_the_last_row_but_not_the_positions(tiny_llama):
    """With a suffix, the returned row is the query at its end, over prompt + answer only."""
    prompt, answer, suffix = "Q: 1+1?\nA:", [50, 10], "\n\nDecision:"
    stats = attention_statistics(tiny_llama, [prompt], [answer], suffix)[0]
    ids = tiny_llama.encode(prompt) + answer
    full = ids + tiny_llama.tokenizer(suffix, add_special_tokens=False)["input_ids"]
    assert stats.shape[-1] == len(ids)
    block, a, positions = next(_block_inputs(tiny_llama, full))
    p = np.asarray(attention_probabilities(block.attn, a, positions, block.rope, block.window)[0])
    np.testing.assert_allclose(stats[0, :, 1], p[:, -1, : len(ids)], atol=1e-6)
