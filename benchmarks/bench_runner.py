"""calib against LM-Polygraph on the same work, end to end (a fresh `calib` process, nothing generated before).

Workload (issue 7): SmolLM2-135M-Instruct (fp32) over 40 "Q: What is the capital of {country}?\\nA:" prompts,
greedy answer + 10 samples of up to 16 new tokens, the estimators both toolkits have (configs/experiment/
polygraph_bench.yaml). Reference: LM-Polygraph 0.7.0 took 538 s for this on these 2 CPUs (~35 estimators).

    python benchmarks/bench_runner.py                      # calib: cold compile + warm compile cache
    LM_POLYGRAPH_PYTHON=/path/to/env/bin/python python benchmarks/bench_runner.py   # + LM-Polygraph side by side

Each calib run uses a fresh artifact store, so generation really happens; "cold" also disables JAX's persistent
compilation cache (a first run on a new machine), "warm" keeps it (every later run). The JSON goes to
benchmarks/results/bench_runner.json. LM-Polygraph is run only when $LM_POLYGRAPH_PYTHON names a Python in which
`import lm_polygraph` works (it is heavy and needs its NLI model from the hub, so it lives in its own env).
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
import json, sys, time
started = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from lm_polygraph.estimators import (DegMat, Eccentricity, EigValLaplacian, KernelLanguageEntropy,
    LexicalSimilarity, MaximumSequenceProbability, MeanTokenEntropy, NumSemSets, Perplexity, PTrue,
    PTrueSampling, SAR, SemanticEntropy, SentenceSAR, TokenSAR)
from lm_polygraph.utils.model import WhiteboxModel
from lm_polygraph.utils.generation_parameters import GenerationParameters
from lm_polygraph.utils.manager import UEManager
from lm_polygraph.utils.dataset import Dataset
from lm_polygraph.utils.builder_enviroment_stat_calculator import BuilderEnvironmentStatCalculator
from lm_polygraph.defaults.register_default_stat_calculators import register_default_stat_calculators

spec = json.load(open(sys.argv[1]))
folder, name = spec["gguf"].rsplit("/", 1)
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
params = GenerationParameters(max_new_tokens=spec["max_new_tokens"])
whitebox = WhiteboxModel(model, tokenizer, model_path=name, generation_parameters=params)
estimators = [MaximumSequenceProbability(), Perplexity(), MeanTokenEntropy(), PTrue(), PTrueSampling(),
              LexicalSimilarity("rougeL"), NumSemSets(), EigValLaplacian(), DegMat(), Eccentricity(),
              SemanticEntropy(), KernelLanguageEntropy(), TokenSAR(), SentenceSAR(), SAR()]
manager = UEManager(Dataset(spec["prompts"], [""] * len(spec["prompts"]), batch_size=1), whitebox, estimators,
                    available_stat_calculators=register_default_stat_calculators("Whitebox"),
                    builder_env_stat_calc=BuilderEnvironmentStatCalculator(whitebox),
                    generation_metrics=[], ue_metrics=[], processors=[], ignore_exceptions=False, verbose=False)
manager()
print(json.dumps({"seconds": time.perf_counter() - started, "estimators": len(estimators)}))
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


def run_polygraph(python: str, workdir: Path, questions: int, tokens: int) -> dict:
    """LM-Polygraph's UEManager on the same prompts in its own environment (weights from the same GGUF)."""
    from calib.models.builtin import BUILTIN_GGUF
    from calib.tasks import load_task

    task = load_task("capitals", limit=questions, seed=0)
    spec = {
        "gguf": str(BUILTIN_GGUF["smollm2-135m-instruct"]()),
        "prompts": [f"Q: {ex.question}\nA:" for ex in task],
        "max_new_tokens": tokens,
    }
    (workdir / "polygraph.json").write_text(json.dumps(spec))
    (workdir / "polygraph.py").write_text(POLYGRAPH_SCRIPT)
    started = time.perf_counter()
    done = subprocess.run(
        [python, str(workdir / "polygraph.py"), str(workdir / "polygraph.json")],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {
            "run": "LM-Polygraph",
            "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed",
        }
    return {"run": "LM-Polygraph (measured now)", "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--skip-cold", action="store_true", help="only the warm-cache run")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_runner_") as tmp:
        workdir = Path(tmp)
        if not args.skip_cold:
            rows.append(run_calib("cold", workdir, True, args.questions, args.samples, args.max_new_tokens))
        rows.append(run_calib("warm", workdir, False, args.questions, args.samples, args.max_new_tokens))
        python = os.environ.get("LM_POLYGRAPH_PYTHON")
        polygraph = None
        if polygraph_available(python):
            polygraph = run_polygraph(python, workdir, args.questions, args.max_new_tokens)
        else:
            print("LM-Polygraph: skipped (not installed)")

    print(
        f"\n{args.questions} questions, greedy + {args.samples} samples of <= {args.max_new_tokens} new tokens"
    )
    print(f"{'run':32s} {'seconds':>8s} {'s/question':>11s} {'vs 538 s':>9s}  stages (s)")
    reference = {"run": "LM-Polygraph 0.7.0 (reference)", "seconds": REFERENCE_SECONDS}
    for row in [reference, *([polygraph] if polygraph else []), *rows]:
        if "error" in row:
            print(f"{row['run']:32s} failed: {row['error']}")
            continue
        speedup = REFERENCE_SECONDS / row["seconds"]
        stages = " ".join(f"{k} {v}" for k, v in row.get("stages", {}).items())
        print(
            f"{row['run']:32s} {row['seconds']:8.1f} {row['seconds'] / args.questions:11.2f} {speedup:8.1f}x  {stages}"
        )
    best = min(r["seconds"] for r in rows)
    verdict = "meets" if REFERENCE_SECONDS / best >= TARGET_SPEEDUP else "misses"
    print(
        f"target >= {TARGET_SPEEDUP:.0f}x faster than 538 s: {verdict} ({REFERENCE_SECONDS / best:.1f}x, warm)"
    )
    write_results(
        "bench_runner.json",
        {
            "workload": vars(args),
            "reference_seconds": REFERENCE_SECONDS,
            "calib": rows,
            "lm_polygraph": polygraph or "skipped (not installed)",
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
