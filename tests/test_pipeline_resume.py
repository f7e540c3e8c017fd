"""kill -9 during generation, then rerun: identical results.parquet to an uninterrupted run, and a run with the
same config afterwards generates nothing (asserted on the artifact store, not on timing)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from calib.pipeline import run
from calib.pipeline.config import compose
from calib.pipeline.store import ArtifactStore

OVERRIDES = [
    "experiment=smoke",  # tiny-llama
    "estimators=token",
    "metrics=quick",
    "report.figures=false",
    "progress=false",
    "task.limit=8",
    "decoding.shard_size=1",  # eight shards: a kill after the first leaves generation unfinished
]


def shards_on_disk(artifacts: Path) -> list[Path]:
    """Finished shards; a shard still being written lives under a hidden temp name (pathlib's glob matches those)."""
    return [
        p
        for p in artifacts.glob("generate/*/shards/*")
        if not p.name.startswith(".") and (p / "pass0" / "texts.json").is_file()
    ]


def test_killed_run_resumes_to_identical_results(tmp_path):
    artifacts = tmp_path / "artifacts"
    command = [
        sys.executable,
        "-m",
        "calib.cli",
        *OVERRIDES,
        f"artifacts_dir={artifacts}",
        f"hydra.run.dir={tmp_path / 'killed'}",
    ]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        started = time.monotonic()
        while not shards_on_disk(artifacts) and proc.poll() is None and time.monotonic() < started + 240:
            time.sleep(0.05)
        exited_before_kill = proc.poll()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    why = (
        f"waited {time.monotonic() - started:.0f} s; exit status before the kill: {exited_before_kill}; log tail:\n"
        + (tmp_path / "killed.log").read_text()[-2000:]
    )
    assert exited_before_kill is None and proc.returncode == -signal.SIGKILL, why
    store = ArtifactStore(artifacts)
    done = len(shards_on_disk(artifacts))
    assert 1 <= done < 8, why  # killed mid-generation
    assert store.keys("generate") == []  # so the generate artifact is incomplete
    assert not (tmp_path / "killed" / "results.parquet").exists()

    cfg = compose([*OVERRIDES, f"artifacts_dir={artifacts}"])
    resumed = run(cfg, tmp_path / "resumed", print_summary=False)
    record = resumed.manifest["stages"]["generate"]
    assert record["reused_shards"] >= done and record["generated_shards"] == 8 - record["reused_shards"]

    reference_cfg = compose([*OVERRIDES, f"artifacts_dir={tmp_path / 'reference_artifacts'}"])
    reference = run(reference_cfg, tmp_path / "reference", print_summary=False)
    assert reference.manifest["stages"]["generate"]["generated_shards"] == 8
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "resumed" / "results.parquet"),
        pd.read_parquet(tmp_path / "reference" / "results.parquet"),
    )

    before = sorted(p for p in artifacts.rglob("*") if p.is_file())
    again = run(cfg, tmp_path / "again", print_summary=False)
    generate = again.manifest["stages"]["generate"]
    assert generate["cached"] and generate["generated_shards"] == 0
    assert sorted(p for p in artifacts.rglob("*") if p.is_file()) == before
    assert [p.name for p in (artifacts / "generate").iterdir()] == store.keys(
        "generate"
    )  # one complete artifact
