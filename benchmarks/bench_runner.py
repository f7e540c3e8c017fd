"""calib against LM-Polygraph on the same work, end to end (a fresh `calib` process, nothing generated before).

Workload (issue 7): SmolLM2-135M-Instruct (fp32) over 40 "Q: What is the capital of {country}?\\nA:" prompts,
greedy answer + 10 samples of up to 16 new tokens, the estimators both toolkits have (configs/experiment/
polygraph_bench.yaml). Without LM-Polygraph in the same call it compares with issue 7's 538 s; side by side on
the quiet 2-core machine (2026-12-05) LM-Polygraph 0.7.0 took 702-728 s and calib 83-88 s (docs/benchmarks.md).

    python benchmarks/bench_runner.py                      # calib: cold compile + warm compile cache
    LM_POLYGRAPH_PYTHON=/path/to/env/bin/python python benchmarks/bench_runner.py   # + LM-Polygraph side by side

Each calib run uses a fresh artifact store, so generation really happens; "cold" also disables JAX's persistent
compilation cache (a first run on a new machine), "warm" keeps it (every later run). The JSON goes to
benchmarks/results/bench_runner.json. LM-Polygraph is run only when $LM_POLYGRAPH_PYTHON names a Python in which
`import lm_polygraph` works (its own venv, see docs/benchmarks.md), offline, with its NLI and cross-encoder models
replaced by the MiniLM cosine calib uses.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SECONDS = 538.0  # LM-Polygraph 0.7.0, measured on these CPUs (issue 7)
TARGET_SPEEDUP = 10.0

POLYGRAPH_SCRIPT = r"""
# LM-Polygraph 0.7.0's UEManager on the workload, offline. Its calculators run unchanged except the two models they
# would fetch from the hub: the DeBERTa NLI model (SemanticMatrixCalculator) and the RoBERTa cross-encoder
# (CrossEncoderSimilarityMatrixCalculator) are replaced by the MiniLM cosine calib uses, through the same
# interfaces (an NLI model whose logits come from the cosine; a cross-encoder whose predict() is the cosine).
import json, sys, time, types
started = time.perf_counter()
import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from sentence_transformers import SentenceTransformer
from lm_polygraph.estimators import (DegMat, Eccentricity, EigValLaplacian, KernelLanguageEntropy,
    LexicalSimilarity, MaximumSequenceProbability, MeanTokenEntropy, NumSemSets, Perplexity, PTrue,
    PTrueSampling, SAR, SemanticEntropy, SentenceSAR, TokenSAR)
from lm_polygraph.stat_calculators.cross_encoder_similarity import CrossEncoderSimilarityMatrixCalculator
from lm_polygraph.stat_calculators.semantic_matrix import SemanticMatrixCalculator
from lm_polygraph.utils.model import WhiteboxModel
from lm_polygraph.utils.generation_parameters import GenerationParameters
from lm_polygraph.utils.manager import UEManager
from lm_polygraph.utils.dataset import Dataset
from lm_polygraph.utils.builder_enviroment_stat_calculator import BuilderEnvironmentStatCalculator
from lm_polygraph.defaults.register_default_stat_calculators import register_default_stat_calculators

def mark(what):  # progress on stderr, so a slow or stuck run shows where it is
    print(f"[lm-polygraph] {time.perf_counter() - started:7.1f} s {what}", file=sys.stderr, flush=True)


mark("imported")
spec = json.load(open(sys.argv[1]))
torch.manual_seed(spec["seed"])
minilm = SentenceTransformer(spec["minilm"], device="cpu", local_files_only=True)
THRESHOLD = spec["threshold"]  # calib's "equivalent" cut-off for MiniLM cosine


def cosine(first, second):
    # each distinct text of the call encoded once, unit-norm; cos of each pair
    distinct = sorted(set(first) | set(second))
    index = {t: i for i, t in enumerate(distinct)}
    e = minilm.encode(distinct, batch_size=256, normalize_embeddings=True, convert_to_numpy=True,
                      show_progress_bar=False)
    a = e[[index[t] for t in first]]
    b = e[[index[t] for t in second]]
    return (a * b).sum(axis=1).astype(np.float32)


class Encoded(dict):
    def to(self, device):
        return self


class CosineNLI:
    # LM-Polygraph's Deberta wrapper, answering with logits (contradiction, neutral, entailment) = 10 * (1.7 - c,
    # 0.85, c): entailment wins iff cos > 0.85 (calib's threshold), contradiction otherwise
    batch_size, device = 10, "cpu"
    label2id = {"CONTRADICTION": 0, "NEUTRAL": 1, "ENTAILMENT": 2}

    def __init__(self):
        self.deberta = self
        self.deberta_tokenizer = self
        self.config = types.SimpleNamespace(label2id=self.label2id)

    def __call__(self, batch=None, padding=True, return_tensors="pt", pairs=None):
        if pairs is None:  # the tokenizer: keep the texts for the "model"
            return Encoded(pairs=list(batch))
        c = torch.from_numpy(cosine([p for p, _ in pairs], [h for _, h in pairs]))
        logits = 10.0 * torch.stack([2 * THRESHOLD - c, torch.full_like(c, THRESHOLD), c], dim=1)
        return types.SimpleNamespace(logits=logits)


class CosineCrossEncoder:
    def predict(self, pairs, batch_size=32, **_):
        pairs = list(pairs)
        return np.clip(cosine([p for p, _ in pairs], [h for _, h in pairs]), 0.0, 1.0)


class MiniLMCrossEncoderCalculator(CrossEncoderSimilarityMatrixCalculator):
    def _setup(self, device="cpu"):
        self.crossencoder = CosineCrossEncoder()


nli = CosineNLI()
builders = {
    "SemanticMatrixCalculator": lambda config, env: SemanticMatrixCalculator(nli),
    "CrossEncoderSimilarityMatrixCalculator": lambda config, env: MiniLMCrossEncoderCalculator(config.batch_size),
}
calculators = register_default_stat_calculators("Whitebox")
for container in calculators:
    if container.name in builders:
        module = types.ModuleType(f"minilm_{container.name}")
        module.load_stat_calculator = builders[container.name]
        sys.modules[module.__name__] = module
        container.builder = module.__name__

folder, name = spec["gguf"].rsplit("/", 1)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
# eager attention: LM-Polygraph's default GreedyProbsCalculator asks for attention weights, which sdpa cannot return
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32,
                                             attn_implementation="eager")
# answers end at a newline, as calib's decoding.stop: without it every answer and sample ran all max_new_tokens
params = GenerationParameters(max_new_tokens=spec["max_new_tokens"], stop_strings=spec["stop"])
mark("model loaded")
whitebox = WhiteboxModel(model, tokenizer, model_path=name, generation_parameters=params)
estimators = [MaximumSequenceProbability(), Perplexity(), MeanTokenEntropy(), PTrue(), PTrueSampling(),
              LexicalSimilarity("rougeL"), NumSemSets(), EigValLaplacian(), DegMat(), Eccentricity(),
              SemanticEntropy(), KernelLanguageEntropy(), TokenSAR(), SentenceSAR(), SAR()]
manager = UEManager(Dataset(spec["prompts"], [""] * len(spec["prompts"]), batch_size=1), whitebox, estimators,
                    available_stat_calculators=calculators,
                    builder_env_stat_calc=BuilderEnvironmentStatCalculator(whitebox),
                    generation_metrics=[], ue_metrics=[], processors=[], ignore_exceptions=False, verbose=False)
manager()
mark("done")
values = {str(k[1]): [float(x) for x in v] for k, v in manager.estimations.items()}
print(json.dumps({"seconds": time.perf_counter() - started, "estimators": len(estimators), "values": values}))
"""


def run_calib(label: str, workdir: Path, cold: bool, questions: int, samples: int, tokens: int) -> dict:
    """One fresh `calib` process on the workload; wall time plus the stage times from its manifest."""
    run_dir, artifacts = workdir / label, workdir / f"{label}-artifacts"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if cold:
        env["CALIB_NO_COMPILATION_CACHE"] = "1"
    command = [
        sys.executable,
        "-m",
        "calib.cli",
        "experiment=polygraph_bench",
        f"task.limit={questions}",
        f"decoding.num_samples={samples}",
        f"decoding.max_new_tokens={tokens}",
        "progress=false",
        f"artifacts_dir={artifacts}",
        f"hydra.run.dir={run_dir}",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"calib failed ({label}):\n{done.stderr[-3000:]}")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages = {name: round(info.get("seconds", 0.0), 1) for name, info in manifest["stages"].items()}
    return {
        "run": f"calib ({label})",
        "seconds": round(seconds, 1),
        "stages": stages,
        "estimators": len(manifest["summary"]["estimators"]),
        "accuracy": manifest["summary"]["accuracy"],
    }


def polygraph_available(python: str | None) -> bool:
    if not python:
        return False
    probe = subprocess.run([python, "-c", "import lm_polygraph"], capture_output=True)
    return probe.returncode == 0


def run_polygraph(python: str, workdir: Path, questions: int, tokens: int, samples: int) -> dict:
    """LM-Polygraph's UEManager on the same prompts in its own environment: the same GGUF dequantized to fp32 by
    transformers, the same MiniLM folder for its NLI / cross-encoder statistics (offline)."""
    from calib.models.builtin import BUILTIN_GGUF
    from calib.semantic.embedding import default_model_path
    from calib.tasks import load_task

    if samples != 10:
        return {
            "run": "LM-Polygraph",
            "error": "its SamplingGenerationCalculator draws 10 samples; use --samples 10",
        }
    task = load_task("capitals", limit=questions, seed=0)
    spec = {
        "gguf": str(BUILTIN_GGUF["smollm2-135m-instruct"]()),
        "minilm": default_model_path(),
        "threshold": 0.85,
        "seed": 0,
        "prompts": [f"Q: {ex.question}\nA:" for ex in task],
        "max_new_tokens": tokens,
        "stop": ["\n"],  # calib's default decoding.stop
    }
    (workdir / "polygraph.json").write_text(json.dumps(spec))
    (workdir / "polygraph.py").write_text(POLYGRAPH_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(
        [python, str(workdir / "polygraph.py"), str(workdir / "polygraph.json")],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() if done.stderr else ["failed"]
        return {"run": "LM-Polygraph", "error": "\n".join(lines[-12:])}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "run": "LM-Polygraph 0.7.0 (now)",
        "seconds": round(seconds, 1),
        "estimators": report["estimators"],
        "values": report["values"],
    }


# The work bench_runner_floor.py counted on 2026-12-05 10:25 UTC (docs/benchmarks.md), used when its JSON is absent.
FLOOR_COUNTS = {
    "lm_tflop": 2.78,
    "encoder_tflop": 2.32,
    "import_critical_seconds": 1.8,
    "import_overlappable_seconds": 4.5,
}


def floor_by_stage(jax_rate: float, torch_rate: float) -> dict:
    """The work bench_runner_floor.py counted (its last JSON, else FLOOR_COUNTS), priced at this run's best matmul
    rates: the LM's compute (generate and estimate stages) and the encoder's (SAR, clustering), in seconds."""
    path = ROOT / "benchmarks" / "results" / "bench_runner_floor.json"
    counted = json.loads(path.read_text()) if path.exists() else FLOOR_COUNTS
    lm = counted["lm_tflop"] * 1e3 / jax_rate
    encoder = counted["encoder_tflop"] * 1e3 / torch_rate
    return {
        "lm_compute_s": round(lm, 1),
        "encoder_compute_s": round(encoder, 1),
        "imports_critical_s": round(counted["import_critical_seconds"], 1),
        "imports_overlappable_s": round(counted["import_overlappable_seconds"], 1),
        "floor_strict_s": round(
            lm + encoder + counted["import_critical_seconds"] + counted["import_overlappable_seconds"], 1
        ),
        "floor_overlapped_s": round(
            lm + encoder + counted["import_critical_seconds"] + counted["import_overlappable_seconds"] / 2, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--skip-cold", action="store_true", help="only the warm-cache run")
    parser.add_argument("--no-rate", action="store_true", help="skip the matmul rate probe (jax + torch)")
    args = parser.parse_args()

    probe = None
    if not args.no_rate:
        from bench_runner_floor import RateProbe  # imports jax and torch: only when the rate is wanted

        probe = RateProbe()
        probe.sample()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as tmp:
        workdir = Path(tmp)
        if not args.skip_cold:
            rows.append(run_calib("cold", workdir, True, args.questions, args.samples, args.max_new_tokens))
        rows.append(run_calib("warm", workdir, False, args.questions, args.samples, args.max_new_tokens))
        if probe:
            probe.sample()
        python = os.environ.get("LM_POLYGRAPH_PYTHON")
        polygraph = None
        if polygraph_available(python):
            polygraph = run_polygraph(python, workdir, args.questions, args.max_new_tokens, args.samples)
            if probe:
                probe.sample()
        else:
            print("LM-Polygraph: skipped ($LM_POLYGRAPH_PYTHON unset or without lm_polygraph)")

    print(
        f"\n{args.questions} questions, greedy + {args.samples} samples of <= {args.max_new_tokens} new tokens; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    measured = polygraph.get("seconds") if polygraph else None
    reference = measured or REFERENCE_SECONDS
    label = "vs LM-P now" if measured else "vs 538 s"
    print(f"{'run':32s} {'seconds':>8s} {'s/question':>11s} {label:>11s}  stages (s)")
    shown = [] if measured else [{"run": "LM-Polygraph 0.7.0 (issue 7)", "seconds": REFERENCE_SECONDS}]
    for row in [*shown, *([polygraph] if polygraph else []), *rows]:
        if "error" in row:
            print(f"{row['run']:32s} failed: {row['error']}")
            continue
        speedup = reference / row["seconds"]
        stages = " ".join(f"{k} {v}" for k, v in row.get("stages", {}).items())
        print(
            f"{row['run']:32s} {row['seconds']:8.1f} {row['seconds'] / args.questions:11.2f} {speedup:10.2f}x  {stages}"
        )
    best = min(r["seconds"] for r in rows)
    ratio = reference / best
    source = (
        "LM-Polygraph measured in this run"
        if measured
        else "LM-Polygraph's 538 s of issue 7 (not measured now)"
    )
    verdict = "meets" if ratio >= TARGET_SPEEDUP else "misses"
    print(f"calib (warm) is {ratio:.2f}x faster than {source}; target {TARGET_SPEEDUP:.0f}x: {verdict}")
    rates = floor = None
    if probe:
        rates = {lib: [round(r) for r in probe.samples[lib]] for lib in probe.samples}
        print(
            f"matmul f32 2048^3 GFLOP/s, best (samples): jax {probe.best('jax'):.0f} {rates['jax']}, "
            f"torch {probe.best('torch'):.0f} {rates['torch']}"
        )
        default_work = (args.questions, args.samples, args.max_new_tokens) == (40, 10, 16)
        floor = floor_by_stage(probe.best("jax"), probe.best("torch")) if default_work else None
        if floor:
            warm = rows[-1]["stages"]
            print(
                f"floor at these rates (work counted by bench_runner_floor.py): LM {floor['lm_compute_s']} s "
                f"(generation + scoring; calib: generate {warm.get('generate', '?')}, estimate "
                f"{warm.get('estimate', '?')}), encoder {floor['encoder_compute_s']} s (calib: semantic "
                f"{warm.get('semantic', '?')}), imports {floor['imports_critical_s']} + "
                f"{floor['imports_overlappable_s']}; strict {floor['floor_strict_s']} s, overlapped "
                f"{floor['floor_overlapped_s']} s, calib warm {rows[-1]['seconds']} s"
            )
        else:
            print("floor: counted for the default workload (40 questions, 10 samples, 16 tokens) only")
    write_results(
        "bench_runner.json",
        {
            "workload": vars(args),
            "reference_seconds": reference,
            "reference_source": source,
            "speedup_warm": ratio,
            "calib": rows,
            "lm_polygraph": polygraph or "skipped (not installed)",
            "matmul_gflops_samples": rates,
            "floor_at_these_rates": floor,
        },
    )


def write_results(name: str, results: dict) -> None:
    """benchmarks/results/<name>, with the load average the numbers were measured under."""
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**results, "load_average": os.getloadavg()}, indent=1))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
