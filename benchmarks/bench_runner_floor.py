"""The least time the LM-Polygraph workload of bench_runner.py can take on this machine: its matmul FLOPs at the
machine's own measured matmul rate, plus the imports every run pays.

calib runs the workload in this process with every model call counted:
- the LM (SmolLM2-135M, JAX): each distinct token position fed to it once (prompts and answers in a prefix tree, so
  shared prefixes and the prompt shared by a question's samples count once; an answer's last token is never fed),
  2 x block weights per position, plus the LM head (2 x vocab x width) where logits are needed: every generated
  token and every scored continuation token;
- the sentence encoder (all-MiniLM-L6-v2, torch): each distinct text's tokens, 2 x the encoder's layer weights;
- attention over the context, norms, sampling and everything else count as free.

The floor is those FLOPs at the rate of a large f32 matmul in the same run (JAX for the LM, torch for the encoder),
the best any implementation reaches on these cores, plus the import time of a fresh interpreter.

    python benchmarks/bench_runner_floor.py      # writes benchmarks/results/bench_runner_floor.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_decode import matmul_gflops
from bench_runner import REFERENCE_SECONDS, TARGET_SPEEDUP, write_results

IMPORTS = "import jax, flax.nnx, hydra, transformers, torch, sentence_transformers, matplotlib.pyplot, pyarrow, sklearn"


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


def torch_matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a = torch.randn(n, n)
    with torch.inference_mode():
        a @ a
        start = time.perf_counter()
        for _ in range(reps):
            a @ a
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def import_seconds() -> float:
    """Seconds a fresh interpreter spends importing the libraries a run needs (not its start-up or exit), best of
    two; a lower bound, as a floor must be."""
    code = f"import time; t = time.perf_counter(); {IMPORTS}; print(time.perf_counter() - t)"
    runs = [
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        for _ in range(2)
    ]
    return min(float(r.stdout.split()[-1]) for r in runs)


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


def main() -> None:
    work = Work()
    with tempfile.TemporaryDirectory(prefix="bench_floor_") as tmp:
        manifest = run_calib(work, Path(tmp))
    cfg = work.lm_config
    head = 2 * cfg.vocab_size * cfg.embed_dim
    lm_flops = work.lm.positions * (cfg.flops_per_token - head) + work.lm_logits * head
    encoder_flops = work.encoder_tokens * work.encoder_flops_per_token
    jax_rate, torch_rate, imports = matmul_gflops(), torch_matmul_gflops(), import_seconds()
    lm_s, encoder_s = lm_flops / jax_rate / 1e9, encoder_flops / torch_rate / 1e9
    floor = lm_s + encoder_s + imports
    target = REFERENCE_SECONDS / TARGET_SPEEDUP
    print(
        f"LM: {work.lm.positions} distinct token positions, {work.lm_logits} with logits: {lm_flops / 1e12:.2f} TFLOP"
    )
    print(f"  at {jax_rate:.0f} GFLOP/s (JAX f32 2048^3 matmul): {lm_s:.1f} s")
    print(
        f"encoder: {work.encoder_texts} distinct texts, {work.encoder_tokens} tokens: {encoder_flops / 1e12:.2f} TFLOP"
    )
    print(f"  at {torch_rate:.0f} GFLOP/s (torch f32 2048^3 matmul): {encoder_s:.1f} s")
    print(f"imports of a fresh interpreter: {imports:.1f} s")
    print(f"floor {floor:.1f} s; target {target:.1f} s (538 s / {TARGET_SPEEDUP:.0f})")
    print(f"calib took {manifest['seconds']:.1f} s in this run")
    write_results(
        "bench_runner_floor.json",
        {
            "lm_positions": work.lm.positions,
            "lm_logit_positions": work.lm_logits,
            "lm_tflop": lm_flops / 1e12,
            "encoder_texts": work.encoder_texts,
            "encoder_tokens": work.encoder_tokens,
            "encoder_tflop": encoder_flops / 1e12,
            "jax_matmul_gflops": jax_rate,
            "torch_matmul_gflops": torch_rate,
            "import_seconds": imports,
            "floor_seconds": floor,
            "target_seconds": target,
            "calib_seconds": manifest["seconds"],
            "calib_stages": {k: v.get("seconds") for k, v in manifest["stages"].items()},
        },
    )


if __name__ == "__main__":
    main()
