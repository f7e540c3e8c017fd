"""Multi-token attention through jax.nn.dot_product_attention ("xla") against the einsum path, for every family's
tiny transformers model: the whole prompt (past every sliding window), and right-padded rows appended to a KV cache
at per-row offsets (what prefill and scoring do). transformers' logits are the independent reference."""

import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from family_files import FAMILIES, build_hf

from calib.errors import CalibError
from calib.models import load_model
from calib.models.layers import attention_impl
from calib.models.transformer import init_cache, use_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "The quick brown fox jumps over the lazy dog; then it runs around the old barn twice and sleeps."


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _cached_logits(lm, rows: list[list[int]], split: int) -> np.ndarray:
    """Each row's first `split` tokens (or fewer: the row's length) as a right-padded prefill into a zeroed cache,
    then the rest of every row appended after that row's own length, as session.append and score do. Returns the
    appended part's logits [B, C, V] (C = longest remainder; padded slots hold garbage the caller ignores)."""
    model, pad = lm.model, lm.config.pad_id
    heads = [r[:split] for r in rows]
    tails = [r[len(h) :] for r, h in zip(rows, heads)]
    p, c = max(map(len, heads)), max(map(len, tails))
    first = np.array([h + [pad] * (p - len(h)) for h in heads], np.int32)
    rest = np.array([t + [pad] * (c - len(t)) for t in tails], np.int32)
    cache = init_cache(lm.config, len(rows), p + c)
    _, cache = model.hidden(jnp.asarray(first), jnp.broadcast_to(jnp.arange(p), first.shape), cache)
    starts = np.array([len(h) for h in heads])
    positions = jnp.asarray(starts[:, None] + np.arange(c)[None, :], jnp.int32)
    h, _ = model.hidden(jnp.asarray(rest), positions, cache)
    return np.asarray(model.project(h))


def compare(folder, family: str, dtype: str = "float32") -> dict[str, float]:
    """Max |log-softmax difference| of xla against einsum and against transformers (float32 or float64 torch), over
    the whole prompt and over right-padded rows continued through the cache at per-row offsets past the window."""
    ref = build_hf(folder, family)
    if dtype == "float64":
        ref = ref.double()
    einsum_lm, xla_lm = load_model(f"hf:{folder}", dtype=dtype), load_model(f"hf:{folder}", dtype=dtype)
    use_attention(einsum_lm.model, "einsum")
    use_attention(xla_lm.model, "xla")
    ids = einsum_lm.encode(PROMPT)
    window = einsum_lm.config.sliding_window
    assert len(ids) >= 80 and (window is None or window < len(ids) // 4)  # the window acts
    with torch.no_grad():
        expected = _log_softmax(ref(torch.tensor([ids])).logits[0].numpy())
    ours_einsum = _log_softmax(einsum_lm.logits([ids])[0])
    ours_xla = _log_softmax(xla_lm.logits([ids])[0])
    out = {
        "prompt_vs_einsum": np.abs(ours_xla - ours_einsum).max(),
        "prompt_vs_torch": np.abs(ours_xla - expected).max(),
    }

    rows, split = [ids[:37], ids[:80], ids[5:66]], 21  # different lengths: right padding, per-row offsets
    via_einsum = _log_softmax(_cached_logits(einsum_lm, rows, split))
    via_xla = _log_softmax(_cached_logits(xla_lm, rows, split))
    padded_einsum, padded_torch = 0.0, 0.0
    for r, row in enumerate(rows):
        n = len(row) - split
        padded_einsum = max(padded_einsum, np.abs(via_xla[r, :n] - via_einsum[r, :n]).max())
        with torch.no_grad():  # each row alone and unpadded, in transformers
            alone = _log_softmax(ref(torch.tensor([row])).logits[0].numpy())
        padded_torch = max(padded_torch, np.abs(via_xla[r, :n] - alone[split:]).max())
    return out | {"padded_vs_einsum": padded_einsum, "padded_vs_torch": padded_torch}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_xla_attention_float32_matches_transformers(tmp_path, family):
    """float32: within the parity bound of tests/test_model_families.py. These fixtures' float32 noise floor is
    ~1e-5..5e-5 (transformers' own float32 against float64 differs by up to 2.6e-5), so a summation order alone
    moves the two paths 1e-5 apart; the 1e-5 equivalence is asserted in float64 below."""
    diffs = compare(tmp_path, family)
    assert max(diffs.values()) < 1e-4, diffs


@pytest.mark.slow  # 40-80 s: six families in a float64 subprocess
def test_xla_attention_float64_matches_einsum_within_1e_5(tmp_path):
    """Every family in float64 (64-bit JAX needs its own process: the flag is global), where only
    dot_product_attention's float32 softmax separates the two paths."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_attention_impl import FAMILIES, compare
        out = {{f: compare({str(tmp_path)!r} + "/" + f, f, "float64") for f in FAMILIES}}
        print(json.dumps({{f: {{k: float(v) for k, v in d.items()}} for f, d in out.items()}}))
        """
    )
    env = dict(os.environ, JAX_ENABLE_X64="1", PYTHONPATH=ROOT)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    diffs = json.loads(run.stdout.strip().splitlines()[-1])
    assert set(diffs) == set(FAMILIES)
    for family, d in diffs.items():
        assert d["prompt_vs_einsum"] < 1e-5 and d["padded_vs_einsum"] < 1e-5, (family, d)
        assert d["prompt_vs_torch"] < 1e-4 and d["padded_vs_torch"] < 1e-4, (family, d)
    print(json.dumps(diffs))


def test_auto_picks_per_backend_and_dtype():
    assert attention_impl("auto", jnp.float32, "cpu") == "einsum"
    assert attention_impl("auto", jnp.bfloat16, "cpu") == "einsum"
    assert attention_impl("auto", jnp.bfloat16, "gpu") == "cudnn"
    assert attention_impl("auto", jnp.float16, "gpu") == "cudnn"
    assert attention_impl("auto", jnp.float32, "gpu") == "xla"
    assert (
        attention_impl("auto", jnp.float64, "gpu") == "einsum"
    )  # dot_product_attention's softmax is float32
    assert attention_impl("auto", jnp.bfloat16, "tpu") == "xla"
    assert attention_impl("xla", jnp.float32, "cpu") == "xla"


def test_cudnn_without_gpu_is_refused_in_one_line():
    lm = load_model("tiny-llama")
    with pytest.raises(CalibError, match=r"cudnn.*CUDA GPU") as err:
        use_attention(lm.model, "cudnn")
    assert "\n" not in str(err.value)
    with pytest.raises(CalibError, match="float32"):
        attention_impl("cudnn", jnp.float32, "gpu")
    with pytest.raises(CalibError, match="unknown attention 'flash'"):
        attention_impl("flash", jnp.bfloat16, "gpu")
