"""A two-process jax.distributed run on this machine (coordinator on localhost, one CPU device each) writes the
same results as one process: each process generates one of the two shards and estimates half of the estimators
into the shared store, process 0 writes the report."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calib.distributed import Process, initialize
from calib.errors import CalibError
from calib.pipeline.config import DistributedConfig

SMALL = [
    "experiment=smoke",  # tiny-llama, 8 questions in 2 shards of 4
    "estimators.names=[msp,mean_token_entropy,p_true,self_consistency]",
    "estimators.semantic=exact",
    "report.figures=false",
    "progress=false",
]


def _calib(args: list[str], **env) -> subprocess.Popen:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", CALIB_NO_COMPILATION_CACHE="1", **env
    )
    return subprocess.Popen(
        [sys.executable, "-m", "calib.cli", *SMALL, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.slow
def test_two_processes_write_the_one_process_results(tmp_path):
    one = _calib([f"artifacts_dir={tmp_path / 'one'}", f"hydra.run.dir={tmp_path / 'run-one'}"])
    _finish(one)
    port, shared = _free_port(), tmp_path / "shared"
    procs = [
        _calib(
            [
                f"artifacts_dir={shared}",
                f"hydra.run.dir={tmp_path / f'run-p{i}'}",
                "distributed.enabled=true",
                f"distributed.coordinator=localhost:{port}",
                "distributed.num_processes=2",
                f"distributed.process_id={i}",
                "distributed.timeout_s=600",
            ]
        )
        for i in range(2)
    ]
    outs = [_finish(p) for p in procs]
    assert (tmp_path / "run-p0" / "report.md").is_file()
    assert not (tmp_path / "run-p1" / "report.md").exists()  # only process 0 writes the report
    assert "its share is in the store" in outs[1]
    shards = sorted(p.name for p in shared.glob("generate/*/shards/*"))
    assert shards == ["000000-000004", "000004-000008"]
    a = pd.read_parquet(tmp_path / "run-one" / "results.parquet")
    b = pd.read_parquet(tmp_path / "run-p0" / "results.parquet")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 8 * 4  # questions x estimators
    for col in a.columns:
        if pd.api.types.is_numeric_dtype(a[col]):
            np.testing.assert_allclose(b[col].to_numpy(float), a[col].to_numpy(float), atol=1e-6, err_msg=col)
        else:
            assert a[col].astype(str).tolist() == b[col].astype(str).tolist(), col


def test_shares_cover_everything_once_and_bad_coordinates_are_one_line_errors(monkeypatch):
    items = list(range(11))
    shares = [Process(i, 3).share(items) for i in range(3)]
    assert sorted(x for s in shares for x in s) == items and [len(s) for s in shares] == [4, 4, 3]
    assert Process().share(items) == items and Process().is_main
    Process().barrier("nothing to wait for")  # one process: returns at once
    assert initialize(DistributedConfig(enabled=False)) == Process()
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CALIB_COORDINATOR", raising=False)
    with pytest.raises(CalibError, match="needs a coordinator"):
        initialize(DistributedConfig(enabled=True))
    with pytest.raises(CalibError, match="process count or id"):
        initialize(DistributedConfig(enabled=True, coordinator="localhost:1234"))
    with pytest.raises(CalibError, match=r"must lie in \[0"):
        initialize(DistributedConfig(enabled=True, coordinator="localhost:1", num_processes=2, process_id=2))
    monkeypatch.setenv("CALIB_NUM_PROCESSES", "two")
    with pytest.raises(CalibError, match="CALIB_NUM_PROCESSES"):
        initialize(DistributedConfig(enabled=True, coordinator="localhost:1", process_id=0))


def test_the_slurm_recipe_is_documented():
    text = (Path(__file__).parents[1] / "configs" / "hydra" / "launcher" / "slurm.yaml").read_text()
    assert "distributed.enabled=true" in text
