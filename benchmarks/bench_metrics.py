"""Benchmark calib.metrics against torchmetrics, sklearn and numpy on the same data, in the same run.

Targets (issue 5): ECE + AUROC + Brier over 1,000,000 predictions under 0.3 s after compilation; 1,000 bootstrap
resamples of 10,000 predictions under 3 s. Prints a table (ours next to the anchors, values and seconds) and
writes the numbers to benchmarks/results/metrics.json.

    .venv/bin/python benchmarks/bench_metrics.py            # full size
    .venv/bin/python benchmarks/bench_metrics.py --n 100000 --resamples 200   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import torch
from sklearn.metrics import brier_score_loss, roc_auc_score
from torchmetrics.functional.classification import binary_auroc, binary_calibration_error

from calib.metrics import auroc, bootstrap_ci, brier, ece, prr, smece

RESULTS = Path(__file__).parent / "results" / "metrics.json"
TARGET_METRICS_S = 0.3
TARGET_BOOTSTRAP_S = 3.0


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` calls after one warm-up call (compilation), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def first_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def numpy_ece(c: np.ndarray, y: np.ndarray, n_bins: int = 15) -> float:
    """Plain numpy ECE with calib's bins ([a, b), 1.0 in the last bin)."""
    idx = np.minimum((c * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    resid = np.bincount(idx, weights=c - y, minlength=n_bins)
    return float(np.abs(resid).sum() / count.sum())


def bench_metrics(n: int, repeats: int, rng: np.random.Generator) -> dict:
    c = rng.random(n).astype(np.float32)
    y = rng.random(n) < c
    tc, ty = torch.from_numpy(c), torch.from_numpy(y.astype(np.int64))
    torch.set_num_threads(os.cpu_count() or 1)

    def ours() -> tuple[float, float, float]:
        return ece(c, y), auroc(c, y), brier(c, y)

    def torchmetrics_all() -> tuple[float, float, float]:
        return (
            float(binary_calibration_error(tc, ty, n_bins=15, norm="l1")),
            float(binary_auroc(tc, ty)),
            float(torch.mean((tc - ty.float()) ** 2)),
        )

    def sklearn_all() -> tuple[float, float, float]:
        return numpy_ece(c, y), roc_auc_score(y, c), brier_score_loss(y, c)

    rows = {}
    compile_s = first_call(ours)
    for name, fn in (
        ("calib (jax)", ours),
        ("torchmetrics", torchmetrics_all),
        ("sklearn+numpy", sklearn_all),
    ):
        seconds, values = timed(fn, repeats)
        rows[name] = {"seconds": seconds, "ece": values[0], "auroc": values[1], "brier": values[2]}
    parts = {}
    for name, fn in (
        ("ece", lambda: ece(c, y)),
        ("auroc", lambda: auroc(c, y)),
        ("brier", lambda: brier(c, y)),
    ):
        parts[name] = timed(fn, repeats)[0]
    return {"n": n, "first_call_s": compile_s, "rows": rows, "calib_parts_s": parts}


def bench_bootstrap(n: int, resamples: int, rng: np.random.Generator) -> dict:
    c = rng.random(n).astype(np.float32)
    y = rng.random(n) < c
    out = {"n": n, "resamples": resamples, "calib": {}, "anchors": {}}
    for metric in (ece, auroc, brier, prr, smece):
        first = first_call(lambda m=metric: bootstrap_ci(m, c, y, n_resamples=resamples))
        seconds, (point, low, high) = timed(lambda m=metric: bootstrap_ci(m, c, y, n_resamples=resamples), 1)
        out["calib"][metric.__name__] = {"first_call_s": first, "seconds": seconds, "ci": [point, low, high]}
    idx = rng.integers(0, n, size=(resamples, n))
    loops = {
        "auroc (sklearn loop)": lambda: [roc_auc_score(y[i], c[i]) for i in idx],
        "ece (numpy loop)": lambda: [numpy_ece(c[i], y[i]) for i in idx],
        "brier (sklearn loop)": lambda: [brier_score_loss(y[i], c[i]) for i in idx],
    }
    for name, fn in loops.items():
        start = time.perf_counter()
        values = np.asarray(fn())
        seconds = time.perf_counter() - start
        out["anchors"][name] = {"seconds": seconds, "ci": np.quantile(values, [0.025, 0.975]).tolist()}
    return out


def report(metrics: dict, boot: dict) -> list[str]:
    lines = [f"ECE(15 bins) + AUROC + Brier on {metrics['n']:,} predictions (median after warm-up)"]
    lines.append(f"{'implementation':<16}{'seconds':>10}{'ECE':>12}{'AUROC':>12}{'Brier':>12}")
    for name, row in metrics["rows"].items():
        lines.append(
            f"{name:<16}{row['seconds']:>10.3f}{row['ece']:>12.6f}{row['auroc']:>12.8f}{row['brier']:>12.6f}"
        )
    parts = ", ".join(f"{k} {v:.3f}s" for k, v in metrics["calib_parts_s"].items())
    ok = metrics["rows"]["calib (jax)"]["seconds"] < TARGET_METRICS_S
    lines.append(f"calib parts: {parts}; first call (compile) {metrics['first_call_s']:.2f}s")
    lines.append(f"target < {TARGET_METRICS_S}s: {'PASS' if ok else 'FAIL'}")
    lines.append("")
    lines.append(f"Bootstrap: {boot['resamples']} resamples of {boot['n']:,} predictions")
    lines.append(f"{'computation':<24}{'seconds':>10}{'first call':>12}   95% interval")
    for name, row in boot["calib"].items():
        ci = row["ci"]
        lines.append(
            f"{'calib ' + name:<24}{row['seconds']:>10.3f}{row['first_call_s']:>12.2f}   [{ci[1]:.4f}, {ci[2]:.4f}]"
        )
    for name, row in boot["anchors"].items():
        lines.append(f"{name:<24}{row['seconds']:>10.3f}{'':>12}   [{row['ci'][0]:.4f}, {row['ci'][1]:.4f}]")
    ok = all(boot["calib"][m]["seconds"] < TARGET_BOOTSTRAP_S for m in ("ece", "auroc", "brier"))
    lines.append(f"target < {TARGET_BOOTSTRAP_S}s for ECE, AUROC and Brier: {'PASS' if ok else 'FAIL'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="predictions for the metrics timing")
    parser.add_argument("--boot-n", type=int, default=10_000, help="predictions per bootstrap resample")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    metrics = bench_metrics(args.n, args.repeats, rng)
    boot = bench_bootstrap(args.boot_n, args.resamples, rng)
    print("\n".join(report(metrics, boot)))
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"machine": machine, "metrics": metrics, "bootstrap": boot}, indent=2))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
