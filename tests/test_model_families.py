"""Every model family, from a tiny random transformers model: HF folder and GGUF file against PyTorch's logits.

Windows (16) and Llama 3's original context (32) are small and the prompt is ~80 tokens, so sliding windows and
RoPE scaling both act; norm weights are random so the (1 + w) and QK-norm conventions are exercised."""

import numpy as np
import pytest
import torch
from family_files import FAMILIES, build_hf, load_gguf, write_gguf

from calib.decode import generate
from calib.models import load_model

PROMPT = "The quick brown fox jumps over the lazy dog; then it runs around the old barn twice and sleeps."


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def check_parity(lm, ref):
    """Max |log-softmax difference| over the prompt, with greedy continuations (through the KV cache) equal."""
    ids = lm.encode(PROMPT)
    assert len(ids) >= 80
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits[0].float().numpy()
    ours = lm.logits([ids])[0]
    diff = float(np.abs(_log_softmax(ours) - _log_softmax(expected)).max())
    assert diff < 1e-4, diff
    assert _log_softmax(expected).max(-1).mean() > -2.0  # peaked predictions: a wrong detail would show
    assert (ours.argmax(-1) == expected.argmax(-1)).all()
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=258, pad_token_id=256
        )
    theirs = [t for t in out[0, len(ids) :].tolist() if t != 256]
    greedy = generate(lm, [PROMPT], greedy=True, max_new_tokens=8, stop=()).token_ids[0][0].tolist()
    assert greedy[: len(theirs)] == theirs
    return diff


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_folder_matches_transformers(tmp_path, family):
    ref = build_hf(tmp_path, family)
    lm = load_model(f"hf:{tmp_path}")
    diff = check_parity(lm, ref)
    print(f"{family} hf: max |log-softmax diff| = {diff:.2e}")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gguf_file_matches_transformers(tmp_path, family):
    ref = build_hf(tmp_path / "hf", family)
    lm = load_gguf(write_gguf(tmp_path / f"{family}.gguf", family, ref))
    hf = load_model(f"hf:{tmp_path / 'hf'}").config
    ours, layers = lm.config, range(hf.num_layers)
    assert ours.norm_eps == pytest.approx(hf.norm_eps, rel=1e-6)
    assert [ours.is_sliding(i) for i in layers] == [hf.is_sliding(i) for i in layers]
    np.testing.assert_allclose(ours.rope_freq_factors, hf.rope_freq_factors, rtol=1e-6)
    assert (ours.query_scale or 0.0) == pytest.approx(hf.query_scale or 0.0, rel=1e-6)
    same = dict(
        norm_eps=ours.norm_eps,
        query_scale=ours.query_scale,
        rope_freq_factors=ours.rope_freq_factors,
        layer_types=ours.layer_types,
    )
    assert ours == hf.replace(**same)
    diff = check_parity(lm, ref)
    print(f"{family} gguf: max |log-softmax diff| = {diff:.2e}")
