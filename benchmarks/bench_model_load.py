"""Model load time and peak host memory.

Run: .venv/bin/python benchmarks/bench_model_load.py                    (built-in GGUF models, second load < 3 s;
                                                                         float32, bfloat16 and int8 weights)
     .venv/bin/python benchmarks/bench_model_load.py --synthetic 1e9    (a Llama-3-shaped bf16 safetensors folder
                                                                         of ~1e9 random parameters, same modes)
Each measurement is a fresh Python process; peak RSS is its VmHWM (imports included).
Target for --synthetic: peak host RSS loading in bf16 <= 1.3x the model's bf16 size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

PROBE = """
import time, json
def peak_rss():  # VmHWM starts afresh at exec; ru_maxrss would carry the parent's high-water mark over
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM"))
    return int(line.split()[1]) * 1024
t0 = time.perf_counter()
from calib.models import load_model
t1 = time.perf_counter()
lm = load_model({name!r}, dtype={dtype!r}, weights={weights!r})
t2 = time.perf_counter()
rss = peak_rss()  # loading only, not the first compile
lm.logits([[1, 2, 3]])
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_logits_s": t3 - t2, "peak_rss": rss}}))
"""
VOCAB, LAYERS = 128_256, 16  # Llama 3.2 1B: d 2048, ffw 8192, 32 heads, 8 kv heads, tied embeddings


MODES = {"float32": ("float32", "full"), "bfloat16": ("bfloat16", "full"), "int8": ("float32", "int8")}


def measure(name: str, dtype: str = "float32", weights: str = "full") -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name, dtype=dtype, weights=weights)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def llama3_shapes(params: float) -> dict[str, tuple[int, ...]]:
    """Llama-3-shaped tensors (head dim 64, ffw 4d, 4 query heads per kv head) of about `params` parameters."""
    d = 256
    while True:
        shapes = _shapes(d + 256)
        if sum(int(np.prod(s)) for s in shapes.values()) > params:
            return _shapes(d)
        d += 256


def _shapes(d: int) -> dict[str, tuple[int, ...]]:
    kv = d // 4
    shapes = {"model.embed_tokens.weight": (VOCAB, d), "model.norm.weight": (d,)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d)}
        shapes |= {p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d)}
        shapes |= {p + f"mlp.{m}_proj.weight": (4 * d, d) for m in ("gate", "up")}
        shapes |= {p + "mlp.down_proj.weight": (d, 4 * d), p + "input_layernorm.weight": (d,)}
        shapes[p + "post_attention_layernorm.weight"] = (d,)
    return shapes


def write_synthetic(folder: Path, params: float) -> int:
    """config.json + one bf16 model.safetensors written tensor by tensor (random weights); returns #parameters."""
    import ml_dtypes

    shapes = llama3_shapes(params)
    d = shapes["model.norm.weight"][0]
    config = dict(model_type="llama", vocab_size=VOCAB, hidden_size=d, intermediate_size=4 * d)
    config |= dict(num_hidden_layers=LAYERS, num_attention_heads=d // 64, num_key_value_heads=d // 256)
    config |= dict(
        rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=8192, tie_word_embeddings=True
    )
    (folder / "config.json").write_text(json.dumps(config))
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(0)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for shape in shapes.values():
            value = rng.standard_normal(shape, np.float32) * 0.02
            f.write(value.astype(ml_dtypes.bfloat16).tobytes())
    return sum(int(np.prod(s)) for s in shapes.values())


def synthetic(params: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        n = write_synthetic(Path(tmp), params)
        print(f"synthetic Llama-3-shaped model: {n / 1e6:.0f}M parameters, bf16 size {2 * n / 2**30:.2f} GiB")
        base = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    PROBE.split("t0 =")[0] + "import jax, calib.models\nprint(peak_rss())",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        print(f"peak RSS after imports only: {base / 2**30:.2f} GiB")
        for mode, (dtype, weights) in MODES.items():
            r = measure(f"hf:{tmp}", dtype, weights)
            size = n * {"float32": 4, "bfloat16": 2, "int8": 1}[mode]
            print(
                f"{mode:<9} load {r['load_s']:6.2f} s   peak RSS {r['peak_rss'] / 2**30:5.2f} GiB = "
                f"{r['peak_rss'] / size:.2f}x its {mode} size ({(r['peak_rss'] - base) / size:.2f}x above imports)"
            )


def builtin() -> None:
    from calib.models.builtin import BUILTIN_GGUF

    rows = {}
    for name in BUILTIN_GGUF:
        measure(name)  # first load converts the GGUF (once per machine)
        for mode, (dtype, weights) in MODES.items():
            rows[f"{name} {mode}"] = measure(name, dtype, weights)
    print(
        f"{'model':<33}{'import calib':>14}{'load_model':>12}{'first logits':>14}{'peak RSS':>11}   target load < 3 s"
    )
    for name, r in rows.items():
        print(
            f"{name:<33}{r['import_s']:>13.2f}s{r['load_s']:>11.2f}s{r['first_logits_s']:>13.2f}s"
            f"{r['peak_rss'] / 2**20:>8.0f} MiB"
        )
    path = Path(__file__).parent / "results" / "model_load.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=float, nargs="?", const=1e9, default=None, metavar="PARAMS")
    args = parser.parse_args()
    synthetic(args.synthetic) if args.synthetic is not None else builtin()


if __name__ == "__main__":
    main()
