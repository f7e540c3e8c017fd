"""The seven whole-distribution and attention estimators of issue 21 on SmolLM2-135M-Instruct, the main job's first 200
questions of `mixed`, greedy only (numbers in docs/estimators.md). Usage: python benchmarks/run_issue21_whitebox.py"""

import sys
import time
from pathlib import Path

from calib.cache import enable_compilation_cache
from calib.pipeline import RunConfig, run

enable_compilation_cache()
root = Path(sys.argv[1] if len(sys.argv) > 1 else "out/issue21_whitebox")
cfg = RunConfig()
print(
    "model",
    cfg.model.name,
    "task",
    cfg.task.name,
    "samples",
    cfg.decoding.num_samples,
    "max_new",
    cfg.decoding.max_new_tokens,
)
cfg.task.limit = 200
cfg.decoding.num_samples = 0
cfg.estimators.names = [
    "renyi_negentropy",
    "fisher_rao",
    "self_certainty",
    "boosted_prob_sequence",
    "rauq",
    "attention_score",
    "csl",
    "msp",
    "mean_token_entropy",
    "inverse_perplexity",
]
cfg.metrics.names = ["auroc", "ece"]
cfg.metrics.show = ["auroc"]
cfg.metrics.n_resamples = 200
cfg.report.figures = False
cfg.artifacts_dir = str(root / "a")
cfg.progress = False
t = time.time()
r = run(cfg, root / "run", print_summary=True)
print("seconds", round(time.time() - t, 1))
