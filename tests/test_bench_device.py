"""`benchmarks/bench_device.py --smoke` runs on CPU and reports what a lent GPU/TPU run would (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_bench_device_smoke_reports_every_workload(tmp_path):
    out = tmp_path / "device.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CALIB_NO_COMPILATION_CACHE="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_device.py"), "--smoke", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "synthetic-llama3-8b-shape" in proc.stdout and "P(True)" in proc.stdout
    res = json.loads(out.read_text())
    shape = res["shape"]
    assert set(res["models"]) == {"tiny-llama", "synthetic-llama3-8b-shape"}
    for name, model in res["models"].items():
        w1, w2, ptrue = model["W1"], model["W2"], model["P(True)"]
        assert 0 < w1["tokens"] <= shape["questions"] * shape["samples"] * shape["tokens"], name
        assert 0 < w2["tokens"] <= shape["w2_tokens"]
        assert w1["decode_steps"] >= shape["tokens"] and w2["decode_steps"] == shape["w2_tokens"]
        assert ptrue["pairs"] == shape["questions"] * shape["samples"] and ptrue["finite"]
        for r in (w1, w2, ptrue):
            assert r["tok_s"] > 0 and r["mfu"] > 0 and r["compiles"] >= 0 and r["seconds"] > 0
        assert w1["compiles"] > 0  # the first call compiles the decode programs
    # the synthetic model's weight bytes, counted independently from the Llama 3 shape (float32 in --smoke)
    v, d, layers, n, k, h, f = 1024, 256, 2, 8, 2, 32, 512
    params = 2 * v * d + layers * (2 * d * n * h + 2 * d * k * h + 3 * d * f + 2 * d) + d
    synthetic = res["models"]["synthetic-llama3-8b-shape"]
    assert synthetic["weight_bytes"] == 4 * params
    assert (
        synthetic["matmul_params"] == params - v * d
    )  # the untied embedding table is gathered, not multiplied
    assert res["peaks"]["source"] == "measured on this machine" and res["device"]["platform"] == "cpu"
