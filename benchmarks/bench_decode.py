"""Decode throughput on SmolLM2-135M, side by side in one run: calib (JAX, float32 and int8 weights) vs transformers
vs llama.cpp.

W1 = 8 prompts x 16 samples x 32 new tokens at temperature 1 (this project's multi-sample workload)
W2 = batch-1 greedy, 64 new tokens
Also: a large f32 matmul's FLOP/s in the same run (the roofline), and achieved model FLOP/s as a fraction of it.
Run: .venv/bin/python benchmarks/bench_decode.py [--quick]   (writes benchmarks/results/decode.json)
llama.cpp runs when `llama_cpp` is importable (pip install '.[bench]'; it compiles for several minutes once).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

COUNTRIES = ["France", "Japan", "Germany", "Italy", "Spain", "Canada", "Brazil", "Egypt"]
PROMPTS = [f"Q: What is the capital of {c}?\nA:" for c in COUNTRIES]


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    start = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def bench_calib(lm, workload: str) -> dict:
    from calib.decode import generate

    kwargs = (
        dict(num_samples=16, max_new_tokens=32, temperature=1.0)
        if workload == "W1"
        else dict(greedy=True, max_new_tokens=64)
    )
    prompts = PROMPTS if workload == "W1" else PROMPTS[:1]
    start = time.perf_counter()
    generate(lm, prompts, stop=(), seed=0, **kwargs)  # includes compilation (or a compilation-cache hit)
    first = time.perf_counter() - start
    start = time.perf_counter()
    gens = generate(lm, prompts, stop=(), seed=1, **kwargs)
    seconds = time.perf_counter() - start
    tokens = gens.num_generated_tokens() + sum(r == "eos" for row in gens.stop_reasons for r in row)
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tok_s": tokens / seconds,
        "compile_s": max(first - seconds, 0.0),
    }


def bench_transformers(path: str, workload: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    prompts = PROMPTS if workload == "W1" else PROMPTS[:1]
    tokens, start = 0, time.perf_counter()
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt").input_ids
            if workload == "W1":
                out = model.generate(
                    ids,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    max_new_tokens=32,
                    num_return_sequences=16,
                    pad_token_id=tok.eos_token_id,
                )
            else:
                out = model.generate(ids, do_sample=False, max_new_tokens=64, pad_token_id=tok.eos_token_id)
            new = out[:, ids.shape[1] :]
            tokens += int(sum(_length_until_eos(row.tolist(), tok.eos_token_id) for row in new))
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def _length_until_eos(row: list[int], eos: int) -> int:
    return row.index(eos) + 1 if eos in row else len(row)


def bench_llama_cpp(path: str, workload: str) -> dict | None:
    try:
        import llama_cpp.llama as llama_module
    except ImportError:
        return None
    # llama-cpp-python 0.3.36 segfaults while decoding when its CPU backend repacks Q4_1 tensors for AMX (the
    # "extra buffer types" of Xeons with AMX, as this machine has); load without them, as llama.cpp's
    # --no-extra-bufts does. Llama() takes no argument for it, so its default-params function is wrapped while it
    # loads, and restored.
    defaults = llama_module.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_module.llama_cpp.llama_model_default_params = without_extra_buffers
    try:
        llm = llama_module.Llama(model_path=path, n_threads=os.cpu_count(), n_ctx=512, verbose=False, seed=0)
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults
    prompts = PROMPTS if workload == "W1" else PROMPTS[:1]
    tokens, start = 0, time.perf_counter()
    for p in prompts:
        for _ in range(16 if workload == "W1" else 1):
            out = llm(
                p,
                max_tokens=32 if workload == "W1" else 64,
                temperature=1.0 if workload == "W1" else 0.0,
                top_k=0 if workload == "W1" else 1,
                top_p=1.0,
            )
            tokens += out["usage"]["completion_tokens"]
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    from calib.cache import enable_compilation_cache
    from calib.models import load_model
    from calib.models.builtin import smollm2_path

    enable_compilation_cache()  # as the CLI does: the first call's time is a compilation or a cache hit

    lm = load_model("smollm2-135m-instruct")
    lm_int8 = load_model("smollm2-135m-instruct", weights="int8")
    peak = matmul_gflops()
    results = {"matmul_gflops": peak, "flops_per_token": lm.config.flops_per_token}
    for workload in ("W1", "W2"):
        row = {"calib": bench_calib(lm, workload), "calib int8": bench_calib(lm_int8, workload)}
        for engine in ("calib", "calib int8"):
            row[engine]["roofline_fraction"] = row[engine]["tok_s"] * lm.config.flops_per_token / (peak * 1e9)
        row["transformers"] = None if args.skip_transformers else bench_transformers(smollm2_path(), workload)
        row["llama.cpp"] = bench_llama_cpp(smollm2_path(), workload)
        results[workload] = row
    results["load_average"] = os.getloadavg()
    print(
        f"large f32 matmul: {peak:.0f} GFLOP/s; load average during the run {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'workload':<9}{'engine':<14}{'tokens':>8}{'seconds':>9}{'tok/s':>9}{'calib f32 / int8 ratio':>24}"
    )
    for workload in ("W1", "W2"):
        ours = results[workload]["calib"]["tok_s"], results[workload]["calib int8"]["tok_s"]
        for engine, r in results[workload].items():
            if r is None:
                why = (
                    "skipped (--skip-transformers)" if engine == "transformers" else "skipped (not installed)"
                )
                print(f"{workload:<9}{engine:<14}{why:>39}")
                continue
            ratio = (
                ""
                if engine.startswith("calib")
                else f"{ours[0] / r['tok_s']:.2f}x / {ours[1] / r['tok_s']:.2f}x"
            )
            print(
                f"{workload:<9}{engine:<14}{r['tokens']:>8}{r['seconds']:>9.2f}{r['tok_s']:>9.1f}{ratio:>24}"
            )
        for engine in ("calib", "calib int8"):
            c = results[workload][engine]
            print(
                f"{'':<9}{engine} compile {c['compile_s']:.1f} s; model FLOP/s = {100 * c['roofline_fraction']:.0f}% of the matmul roofline"
            )
    path = Path(__file__).parent / "results" / "decode.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
