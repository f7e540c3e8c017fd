"""One command for a lent GPU/TPU: decode and P(True) scoring throughput, against the device's own roofline.

Workloads, each timed on a second call (the first compiles; compiles are counted and timed apart):
  W1  64 questions x 11 rows (greedy + 10 samples) x 32 new tokens at temperature 1, then P(True) scoring of all
      704 answers (a " (A)" continuation after a question/answer/verdict prompt)
  W2  batch-1 greedy, 64 new tokens
Models: the built-in ones (smollm2-135m-instruct, gemma3-270m) and a synthetic Llama-3-8B-shaped model in bfloat16
whose random weights are made directly on the device, split by calib.devices' rules (no download).
Reports tokens/s, weight-bandwidth utilisation (weight bytes read per decode step / step time / peak bandwidth),
MFU (2 x parameters x tokens / time / peak FLOP/s), compile count and seconds, peak device memory.
Run: .venv/bin/python benchmarks/bench_device.py [--smoke] [--out FILE] [--model-parallel N]
--smoke: reduced shapes (a small Llama-3-shaped model, tiny-llama as the built-in) on CPU in under two minutes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

# (dense bf16 FLOP/s, memory bytes/s) per device kind, from the vendors' data sheets
PEAKS = {
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100": (312e12, 2.0e12),
    "L4": (121e12, 0.3e12),
    "TPU v4": (275e12, 1.2e12),
    "TPU v5 lite": (197e12, 0.82e12),
    "TPU v5e": (197e12, 0.82e12),
    "TPU v5p": (459e12, 2.76e12),
    "TPU v6 lite": (918e12, 1.64e12),
}


class CompileCounter:
    """Counts XLA compiles and their seconds through jax.monitoring (backend compile events)."""

    def __init__(self):
        self.count, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, event: str, duration: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            self.count, self.seconds = self.count + 1, self.seconds + duration

    def snapshot(self) -> tuple[int, float]:
        return self.count, self.seconds


def measured_peaks(n: int = 1024) -> tuple[float, float]:
    """CPU has no data sheet here: a matmul's FLOP/s and a large copy's bytes/s measured now."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(3):
        out = mm(a)
    out.block_until_ready()
    flops = 2 * n**3 * 3 / (time.perf_counter() - start)
    big = jnp.ones((64 * 2**20 // 4,), jnp.float32)
    copy = jax.jit(lambda x: x * 2.0)
    copy(big).block_until_ready()
    start = time.perf_counter()
    for _ in range(3):
        out = copy(big)
    out.block_until_ready()
    return flops, 2 * big.nbytes * 3 / (time.perf_counter() - start)


def device_peaks() -> tuple[float, float, str]:
    dev = jax.devices()[0]
    for name, peaks in PEAKS.items():
        if name.lower() in dev.device_kind.lower():
            return (*peaks, "data sheet")
    return (*measured_peaks(), "measured on this machine")


def peak_memory() -> int | None:
    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def llama3_8b_config(smoke: bool):
    """Llama 3 8B's shapes (or a reduced copy for --smoke): GQA 32/8 heads, SwiGLU 14336, untied 128k head."""
    from calib.models.config import ModelConfig, llama3_rope_factors

    if smoke:
        shape = dict(vocab_size=1024, embed_dim=256, num_layers=2, num_heads=8, num_kv_heads=2, head_dim=32)
        shape |= dict(ffw_dim=512)
    else:
        shape = dict(
            vocab_size=128256, embed_dim=4096, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128
        )
        shape |= dict(ffw_dim=14336)
    factors = llama3_rope_factors(500_000.0, shape["head_dim"], 8.0, 1.0, 4.0, 8192)
    return ModelConfig.llama(
        **shape,
        rope_base=500_000.0,
        rope_freq_factors=factors,
        norm_eps=1e-5,
        max_context=8192,
        tie_embeddings=False,
        bos_id=257,
        eos_ids=(258,),
        pad_id=256,
    )


def synthetic_model(cfg, mesh, dtype=jnp.bfloat16):
    """A LanguageModel with random weights generated on the devices, each split by calib.devices.param_spec."""
    from flax import nnx
    from jax.sharding import NamedSharding

    from calib.devices import param_spec
    from calib.models.lm import LanguageModel
    from calib.models.tokenizer import byte_tokenizer
    from calib.models.transformer import Transformer

    model = Transformer(cfg, dtype=dtype, rngs=None)
    key = jax.random.key(0)
    for i, (path, var) in enumerate(nnx.iter_graph(model)):
        if not isinstance(var, nnx.Param):
            continue
        name, shape = ".".join(map(str, path)), var.get_value().shape
        sharding = NamedSharding(mesh, param_spec(name, shape, mesh, cfg))
        ones = name.endswith("scale")  # norms: weight 1
        make = jax.jit(
            lambda k, shape=shape, ones=ones: (
                jnp.ones(shape, dtype)
                if ones
                else (jax.random.normal(k, shape, jnp.float32) * 0.02).astype(dtype)
            ),
            out_shardings=sharding,
        )
        var.set_value(make(jax.random.fold_in(key, i)))
    return LanguageModel("synthetic-llama3-8b-shape", cfg, model, byte_tokenizer, "synthetic", mesh=mesh)


def weight_bytes(lm) -> tuple[int, int]:
    """(bytes of every weight, parameters used per token: all but the embedding table, which is only gathered)."""
    from flax import nnx

    total, matmul = 0, 0
    for path, var in nnx.iter_graph(lm.model):
        if isinstance(var, nnx.Param):
            x = var.get_value()
            total += x.size * x.dtype.itemsize
            if not (path[-1] == "embedding" and not lm.config.tie_embeddings):
                matmul += x.size
    return total, matmul


def questions(n: int) -> list[str]:
    return [f"Q: What is {i} plus {i + 7}? Answer with a number.\nA:" for i in range(n)]


def timed(fn, counter: CompileCounter):
    """Run twice: (result, seconds of the second run, compiles and compile seconds of both)."""
    c0, s0 = counter.snapshot()
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = fn()
    jax.effects_barrier()
    seconds = time.perf_counter() - start
    c1, s1 = counter.snapshot()
    return out, seconds, {"compiles": c1 - c0, "compile_s": s1 - s0, "first_call_s": first}


def run_workloads(lm, shape: dict, peaks: tuple[float, float], counter: CompileCounter) -> dict:
    from calib.decode import continuation, generate, score

    total_bytes, matmul_params = weight_bytes(lm)
    flops_peak, bw_peak = peaks
    out = {"weight_bytes": total_bytes, "matmul_params": matmul_params}
    sessions = []
    real_session = continuation.DecodeSession

    class Counting(real_session):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            sessions.append(self.rows)

    gen_mod = importlib.import_module("calib.decode.generate")  # the package exports a function of that name

    gen_mod.DecodeSession = Counting
    try:
        for workload, prompts, kwargs in (
            (
                "W1",
                questions(shape["questions"]),
                dict(num_samples=shape["samples"] - 1, include_greedy=True),
            ),
            ("W2", questions(1), dict(greedy=True)),
        ):
            steps = shape["tokens"] if workload == "W1" else shape["w2_tokens"]
            sessions.clear()
            gens, seconds, compiles = timed(
                lambda p=prompts, k=kwargs, s=steps: generate(lm, p, max_new_tokens=s, stop=(), seed=1, **k),
                counter,
            )
            batches = len(sessions) // 2  # sessions of the timed (second) call
            tokens = sum(len(t) for row in gens.token_ids for t in row)
            out[workload] = {
                "tokens": tokens,
                "seconds": seconds,
                "tok_s": tokens / seconds,
                "decode_steps": batches * steps,
                "weight_bw_util": batches * steps * total_bytes / seconds / bw_peak,
                "mfu": 2 * matmul_params * tokens / seconds / flops_peak,
                **compiles,
            }
            if workload == "W1":
                answers = [(q, a) for q, row in zip(prompts, gens.texts) for a in row]
    finally:
        gen_mod.DecodeSession = real_session
    ptrue = [
        f"{q} {a}\nIs the proposed answer true? (A) True (B) False\nThe proposed answer is:"
        for q, a in answers
    ]
    scored, seconds, compiles = timed(lambda: score(lm, ptrue, [" (A)"] * len(ptrue)), counter)
    prompt_tokens = sum(len(lm.encode(p)) + 4 for p in ptrue)
    out["P(True)"] = {
        "pairs": len(ptrue),
        "tokens": prompt_tokens,
        "seconds": seconds,
        "tok_s": prompt_tokens / seconds,
        "mfu": 2 * matmul_params * prompt_tokens / seconds / flops_peak,
        "finite": bool(all(np.isfinite(s).all() for s in scored)),
        **compiles,
    }
    out["peak_memory_bytes"] = peak_memory()
    return out


def table(results: dict) -> str:
    lines = [
        f"{'model':30} {'work':8} {'tok/s':>10} {'bw util':>8} {'MFU':>7} {'compiles':>8} {'compile s':>9} {'s':>7}"
    ]
    for model, res in results["models"].items():
        for work in ("W1", "W2", "P(True)"):
            r = res[work]
            util = f"{r['weight_bw_util']:.1%}" if "weight_bw_util" in r else "-"
            lines.append(
                f"{model:30} {work:8} {r['tok_s']:10.0f} {util:>8} {r['mfu']:7.1%} {r['compiles']:8d} "
                f"{r['compile_s']:9.1f} {r['seconds']:7.2f}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="reduced shapes for a CPU check (< 2 min)")
    parser.add_argument(
        "--out", default=None, help="JSON file (default benchmarks/results/device[_smoke].json)"
    )
    parser.add_argument("--model-parallel", type=int, default=1, help="devices.model for every model")
    parser.add_argument("--skip-builtin", action="store_true", help="only the synthetic model")
    args = parser.parse_args()

    from calib.devices import make_mesh
    from calib.models import load_model

    counter = CompileCounter()
    mesh = make_mesh(None, args.model_parallel)
    shape = (
        dict(questions=4, samples=3, tokens=8, w2_tokens=8)
        if args.smoke
        else dict(questions=64, samples=11, tokens=32, w2_tokens=64)
    )
    flops_peak, bw_peak, source = device_peaks()
    dev = jax.devices()[0]
    results = {
        "device": {"kind": dev.device_kind, "platform": dev.platform, "count": len(jax.devices())},
        "mesh": dict(mesh.shape),
        "peaks": {"flop_s": flops_peak, "bytes_s": bw_peak, "source": source},
        "shape": shape,
        "models": {},
    }
    builtin = (
        []
        if args.skip_builtin
        else (["tiny-llama"] if args.smoke else ["smollm2-135m-instruct", "gemma3-270m"])
    )
    dtype = "float32" if args.smoke else "auto"
    for name in builtin:
        results["models"][name] = run_workloads(
            load_model(name, dtype=dtype, mesh=mesh), shape, (flops_peak, bw_peak), counter
        )
    cfg = llama3_8b_config(args.smoke)
    c0 = counter.snapshot()[0]
    start = time.perf_counter()
    lm = synthetic_model(cfg, mesh, jnp.float32 if args.smoke else jnp.bfloat16)
    build = {"build_s": time.perf_counter() - start, "build_compiles": counter.snapshot()[0] - c0}
    results["models"][lm.name] = {**build, **run_workloads(lm, shape, (flops_peak, bw_peak), counter)}
    results["compiles_total"], results["compile_s_total"] = counter.snapshot()
    out = Path(
        args.out or Path(__file__).with_name("results") / f"device{'_smoke' if args.smoke else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(
        f"{dev.device_kind} x{len(jax.devices())}, peaks {flops_peak / 1e9:.0f} GFLOP/s, "
        f"{bw_peak / 1e9:.0f} GB/s ({source})"
    )
    print(table(results))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
