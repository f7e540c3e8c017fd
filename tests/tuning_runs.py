"""Fake calibration-tuning study runs for tests: the files `calib.tuning.study.run_study` leaves (tuning.json, and
eval/ with manifest.json, config.yaml, results.parquet, metrics.csv), written with the runner's own writers from
synthetic confidences, so the report and notebook 7 are tested without a model or training."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from calib.pipeline.config import MetricsConfig, compose
from calib.pipeline.evaluate import evaluate
from calib.pipeline.report import order_estimators, results_table, write_metrics
from calib.tuning import report

N_QUESTIONS = 80
METRICS = ["ece", "brier", "auroc"]


def _answers(seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Grades and the untuned baselines of one evaluation split (the same in every run evaluated on it)."""
    rng = np.random.default_rng(seed)
    correct = (rng.random(N_QUESTIONS) < 0.4).astype(np.float64)
    grades = pd.DataFrame(
        {
            "question_id": [f"q{i}" for i in range(N_QUESTIONS)],
            "question": [f"question {i}" for i in range(N_QUESTIONS)],
            "category": "capitals",
            "open_ended": False,
            "answer": "a",
            "extracted": "a",
            "correct": correct,
            "score": correct,
        }
    )
    noise = rng.random((3, N_QUESTIONS))
    baselines = {
        "p_true": np.clip(0.5 + 0.15 * (correct - 0.5) + 0.4 * (noise[0] - 0.5), 0, 1),
        "msp": np.clip(0.3 + 0.3 * correct * noise[1] + 0.2 * noise[2], 0, 1),
        "semantic_entropy": noise[2],
    }
    return grades, baselines


def write_fake_run(
    folder, method: str, n: int, strength: float, eval_limit=None, seed: int = 0, judged: bool = False
) -> dict:
    """What run_study writes for one (method, N): the tuned estimator separates grades better as strength grows.
    judged: the evaluation also ran multi_hypothesis with the untuned and with the tuned judge."""
    grades, baselines = _answers(seed)
    correct = grades["correct"].to_numpy()
    rng = np.random.default_rng(1000 + n)
    tuned = np.clip(0.4 + strength * (correct - 0.4) + 0.3 * (rng.random(N_QUESTIONS) - 0.5), 0, 1)
    name = report.TUNED[method]
    confidences = {**baselines, name: tuned}
    if judged:
        confidences["multi_hypothesis"] = baselines["msp"] * 0.5 + 0.25
        confidences[report.JUDGED] = np.clip(tuned * 0.8 + 0.1, 0, 1)
    cfg = compose(
        [
            "experiment=calibration_tuning",
            f"study.calibration_tuning.method={method}",
            f"study.calibration_tuning.n={n}",
            "metrics.n_resamples=300",
        ]
    )
    cfg.study.name = None  # as run_study hands the evaluation to the main job
    cfg.task.name = "tuning_eval"
    cfg.study.calibration_tuning.eval_limit = eval_limit
    eval_dir = folder / "eval"
    eval_dir.mkdir(parents=True)
    (eval_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    key = f"gen-{eval_limit}-{seed}"
    (eval_dir / "manifest.json").write_text(
        json.dumps({"stages": {"generate": {"key": key, "cached": True}}})
    )
    estimates = {k: {"confidence": v, "raw": v} for k, v in confidences.items()}
    results_table(grades, estimates).to_parquet(eval_dir / "results.parquet")
    mcfg = MetricsConfig(names=METRICS, n_resamples=300, groups=True)
    metrics = evaluate(correct, grades["open_ended"].to_numpy(), confidences, mcfg, progress=False)
    write_metrics(eval_dir, metrics, METRICS, order_estimators(metrics, "ece"), mcfg.alpha)
    record = {
        "key": f"tune-{method}-{n}",
        "generate": "g",
        "grade": "h",
        "n": n,
        "accuracy": 0.4,
        "cached": False,
        "train_seconds": 6.0 * n,  # as the store's meta records it: seconds of the fit
        **({"steps": n // 8, "peak_rss_bytes": 3 << 30} if method == "lora" else {}),
    }
    (folder / "tuning.json").write_text(
        json.dumps({**record, "artifact": "/nowhere", "eval_run": str(eval_dir)})
    )
    return {"correct": correct, **confidences}
