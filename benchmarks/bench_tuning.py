"""Calibration-tuning step time on SmolLM2-135M: seconds per LoRA step (batch 8) on real P(True) rows of the
training pool, and the time N examples would take, per adapter depth.

Run: .venv/bin/python benchmarks/bench_tuning.py [--n 1000] [--steps 6] [--layers 8 30]
The rows are the first N tuning_train questions with their gold answer (label 1) or a wrong one (label 0): the
cost of a step depends on token counts, not on which answer was graded. Steps after the first (compilation) are
timed; each layer setting runs in turn in one process. Peak RSS is the process's VmHWM. Record `uptime` beside it.
CPU seconds (all threads) per step measure the work itself: on a shared machine wall time is that work divided by
the share of the cores the process gets, so `projected_minutes_2_idle_cores` = CPU time / 2 is the idle-machine
bound (perfect use of both cores), and wall time under load is the measured one.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def peak_rss() -> int:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 30])
    args = parser.parse_args()
    from calib.models import load_model
    from calib.tasks.tuning import training_examples
    from calib.tuning.lora import LoraConfig
    from calib.tuning.train import TrainConfig, build_examples, train_lora

    lm = load_model("smollm2-135m-instruct")
    pool = training_examples(args.n)
    answers = [ex.answers[0] if i % 2 else pool[(i + 1) % len(pool)].answers[0] for i, ex in enumerate(pool)]
    rows = build_examples(lm, [ex.question for ex in pool], answers, [float(i % 2) for i in range(len(pool))])
    lengths = [len(r.ids) for r in rows]
    out = {"n": args.n, "mean_tokens": float(np.mean(lengths)), "load": os.getloadavg()}
    for layers in args.layers:
        cfg = TrainConfig(lora=LoraConfig(layers=None if layers >= lm.config.num_layers else layers))
        train_lora(lm, rows, cfg, progress=False, max_steps=1)  # compile
        start, cpu = time.perf_counter(), time.process_time()
        train_lora(lm, rows, cfg, progress=False, max_steps=args.steps)
        per_step = (time.perf_counter() - start) / args.steps
        cpu_per_step = (time.process_time() - cpu) / args.steps  # all threads: the work, whatever the sharing
        steps = -(-args.n // cfg.batch_size)
        out[f"layers={layers}"] = {
            "seconds_per_step": round(per_step, 2),
            "cpu_seconds_per_step": round(cpu_per_step, 2),
            "projected_minutes_2_idle_cores": round(cpu_per_step * steps / 2 / 60, 1),
            "projected_minutes": round(per_step * steps / 60, 1),
            "steps": steps,
        }
        print(json.dumps(out), flush=True)
    out["peak_rss_gib"] = round(peak_rss() / 2**30, 2)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
