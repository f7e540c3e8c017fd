"""The least time the LM-Polygraph workload of bench_runner.py can take on this machine: its matmul FLOPs at the
best matmul rate this process sees, plus the imports a run must pay before its first model call (issue 24).

calib runs the workload in this process with every model call counted:
- the LM (SmolLM2-135M, JAX): each distinct token position fed to it once (prompts and answers in a prefix tree, so
  shared prefixes and the prompt shared by a question's samples count once; an answer's last token is never fed),
  2 x block weights per position, plus the LM head (2 x vocab x width) where logits are needed: every generated
  token and every scored continuation token;
- the sentence encoder (all-MiniLM-L6-v2, torch): each distinct text's tokens, 2 x the encoder's layer weights;
- attention over the context, norms, sampling and everything else count as free.

Rates: repeated 2048^3 f32 matmuls (JAX for the LM, torch for the encoder), sampled in rounds interleaved through
the run (before it, after it, after the import timings, at the end); the FLOPs are priced at the best sample, since
on a shared machine every slower one measures the neighbours, not the cores.

Two floors, both printed and written:
- strict: compute + every import a run pays (a fresh interpreter, in series), as the first version of this script;
- overlapped: compute + the imports needed before the first model call (jax, flax, hydra, transformers) + half of
  the rest (torch, sentence-transformers, sklearn, matplotlib, pandas, pyarrow, rouge-score), which can load on one
  of the two cores while the other computes (calib imports them after its first model call, except pandas, which
  calib.pipeline.run imports at its top; torch loads with the sentence encoder in a background thread).

    python benchmarks/bench_runner_floor.py                 # writes benchmarks/results/bench_runner_floor.json
    python benchmarks/bench_runner_floor.py --reuse-counts  # the work counted by the last run, re-priced (~1 min)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_runner import REFERENCE_SECONDS, ROOT, TARGET_SPEEDUP, write_results

# What must be imported before the first model call: config composition, the model's code, the tokenizer.
CRITICAL_IMPORTS = ["jax", "flax.nnx", "hydra", "transformers"]
# What a run imports but could load while the model computes (the encoder, the report, metrics, tables).
OVERLAPPABLE_IMPORTS = [
    "torch",
    "sentence_transformers",
    "sklearn",
    "matplotlib.pyplot",
    "pandas",
    "pyarrow",
    "rouge_score.rouge_scorer",
]
RESULTS = ROOT / "benchmarks" / "results" / "bench_runner_floor.json"


class PrefixTree:
    """Counts distinct token positions: a sequence adds one position per token not already on a stored path."""

    def __init__(self) -> None:
        self.root: dict = {}
        self.positions = 0

    def add(self, ids) -> None:
        node = self.root
        for t in ids:
            nxt = node.get(int(t))
            if nxt is None:
                nxt = node[int(t)] = {}
                self.positions += 1
            node = nxt


class Work:
    """What the model calls of one run had to compute, counted as they happen."""

    def __init__(self) -> None:
        self.lm = PrefixTree()
        self.lm_logits = 0  # positions whose full logits are needed
        self.lm_config = None  # the config of the model the run called
        self.encoder_tokens = 0
        self.encoder_texts = 0
        self.encoder_flops_per_token = 0

    def instrument(self) -> None:
        import calib.decode as decode
        from calib.semantic.embedding import EmbeddingSimilarity

        generate, score, encode = decode.generate, decode.score, EmbeddingSimilarity.encode

        def counted_generate(lm, prompts, **kwargs):
            gens = generate(lm, prompts, **kwargs)
            self.lm_config = lm.config
            for prompt, rows in zip(prompts, gens.token_ids):
                ids = lm.encode(prompt)
                for row in rows:
                    self.lm.add([*ids, *row[:-1]])  # the last token is sampled, never fed back
                    self.lm_logits += len(row)
            return gens

        def counted_score(lm, prompts, continuations, **kwargs):
            self.lm_config = lm.config
            for prompt, cont in zip(prompts, continuations):
                cont_ids = lm.tokenizer(cont, add_special_tokens=False)["input_ids"]
                self.lm.add([*lm.encode(prompt), *cont_ids[:-1]])  # the last token is scored, not fed
                self.lm_logits += len(cont_ids)
            return score(lm, prompts, continuations, **kwargs)

        def counted_encode(backend, texts):
            out = encode(backend, texts)
            distinct = list(dict.fromkeys(texts))
            encoder = backend.encoder
            self.encoder_texts += len(distinct)
            self.encoder_tokens += sum(len(t) for t in encoder.tokenizer(distinct)["input_ids"])
            c = encoder[0].auto_model.config
            self.encoder_flops_per_token = (
                2 * c.num_hidden_layers * (4 * c.hidden_size**2 + 2 * c.hidden_size * c.intermediate_size)
            )
            return out

        decode.generate, decode.score = counted_generate, counted_score
        EmbeddingSimilarity.encode = counted_encode


class RateProbe:
    """Best f32 2048^3 matmul rate of JAX and torch in this process, sampled whenever `sample()` is called."""

    def __init__(self, n: int = 2048, reps: int = 5) -> None:
        import jax
        import jax.numpy as jnp
        import torch

        self.n, self.reps, self.torch = n, reps, torch
        self.jax_a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        self.jax_f = jax.jit(lambda x: x @ x)
        self.jax_f(self.jax_a).block_until_ready()
        self.torch_a = torch.randn(n, n)
        self.samples: dict[str, list[float]] = {"jax": [], "torch": []}

    def _gflops(self, seconds: float) -> float:
        return 2 * self.n**3 * self.reps / seconds / 1e9

    def _jax(self) -> float:
        start = time.perf_counter()
        for _ in range(self.reps):
            out = self.jax_f(self.jax_a)
        out.block_until_ready()
        return self._gflops(time.perf_counter() - start)

    def _torch(self) -> float:
        with self.torch.inference_mode():
            self.torch_a @ self.torch_a
            start = time.perf_counter()
            for _ in range(self.reps):
                self.torch_a @ self.torch_a
        return self._gflops(time.perf_counter() - start)

    def sample(self, repeats: int = 3) -> None:
        for _ in range(repeats):  # interleaved, so both libraries see the same moments of the machine
            self.samples["jax"].append(self._jax())
            self.samples["torch"].append(self._torch())

    def best(self, lib: str) -> float:
        return max(self.samples[lib])

    def median(self, lib: str) -> float:
        return statistics.median(self.samples[lib])


def import_seconds() -> dict[str, float]:
    """Seconds a fresh interpreter spends on each import, in the order listed (so shared dependencies count once,
    where first needed), best of two interpreters; start-up and exit excluded: a lower bound, as a floor must be."""
    code = (
        "import importlib, time\n"
        f"for name in {CRITICAL_IMPORTS + OVERLAPPABLE_IMPORTS!r}:\n"
        "    t = time.perf_counter(); importlib.import_module(name); print(name, time.perf_counter() - t)\n"
    )
    best: dict[str, float] = {}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            name, seconds = line.split()
            best[name] = min(best.get(name, float("inf")), float(seconds))
    return best


def run_calib(work: Work, workdir: Path) -> dict:
    """The run's manifest; `work` has counted its model calls."""
    from calib.cli import main as calib_main

    os.environ["HF_HUB_OFFLINE"] = "1"
    work.instrument()
    sys.argv = [
        "calib",
        "experiment=polygraph_bench",
        "progress=false",
        f"artifacts_dir={workdir / 'artifacts'}",
        f"hydra.run.dir={workdir / 'run'}",
    ]
    try:
        calib_main()
    except SystemExit as done:
        if done.code:
            raise
    return json.loads((workdir / "run" / "manifest.json").read_text())


def count_work() -> dict:
    """Runs the workload in-process and returns its counted work and calib's own timings."""
    work = Work()
    with tempfile.TemporaryDirectory(prefix="bench_floor_") as tmp:
        manifest = run_calib(work, Path(tmp))
    cfg = work.lm_config
    head = 2 * cfg.vocab_size * cfg.embed_dim
    return {
        "lm_positions": work.lm.positions,
        "lm_logit_positions": work.lm_logits,
        "lm_tflop": (work.lm.positions * (cfg.flops_per_token - head) + work.lm_logits * head) / 1e12,
        "encoder_texts": work.encoder_texts,
        "encoder_tokens": work.encoder_tokens,
        "encoder_tflop": work.encoder_tokens * work.encoder_flops_per_token / 1e12,
        "calib_seconds": manifest["seconds"],
        "calib_stages": {k: v.get("seconds") for k, v in manifest["stages"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reuse-counts",
        action="store_true",
        help=f"re-price the work counted by the last full run ({RESULTS.name}) instead of running calib",
    )
    args = parser.parse_args()
    if args.reuse_counts and not RESULTS.exists():
        parser.error(f"--reuse-counts needs {RESULTS} from a full run")
    probe = RateProbe()
    probe.sample()
    if args.reuse_counts:
        old = json.loads(RESULTS.read_text())
        keys = [
            "lm_positions",
            "lm_logit_positions",
            "lm_tflop",
            "encoder_texts",
            "encoder_tokens",
            "encoder_tflop",
        ]
        counts = {k: old[k] for k in keys} | {
            "counts_from": f"{RESULTS.name} of an earlier run (--reuse-counts)"
        }
    else:
        counts = count_work() | {"counts_from": "this run"}
        probe.sample()
    imports = import_seconds()
    probe.sample()
    probe.sample()
    jax_rate, torch_rate = probe.best("jax"), probe.best("torch")
    lm_s, encoder_s = counts["lm_tflop"] * 1e3 / jax_rate, counts["encoder_tflop"] * 1e3 / torch_rate
    compute = lm_s + encoder_s
    compute_median = (
        counts["lm_tflop"] / probe.median("jax") + counts["encoder_tflop"] / probe.median("torch")
    ) * 1e3
    critical = sum(imports[n] for n in CRITICAL_IMPORTS)
    overlappable = sum(imports[n] for n in OVERLAPPABLE_IMPORTS)
    strict, overlapped = compute + critical + overlappable, compute + critical + overlappable / 2
    target = REFERENCE_SECONDS / TARGET_SPEEDUP
    print(f"work counted in {counts['counts_from']}")
    print(
        f"LM: {counts['lm_positions']} distinct token positions, {counts['lm_logit_positions']} with logits: "
        f"{counts['lm_tflop']:.2f} TFLOP at {jax_rate:.0f} GFLOP/s (best JAX f32 2048^3 matmul): {lm_s:.1f} s"
    )
    print(
        f"encoder: {counts['encoder_texts']} distinct texts, {counts['encoder_tokens']} tokens: "
        f"{counts['encoder_tflop']:.2f} TFLOP at {torch_rate:.0f} GFLOP/s (best torch matmul): {encoder_s:.1f} s"
    )
    for lib, samples in probe.samples.items():
        print(f"  {lib} matmul samples, GFLOP/s: {' '.join(f'{r:.0f}' for r in samples)}")
    print("imports (fresh interpreter, in order, best of 2):")
    for name, seconds in imports.items():
        print(
            f"  {name:26s} {seconds:5.2f} s  {'before first model call' if name in CRITICAL_IMPORTS else 'can overlap'}"
        )
    print(
        f"strict floor     {strict:5.1f} s = compute {compute:.1f} + imports {critical:.1f} + {overlappable:.1f}"
    )
    print(
        f"overlapped floor {overlapped:5.1f} s = compute {compute:.1f} + imports {critical:.1f} + {overlappable:.1f} / 2"
    )
    print(
        f"(compute at the median samples, {probe.median('jax'):.0f} / {probe.median('torch'):.0f} GFLOP/s: "
        f"{compute_median:.1f} s)"
    )
    print(f"target {target:.1f} s (538 s / {TARGET_SPEEDUP:.0f})")
    if "calib_seconds" in counts:
        print(f"calib took {counts['calib_seconds']:.1f} s in this run")
    write_results(
        RESULTS.name,
        {
            **counts,
            "jax_matmul_gflops": jax_rate,
            "torch_matmul_gflops": torch_rate,
            "matmul_samples_gflops": probe.samples,
            "import_seconds": imports,
            "import_critical_seconds": critical,
            "import_overlappable_seconds": overlappable,
            "compute_seconds": compute,
            "compute_seconds_at_median_rates": compute_median,
            "floor_strict_seconds": strict,
            "floor_overlapped_seconds": overlapped,
            "target_seconds": target,
        },
    )


if __name__ == "__main__":
    main()
