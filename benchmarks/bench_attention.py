"""Prefill time of the einsum attention against jax.nn.dot_product_attention ("xla", and "cudnn" on a GPU) for the
built-in models: 16 prompts x 128 and x 512 tokens into a fresh KV cache, the last position's logits out (what
session.prefill does). Implementations alternate within each repeat, in one process, so machine load hits both.

    PYTHONPATH=. python benchmarks/bench_attention.py [--models smollm2-135m-instruct gemma3-270m] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.models import load_model
from calib.models.layers import attention_impl
from calib.models.transformer import init_cache, use_attention


@functools.partial(jax.jit, static_argnums=0)
def _prefill(graphdef, state, ids: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, state)
    b, p = ids.shape
    positions = jnp.broadcast_to(jnp.arange(p), (b, p))
    h, cache = model.hidden(ids, positions, init_cache(model.cfg, b, p, model.dtype))
    return model.project(h[:, -1]), cache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    ap.add_argument("--shapes", nargs="+", default=["16x128", "16x512"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--impls", nargs="+", default=["einsum", "xla"], help="run in this order within each repeat"
    )
    args = ap.parse_args()
    impls = list(args.impls)
    if jax.default_backend() == "gpu" and jnp.dtype(args.dtype) in (jnp.bfloat16, jnp.float16):
        impls.append("cudnn")
    rows = []
    for name in args.models:
        lm = load_model(name, dtype=args.dtype)
        splits = {}
        for impl in impls:
            attention_impl(impl, lm.dtype)
            use_attention(lm.model, impl)
            splits[impl] = nnx.split(lm.model)
        for shape in args.shapes:
            b, p = map(int, shape.split("x"))
            ids = jnp.asarray(
                np.random.default_rng(0).integers(3, min(1000, lm.config.vocab_size), (b, p)), jnp.int32
            )
            times = {impl: [] for impl in impls}
            outs = {}
            for impl in impls:  # compile (and check the two agree on the last logits)
                outs[impl] = np.asarray(jax.block_until_ready(_prefill(*splits[impl], ids))[0])
            for _ in range(args.repeats):
                for impl in impls:
                    start = time.perf_counter()
                    jax.block_until_ready(_prefill(*splits[impl], ids))
                    times[impl].append(time.perf_counter() - start)
            load = os.getloadavg()[0]
            for impl in impls:
                row = dict(
                    model=name,
                    shape=shape,
                    impl=impl,
                    median_s=float(np.median(times[impl])),
                    min_s=float(np.min(times[impl])),
                    max_abs_logit_diff_vs_einsum=float(
                        np.abs(outs[impl] - outs.get("einsum", outs[impl])).max()
                    ),
                    load1=load,
                    backend=jax.default_backend(),
                    dtype=args.dtype,
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\nmodel | shape | impl | median s | min s | load")
    for r in rows:
        print(
            f"{r['model']} | {r['shape']} | {r['impl']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['load1']:.1f}"
        )


if __name__ == "__main__":
    main()
