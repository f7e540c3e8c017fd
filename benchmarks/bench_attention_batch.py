"""CSL's attention pass one sequence at a time against batched (calib.estimators.attention.attention_statistics,
batch=1, automatic (None) and 4), interleaved in one process, on SmolLM2-135M-Instruct over the first N questions of `mixed`
with their gold answers as the answer tokens; also the largest difference of the statistics and of CSL, RAUQ and the
attention score computed from them. Usage: python benchmarks/bench_attention_batch.py [N] [ROUNDS]"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from calib.cache import enable_compilation_cache
from calib.estimators.attention import (
    CSL_PROMPT,
    CSL_SUFFIX,
    attention_score,
    attention_statistics,
    csl,
    middle_layers,
    rauq,
)
from calib.models import load_model
from calib.pipeline import RunConfig, stages


def scores(stats: list[np.ndarray], answers: list[list[int]]) -> np.ndarray:
    """CSL, RAUQ and attention score per answer (log-probs stand-in: −1 per token, the same for both modes)."""
    out = []
    for s, a in zip(stats, answers):
        lp = -np.ones(len(a))
        t, n = len(a), s.shape[-1]
        out.append(
            [
                csl(lp, s[:, :, 1, n - t :]),
                rauq(lp, s[:, :, 0, n - t : n - 1], 0.2, middle_layers(s.shape[0])),
                attention_score(s[s.shape[0] // 2, :, 0]),
            ]
        )
    return np.asarray(out)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    enable_compilation_cache()
    lm = load_model("smollm2-135m-instruct")
    cfg = RunConfig()
    cfg.task.limit = n
    examples = stages.load_examples(cfg.task)
    prompts = [CSL_PROMPT.format(q=ex.question) for ex in examples]
    answers = [lm.tokenizer(" " + ex.answers[0], add_special_tokens=False)["input_ids"] for ex in examples]
    lengths = [len(lm.encode(p)) + len(a) for p, a in zip(prompts, answers)]
    modes = (("one", 1), ("batched", None), ("batch4", 4))
    runs: dict[str, list[float]] = {mode: [] for mode, _ in modes}
    stats = {}
    for mode, batch in modes:  # first call of each: compiles included
        t = time.perf_counter()
        stats[mode] = attention_statistics(lm, prompts, answers, CSL_SUFFIX, batch=batch)
        runs[f"{mode}_first"] = [time.perf_counter() - t]
    for _ in range(rounds):
        for mode, batch in modes:
            t = time.perf_counter()
            attention_statistics(lm, prompts, answers, CSL_SUFFIX, batch=batch)
            runs[mode].append(time.perf_counter() - t)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(stats["one"], stats["batched"]))
    score_diff = np.abs(scores(stats["one"], answers) - scores(stats["batched"], answers)).max(0)
    result = {
        "questions": n,
        "sequence_tokens": [min(lengths), max(lengths)],
        "seconds": {k: [round(v, 2) for v in vs] for k, vs in runs.items()},
        "median": {mode: round(float(np.median(runs[mode])), 2) for mode, _ in modes},
        "max_abs_diff_statistics": diff,
        "max_abs_diff_csl_rauq_attention_score": score_diff.tolist(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
