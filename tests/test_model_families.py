"""Every model family, from a tiny random transformers model: HF folder and GGUF file against PyTorch's logits.

Windows (16) and Llama 3's original context (32) are small and the prompt is ~80 tokens, so sliding windows and
RoPE scaling both act; norm weights are random so the (1 + w) and QK-norm conventions are exercised."""

import numpy as np
import pytest
import torch

from calib.decode import generate
from calib.models import load_model
from calib.models.tokenizer import byte_tokenizer

PROMPT = "The quick brown fox jumps over the lazy dog; then it runs around the old barn twice and sleeps."
COMMON = dict(
    vocab_size=260,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=257,
    eos_token_id=258,
    pad_token_id=256,
    initializer_range=0.25,  # large enough that the logits are far from uniform and every detail shows
)
FAMILIES = {
    "llama2": ("LlamaConfig", dict(num_hidden_layers=2, rope_theta=5000.0, tie_word_embeddings=False)),
    "llama3": (
        "LlamaConfig",
        dict(
            num_hidden_layers=2,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500_000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
    ),
    "mistral": ("MistralConfig", dict(num_hidden_layers=2, head_dim=16, sliding_window=16)),
    "qwen2": ("Qwen2Config", dict(num_hidden_layers=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(num_hidden_layers=2, head_dim=32, tie_word_embeddings=False)),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            num_hidden_layers=4,
            head_dim=32,
            num_key_value_heads=1,
            sliding_window=16,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
            rope_parameters={
                "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1_000_000.0),
                "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
            },
        ),
    ),
}


def build_hf(folder, family):
    """A tiny random transformers model of the family, saved with save_pretrained (weights and byte tokenizer)."""
    import transformers

    name, extra = FAMILIES[family]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, name)(**(COMMON | extra)))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:  # random norm weights; Gemma's (1 + w) around 0, the others around 1
                p.normal_(0.0 if family == "gemma3" else 1.0, 0.3)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return model.eval()


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
