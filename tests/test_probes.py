"""Issue 17's probe suite: each fault tried as a new user would, with the `calib` command in a fresh process.

Every probe must end with exit 2 (130 for Ctrl-C), at most three lines on stderr and no traceback, and leave the
user's own files byte-identical; the damaged-artifact probe must instead recompute and succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import sqlite3
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
    run = [f"artifacts_dir={tmp / 'artifacts'}", f"hydra.run.dir={tmp / 'run'}"]
    folders = [] if args and args[0] == "feedback" else run  # the feedback commands take no Hydra overrides
    command = [*prefix, sys.executable, "-m", "calib.cli", *folders, *args]
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
    # 64 one-question shards: the interrupt lands mid-run, not in the ~3 s teardown after the report
    args = [*SMALL, "task.limit=64", "decoding.shard_size=1"]
    command = [
        sys.executable,
        "-m",
        "calib.cli",
        f"artifacts_dir={tmp_path / 'artifacts'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    # a child inherits an *ignored* SIGINT (a test worker may run with SIGINT ignored after another test, e.g. a
    # notebook kernel manager, set it so); a handled one becomes the default again, so Python turns it into
    # KeyboardInterrupt as it would in a user's terminal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
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


# ---- files a user gives calib: malformed model folders, task files, feedback databases, calibrators ---------------
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("[]", "holds a JSON list, expected an object"),
        (
            json.dumps({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 0}),
            "num_attention_heads",
        ),
        (b'{"model_type": "llama\xff"}', "config.json"),
    ],
)
def test_probe_malformed_hf_config(tmp_path, config, expected):
    folder = tmp_path / "my-model"
    folder.mkdir()
    path = folder / "config.json"
    path.write_bytes(config if isinstance(config, bytes) else config.encode())
    before = digest([folder])
    outcome = calib(tmp_path, *SMALL, "model=tiny-llama", f"model.name=hf:{folder}")
    assert_one_clear_line(outcome, expected)
    assert str(path) in outcome.lines[0]
    assert digest([folder]) == before and not (tmp_path / "artifacts" / "generate").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"question": "Capital of France?", "answers": ["Paris"]}\n{"question": "Caf\xe9?", "answers": ["x"]}\n',
         "line 2: byte 0xe9 at byte offset"),
        (b'{"question": "a\\ud800", "answers": ["x"]}\n', "lone surrogate"),
        (b'{"id": "q1", "question": "a?", "answers": ["x"]}\n{"id": "q1", "question": "b?", "answers": ["y"]}\n',
         "line 2: duplicate id 'q1' (first at line 1)"),
    ],
)  # fmt: skip
def test_probe_bad_jsonl_task_file(tmp_path, content, expected):
    path = tmp_path / "questions.jsonl"
    path.write_bytes(content)
    before = digest([path])
    outcome = calib(tmp_path, *SMALL, "task=jsonl", f"task.options.path={path}")
    assert_one_clear_line(outcome, expected)
    assert digest([path]) == before and not (tmp_path / "artifacts").exists()


def test_probe_feedback_show_on_another_programs_database(tmp_path):
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        db.execute("INSERT INTO orders (item) VALUES ('tea')")
    db.close()
    before = digest([tmp_path])
    outcome = calib(tmp_path, "feedback", "show", "--db", str(path))
    assert_one_clear_line(outcome, "is not a calib feedback database")
    assert digest([tmp_path]) == before


def test_probe_feedback_show_on_a_damaged_database(tmp_path):
    path = tmp_path / "feedback.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    before = digest([path])
    outcome = calib(tmp_path, "feedback", "show", "--db", str(path))
    assert_one_clear_line(outcome, str(path))
    assert digest([path]) == before


def test_probe_feedback_transform_with_a_wrong_typed_calibrator(tmp_path):
    from calib.recalibrate import PlattCalibrator, save_calibrator

    path = tmp_path / "cal.json"
    save_calibrator(PlattCalibrator().fit([0.2, 0.4, 0.6, 0.8, 0.9], [0, 0, 1, 1, 1]), path)
    saved = json.loads(path.read_text())
    saved["params"]["a"] = "1.5"  # edited by hand, or written by another tool
    path.write_text(json.dumps(saved))
    before = digest([path])
    outcome = calib(tmp_path, "feedback", "transform", "--calibrator", str(path), "0.7")
    assert_one_clear_line(outcome, str(path))
    assert "field 'a' is '1.5' (str); expected a number" in outcome.lines[0], outcome.lines
    assert digest([path]) == before


def test_probe_feedback_export_under_a_regular_file(tmp_path):
    db = tmp_path / "feedback.db"
    recorded = calib(tmp_path, "feedback", "record", "--db", str(db), "--question", "q", "--answer", "a",
                     "--confidence", "0.8", "--correct", "1")  # fmt: skip
    assert recorded.code == 0, recorded.stderr
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine\n")
    outcome = calib(tmp_path, "feedback", "export", "--db", str(db), "--out", str(blocker / "cal.json"))
    assert_one_clear_line(outcome, f"cannot write {blocker / 'cal.json'}: {blocker} is a file, not a folder")
