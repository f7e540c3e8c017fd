"""Issue 17's probe suite: each fault tried as a new user would, with the `calib` command in a fresh process.

Every probe must end with exit 2 (130 for Ctrl-C), at most three lines on stderr and no traceback, and leave the
user's own files byte-identical; the damaged-artifact probe must instead recompute and succeed.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = [
    "experiment=smoke",  # tiny-llama: no weights to load
    "estimators=token",
    "metrics=quick",
    "report.figures=false",
    "progress=false",
    "task.limit=2",
]


@dataclass
class Outcome:
    code: int
    stderr: str
    lines: list[str] = field(default_factory=list)


def calib(tmp: Path, *args: str, limit_file_bytes: int | None = None, prefix: list[str] = ()) -> Outcome:
    """`python -m calib.cli ARGS` with its run and artifact folders under tmp (unless ARGS name others)."""
    command = [
        *prefix,
        sys.executable,
        "-m",
        "calib.cli",
        f"artifacts_dir={tmp / 'artifacts'}",
        f"hydra.run.dir={tmp / 'run'}",
        *args,
    ]
    limit = None
    if limit_file_bytes is not None:

        def limit():
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_bytes, limit_file_bytes))

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp, preexec_fn=limit, timeout=300
    )
    return Outcome(proc.returncode, proc.stderr, user_error_lines(proc.stderr))


def user_error_lines(stderr: str) -> list[str]:
    """stderr without calib's own INFO log lines ("[calib] ..."), which a run prints while it works."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("[calib] ")]


def digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_one_clear_line(outcome: Outcome, expected: str, code: int = 2) -> None:
    assert outcome.code == code, outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert 1 <= len(outcome.lines) <= 3, outcome.stderr
    assert expected in outcome.lines[0], outcome.lines


# ---- writes -------------------------------------------------------------------------------------------------------
def test_probe_read_only_artifacts_folder(tmp_path):
    """A read-only mount (tests run as root, for whom chmod is no barrier): a private mount namespace mounts a
    read-only tmpfs over the artifacts folder for the probe's process only."""
    if shutil.which("unshare") is None:
        pytest.fail("the read-only probe needs util-linux's unshare (apt-get install util-linux)")
    store = tmp_path / "readonly"
    store.mkdir()
    script = f'mount -t tmpfs -o ro tmpfs "{store}" && exec "$@"'
    outcome = calib(
        tmp_path, *SMALL, f"artifacts_dir={store}", prefix=["unshare", "-m", "sh", "-c", script, "sh"]
    )
    assert_one_clear_line(outcome, f"calib: error: cannot write {store}: Read-only file system")


def test_probe_artifacts_path_under_a_regular_file(tmp_path):
    user_file = tmp_path / "notes.txt"
    user_file.write_text("my notes\n")
    before = digest([user_file])
    outcome = calib(tmp_path, *SMALL, f"artifacts_dir={user_file / 'artifacts'}")
    assert_one_clear_line(outcome, f"cannot write {user_file / 'artifacts'}: ")
    assert digest([user_file]) == before


def test_probe_full_disk_while_storing_generations(tmp_path):
    """`ulimit -f`: Hydra's own config files fit, the first shard of generations does not."""
    outcome = calib(tmp_path, *SMALL, "hydra.output_subdir=null", limit_file_bytes=5000)
    assert_one_clear_line(outcome, f"cannot write {tmp_path / 'artifacts' / 'generate'}")
    assert "File too large" in outcome.lines[0]
    leftovers = [p for p in (tmp_path / "artifacts").rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


def test_probe_damaged_shard_is_set_aside_and_recomputed(tmp_path):
    assert calib(tmp_path, *SMALL).code == 0
    results = (tmp_path / "run" / "results.parquet").read_bytes()
    shard = next((tmp_path / "artifacts").glob("generate/*/shards/*"))
    (shard / "pass0" / "arrays.safetensors").write_bytes(b"")  # a crash before the data reached the disk
    outcome = calib(tmp_path, *SMALL, f"hydra.run.dir={tmp_path / 'rerun'}")
    assert outcome.code == 0, outcome.stderr
    warning = [line for line in outcome.stderr.splitlines() if "could not be read" in line]
    assert len(warning) == 1 and shard.name in warning[0] and "moved to" in warning[0], outcome.stderr
    assert (tmp_path / "rerun" / "results.parquet").read_bytes() == results


# ---- settings that mean nothing, models that cannot load -----------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("decoding.temperature=inf", "decoding.temperature=inf is not allowed"),
        ("decoding.stop=['']", "stop strings must be non-empty"),
        ("+task.template='Q: {question} {context.foo}'", "unknown field {context.foo}"),
    ],
)
def test_probe_meaningless_settings(tmp_path, override, expected):
    outcome = calib(tmp_path, *SMALL, override.replace("+task.template", "task.template"))
    assert_one_clear_line(outcome, expected)
    assert not (tmp_path / "artifacts").exists()


def test_probe_nli_model_that_cannot_load(tmp_path):
    outcome = calib(
        tmp_path,
        *SMALL,
        "estimators.names=[semantic_entropy]",
        "estimators.semantic=nli",
        f"+estimators.semantic_options.model={tmp_path / 'missing-nli'}",
    )
    assert_one_clear_line(outcome, "nli backend: cannot load CrossEncoder")
    assert not (tmp_path / "artifacts" / "generate").exists()


# ---- Ctrl-C -------------------------------------------------------------------------------------------------------
def test_probe_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    args = [*SMALL, "task.limit=8", "decoding.shard_size=1"]
    command = [
        sys.executable,
        "-m",
        "calib.cli",
        f"artifacts_dir={tmp_path / 'artifacts'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    started = time.monotonic()
    shards = tmp_path / "artifacts" / "generate"
    while proc.poll() is None and time.monotonic() < started + 240:
        if any(p for p in shards.glob("*/shards/*") if not p.name.startswith(".")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    outcome = Outcome(proc.returncode, stderr, user_error_lines(stderr))
    assert_one_clear_line(outcome, "calib: interrupted; rerun the same command to resume", code=130)
    rerun = calib(tmp_path, *args)
    assert rerun.code == 0, rerun.stderr
