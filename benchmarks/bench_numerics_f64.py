"""float32 numerics on the long Gemma 3 prompt: calib and transformers in float32, each against float64.

The reference is transformers' Gemma 3 in float64 throughout (its RMSNorm, rotary, eager softmax and embedding
scale compute in float32 whatever the model dtype, so they are replaced by the same formulas in float64; attention
runs through SDPA in float64), loaded from the same GGUF file. calib in float64 (a subprocess with
JAX_ENABLE_X64=1) is printed beside it as a cross-check of the reference. `--old-rope` adds calib float32 with the
RoPE formula it used before (angle = position * inv_freq formed in float32, then cos/sin), run in the same process.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_numerics_f64.py [--tokens 807] [--old-rope]

Takes a few minutes and ~8 GB of host memory (four [tokens, 262144] logit arrays, two of them float64)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the parity tests' long prompt (tests/test_models_parity.py): a repetitive text whose positions ~640-800 are
# numerically sensitive in float32
LONG_TEXT = " ".join(
    f"Item {i}: the {['red', 'blue', 'green', 'small'][i % 4]} box number {i * 7 % 13} sits next to shelf {i % 5}."
    for i in range(60)
)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def error(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """max |Δ log-softmax| per position, 64 rows at a time (a float64 copy of all logits is ~1.7 GB)."""
    rows = range(0, len(ours), 64)
    return np.concatenate(
        [np.abs(log_softmax(ours[i : i + 64]) - log_softmax(reference[i : i + 64])).max(-1) for i in rows]
    )


def transformers_logits(ids: list[int], folder: str) -> None:
    """transformers float32 and float64-throughout logits, saved as hf32.npy and hf64.npy."""
    import torch
    import transformers.models.gemma3.modeling_gemma3 as gemma3
    from transformers import AutoModelForCausalLM

    from calib.models.builtin import gemma3_path

    path = gemma3_path()
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    ).eval()
    with torch.no_grad():
        np.save(f"{folder}/hf32.npy", model(torch.tensor([ids])).logits[0].numpy())
    cfg = model.config

    def rotary(x, position_ids, layer_type):
        params = cfg.rope_parameters[layer_type]
        inv_freq = 1.0 / params["rope_theta"] ** (
            torch.arange(0, cfg.head_dim, 2, dtype=torch.float64) / cfg.head_dim
        )
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * (1.0 + self.weight)

    assert all(p.get("rope_type", "default") == "default" for p in cfg.rope_parameters.values())
    model.model.rotary_emb.forward = rotary
    for module in model.modules():
        if isinstance(module, gemma3.Gemma3RMSNorm):
            module.forward = norm.__get__(module)
    model.config._attn_implementation = "sdpa"
    model = model.double()
    model.model.embed_tokens.embed_scale = torch.tensor(cfg.hidden_size**0.5, dtype=torch.float64)
    with torch.no_grad():
        np.save(f"{folder}/hf64.npy", model(torch.tensor([ids])).logits[0].numpy())


def old_rope(x, positions, base, divisors=()):
    """calib's RoPE before issue 19's fix: the angle formed in float32, then cos/sin."""
    import jax.numpy as jnp

    from calib.models.layers import wide

    half, w = x.shape[-1] // 2, wide(x.dtype)
    inv_freq = 1.0 / (base ** (jnp.arange(0, half, dtype=w) / half))
    if divisors:
        inv_freq = inv_freq / jnp.asarray(divisors, w)
    angles = positions[..., None].astype(w) * inv_freq
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = x[..., :half].astype(w), x[..., half:].astype(w)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def calib_logits(ids: list[int], dtype: str, file: str, old: bool = False) -> None:
    import jax

    import calib.models.layers as layers
    from calib.models import load_model

    saved = layers.apply_rope
    if old:
        layers.apply_rope = old_rope
    try:
        jax.clear_caches()
        np.save(file, load_model("gemma3-270m", dtype=dtype).logits([ids])[0])
    finally:
        layers.apply_rope = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=807, help="prompt length (the issue's 807)")
    parser.add_argument("--old-rope", action="store_true", help="also run calib f32 with the pre-fix RoPE")
    args = parser.parse_args()
    from calib.models import load_model

    ids = load_model("gemma3-270m").encode(LONG_TEXT)[: args.tokens]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        probe = f"import sys; sys.path.insert(0, {ROOT!r}); from benchmarks.bench_numerics_f64 import calib_logits; "
        probe += f"calib_logits({ids!r}, 'float64', {folder!r} + '/calib64.npy')"
        env = os.environ | {"JAX_ENABLE_X64": "1", "PYTHONPATH": ROOT}
        subprocess.run([sys.executable, "-c", probe], env=env, check=True)
        calib_logits(ids, "float32", f"{folder}/calib32.npy")
        if args.old_rope:
            calib_logits(ids, "float32", f"{folder}/calib32_old.npy", old=True)
        transformers_logits(ids, folder)
        reference = np.load(f"{folder}/hf64.npy", mmap_mode="r")
        rows = [("calib float64", "calib64"), ("calib float32", "calib32"), ("transformers float32", "hf32")]
        if args.old_rope:
            rows.insert(2, ("calib float32, float32-angle RoPE", "calib32_old"))
        print(
            f"{len(ids)} tokens; max |Δ log-softmax| against transformers float64 ({time.perf_counter() - start:.0f} s)"
        )
        print("| run | worst position | max | median over positions |\n|---|---|---|---|")
        for label, name in rows:
            err = error(np.load(f"{folder}/{name}.npy", mmap_mode="r"), reference)
            print(f"| {label} | {int(err.argmax())} | {err.max():.2e} | {np.median(err):.2e} |")


if __name__ == "__main__":
    main()
