"""Time to load and split the default task suite, against the 2 s target (issue 4).

    python benchmarks/bench_tasks.py [--repeats 5]

Cold = a fresh Python process importing calib.tasks and loading "mixed" (countryinfo/periodictable parsed from
scratch); warm = the same call again in one process (parsed tables cached). Writes benchmarks/results/tasks_load.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 2.0
COLD = (
    "import time; t = time.perf_counter(); from calib.tasks import load_task; "
    "task = load_task('mixed'); task.split('calibration'); task.split('test'); "
    "print(time.perf_counter() - t, len(task))"
)


def cold_once() -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, "-c", COLD], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1])


def warm_once() -> float:
    from calib.tasks import load_task

    start = time.perf_counter()
    task = load_task("mixed")
    task.split("calibration")
    task.split("test")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cold = [cold_once() for _ in range(args.repeats)]
    warm_once()  # fill the caches
    warm = [warm_once() for _ in range(args.repeats)]
    cold_s = [c for c, _ in cold]
    rows = [
        ("mixed, cold process (import + parse + load + split)", statistics.median(cold_s), max(cold_s)),
        ("mixed, warm (tables cached)", statistics.median(warm), max(warm)),
    ]
    print(f"{'measurement':<55} {'median s':>9} {'max s':>7} {'target s':>9}")
    for name, med, worst in rows:
        print(f"{name:<55} {med:>9.3f} {worst:>7.3f} {TARGET_S:>9.1f}")
    print(f"examples in the default suite: {cold[0][1]}")
    result = {
        "target_s": TARGET_S,
        "examples": cold[0][1],
        "cold_s": cold_s,
        "warm_s": warm,
        "cold_median_s": statistics.median(cold_s),
        "warm_median_s": statistics.median(warm),
        "passes": max(cold_s) < TARGET_S,
    }
    out = Path(__file__).parent / "results" / "tasks_load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
