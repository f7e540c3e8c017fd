"""Second load of each built-in model (after the one-time GGUF conversion): target under 3 s.

Run: .venv/bin/python benchmarks/bench_model_load.py   (writes benchmarks/results/model_load.json)
Each measurement is a fresh Python process, so nothing is warm except the on-disk conversion cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import time, json
t0 = time.perf_counter()
from calib.models import load_model
t1 = time.perf_counter()
lm = load_model({name!r})
t2 = time.perf_counter()
lm.logits([[1, 2, 3]])
t3 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_logits_s": t3 - t2}}))
"""


def measure(name: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from calib.models.builtin import BUILTIN_GGUF

    rows = {}
    for name in BUILTIN_GGUF:
        measure(name)  # first load converts the GGUF (once per machine)
        rows[name] = measure(name)
    print(f"{'model':<24}{'import calib':>14}{'load_model':>12}{'first logits':>14}   target load < 3 s")
    for name, r in rows.items():
        print(f"{name:<24}{r['import_s']:>13.2f}s{r['load_s']:>11.2f}s{r['first_logits_s']:>13.2f}s")
    path = Path(__file__).parent / "results" / "model_load.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(rows, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
