"""`calib experiment=smoke devices.data=2 devices.model=2` under 4 emulated CPU devices writes the results of a
single-device run: the same answers, grades and scores, and every estimator's confidence and raw score equal to
1e-6 · max(1, |value|).

Why relative above 1: the tensor-parallel blocks sum their partial products in another order, so per-token
log-probs move by float32 rounding (~1e-6, tests/test_sharding.py); a raw score that adds such values (sequence
log-probabilities ~40, attention scores ~1500, both stored in float32, whose spacing there is 3.8e-6 and 1.2e-4) can
only agree to its own precision, which no host-side float64 sum restores. Confidences lie in [0, 1], so for them
the bound is 1e-6 absolute.

JAX reads XLA_FLAGS once, when it initialises, so each run is its own `calib` process. Four questions in one shard
and every offline estimator the smoke run has (the semantic ones with the exact-match backend, so no sentence
model loads), to keep it short.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow

SMALL = [
    "experiment=smoke",  # tiny-llama, K = 3 samples, 8 new tokens
    "task.limit=4",
    "decoding.shard_size=4",
    "estimators.semantic=exact",
    "report.figures=false",
    "progress=false",
]


def _calib(tmp_path, name: str, args: list[str], devices: int) -> pd.DataFrame:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    run_dir = tmp_path / name
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "calib.cli",
            *SMALL,
            *args,
            f"artifacts_dir={tmp_path / ('art-' + name)}",
            f"hydra.run.dir={run_dir}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return pd.read_parquet(run_dir / "results.parquet")


def test_a_2x2_mesh_writes_the_single_device_results(tmp_path):
    one = _calib(tmp_path, "one", [], devices=1)
    mesh = _calib(tmp_path, "mesh", ["devices.data=2", "devices.model=2"], devices=4)
    assert list(mesh.columns) == list(one.columns) and len(one) == len(mesh)
    assert one["estimator"].nunique() > 30 and len(one) == 4 * one["estimator"].nunique()
    numeric = ["confidence", "raw"]
    for col in one.columns:
        if col in numeric:
            continue
        assert one[col].astype(str).tolist() == mesh[col].astype(str).tolist(), col
    for col in numeric:
        a, b = one[col].to_numpy(np.float64), mesh[col].to_numpy(np.float64)
        assert (np.isnan(a) == np.isnan(b)).all(), col
        ok = np.isnan(a) | (np.abs(a - b) <= 1e-6 * np.maximum(1.0, np.abs(a)))
        worst = one.loc[~ok, ["estimator", col]].assign(mesh=b[~ok])
        assert ok.all(), f"{col} differs beyond 1e-6 * max(1, |value|):\n{worst}"
    assert np.abs(one["confidence"] - mesh["confidence"]).max() <= 1e-6
