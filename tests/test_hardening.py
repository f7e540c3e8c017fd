"""Faults at the edges of a run (issue 17): full disks, files in the way, damaged artifacts, publish races, shard
sizes, meaningless settings. Each ends in one line and exit 2, or is recomputed; nothing the user gave changes."""

import errno
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from calib.cache import atomic_dir, atomic_write_text, check_writable
from calib.cli import main
from calib.errors import CalibError
from calib.pipeline import run
from calib.pipeline.config import compose
from calib.pipeline.store import QUARANTINE, ArtifactStore

SMALL = [
    "experiment=smoke",  # tiny-llama
    "estimators=token",
    "metrics=quick",
    "report.figures=false",
    "progress=false",
    "task.limit=4",
    "decoding.shard_size=2",
]


def cli(tmp_path: Path, capsys, *overrides: str) -> tuple[int, list[str]]:
    """`calib` in-process with the run and artifact folders under tmp_path: (exit code, stderr lines)."""
    args = [
        f"artifacts_dir={tmp_path / 'artifacts'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
        *overrides,
    ]
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err.strip().splitlines()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- writes -------------------------------------------------------------------------------------------------------
def test_an_artifacts_folder_under_a_regular_file_fails_in_one_line_before_the_model_loads(tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a user's file\n")
    before = sha(blocker)
    code, err = cli(tmp_path, capsys, *SMALL, f"artifacts_dir={blocker / 'artifacts'}")
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith(f"calib: error: cannot write {blocker / 'artifacts'}: ")
        and "artifacts_dir" in err[0]
    )
    assert sha(blocker) == before
    assert not (tmp_path / "run").exists()


def test_a_read_only_folder_is_reported_before_anything_runs(tmp_path, monkeypatch):
    """Tests run as root, for whom chmod 0555 still allows writes; a refused temp file stands in for the mount."""

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(CalibError, match=r"^cannot write .*/store: Read-only file system; set artifacts_dir"):
        check_writable(tmp_path / "store", "set artifacts_dir=PATH to a writable folder")
    assert not (tmp_path / "store").exists()


def test_a_full_disk_while_writing_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(CalibError, match=r"^cannot write .*results\.json: No space left on device$"):
        atomic_write_text(tmp_path / "results.json", "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_lost_publish_race_keeps_the_winners_artifact(tmp_path):
    final = tmp_path / "grade" / "abc"
    final.mkdir(parents=True)
    (final / "meta.json").write_text("winner")
    with atomic_dir(final) as tmp:
        (tmp / "meta.json").write_text("loser")
    assert (final / "meta.json").read_text() == "winner"
    assert [p.name for p in final.parent.iterdir()] == ["abc"]  # the loser's temp folder is gone


def test_a_failed_build_publishes_nothing(tmp_path):
    final = tmp_path / "estimate" / "k"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "part").write_text("half")
        raise RuntimeError("killed")
    assert not final.exists() and list(final.parent.iterdir()) == []


# ---- damaged artifacts are set aside and recomputed -----------------------------------------------------------------
def test_damaged_artifacts_are_set_aside_recomputed_and_the_results_unchanged(tmp_path, caplog):
    cfg = compose([*SMALL, f"artifacts_dir={tmp_path / 'artifacts'}"])
    first = run(cfg, tmp_path / "first", print_summary=False)
    store = ArtifactStore(tmp_path / "artifacts")
    stages = first.manifest["stages"]
    shard = next((store.path("generate", stages["generate"]["key"]) / "shards").iterdir())
    (shard / "pass0" / "arrays.safetensors").write_bytes(b"")  # what a crash before fsync leaves
    grades = store.path("grade", stages["grade"]["key"]) / "grades.parquet"
    grades.write_bytes(grades.read_bytes()[:100])
    estimate_key = next(iter(stages["estimate"]["keys"].values()))
    (store.path("estimate", estimate_key) / "result.safetensors").write_bytes(b"\0" * 4)

    with caplog.at_level(logging.WARNING, logger="calib"):
        second = run(cfg, tmp_path / "second", print_summary=False)
    warnings = [r.getMessage() for r in caplog.records if "stored artifact" in r.getMessage()]
    assert len(warnings) == 3 and all("could not be read" in w and "recomputing" in w for w in warnings), (
        warnings
    )
    assert second.manifest["stages"]["generate"]["generated_shards"] == 1
    assert second.manifest["stages"]["grade"]["cached"] is False
    assert second.manifest["stages"]["estimate"]["computed"] == [next(iter(stages["estimate"]["keys"]))]
    assert len(list((tmp_path / "artifacts" / QUARANTINE).iterdir())) == 3
    a = pd.read_parquet(tmp_path / "first" / "results.parquet")
    b = pd.read_parquet(tmp_path / "second" / "results.parquet")
    pd.testing.assert_frame_equal(a, b)
    third = run(cfg, tmp_path / "third", print_summary=False)  # and the store is whole again
    assert third.manifest["stages"]["generate"]["cached"] and third.manifest["stages"]["estimate"]["cached"]


def test_the_shard_size_is_part_of_the_generate_key(tmp_path):
    """Batch composition changes float rounding, so shards of different sizes never share one artifact."""
    artifacts = f"artifacts_dir={tmp_path / 'artifacts'}"
    two = run(compose([*SMALL, artifacts]), tmp_path / "two", print_summary=False)
    four = run(compose([*SMALL, artifacts, "decoding.shard_size=4"]), tmp_path / "four", print_summary=False)
    assert two.manifest["stages"]["generate"]["key"] != four.manifest["stages"]["generate"]["key"]
    assert four.manifest["stages"]["generate"]["generated_shards"] == 1
    again = run(compose([*SMALL, artifacts]), tmp_path / "again", print_summary=False)
    assert again.manifest["stages"]["generate"]["cached"]


# ---- settings that mean nothing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("decoding.temperature=inf", "decoding.temperature=inf is not allowed: use a finite number >= 0"),
        ("decoding.temperature=nan", "decoding.temperature=nan is not allowed"),
        ("decoding.top_p=nan", "decoding.top_p=nan is not allowed"),
        ("decoding.stop=['']", "decoding.stop=[''] is not allowed: stop strings must be non-empty"),
        ("+task.template='Q: {question} {context.foo}'", "unknown field {context.foo}"),
        ("+task.template='Q: {question} {0}'", "unknown field {0}"),
        ("+task.template='Q: {question'", "task.template="),
    ],
)
def test_meaningless_settings_are_refused_before_the_model_loads(tmp_path, capsys, override, expected):
    code, err = cli(tmp_path, capsys, *SMALL, override.replace("+task.template", "task.template"))
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "run").exists()


def test_an_nli_model_that_cannot_load_fails_before_generation(tmp_path, capsys):
    code, err = cli(
        tmp_path,
        capsys,
        *SMALL,
        "estimators.names=[semantic_entropy]",
        "estimators.semantic=nli",
        f"+estimators.semantic_options.model={tmp_path / 'no_such_nli_model'}",
    )
    assert code == 2 and len(err) == 1 and "nli backend: cannot load CrossEncoder" in err[0], err
    assert not (tmp_path / "artifacts" / "generate").exists()


def test_the_memory_message_names_settings_that_exist(tiny_llama):
    from calib.decode.planning import prompts_per_batch

    with pytest.raises(CalibError) as info:
        prompts_per_batch(
            tiny_llama.config, 4, 11, 256, 16, 5, 4, budget_bytes=1, max_rows=256, num_devices=1
        )
    assert "decoding.num_samples" in str(info.value) and "memory_budget (bytes) to generate()" in str(
        info.value
    )


def _publish_many(final: str, rounds: int, marker: str) -> int:
    """One process publishing the same artifact folder over and over, as parallel sweeps sharing a store do."""
    import shutil as sh

    for i in range(rounds):
        with atomic_dir(final) as tmp:
            (tmp / "meta.json").write_text(marker)
        if i % 2:
            sh.rmtree(final, ignore_errors=True)  # the next round races to publish it again
    return rounds


def test_two_processes_publishing_the_same_key_both_succeed(tmp_path):
    """Issue 17 case 5: a rename that loses to another writer (ENOTEMPTY) used to kill its process."""
    import multiprocessing

    final = str(tmp_path / "estimate" / "same-key")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = pool.starmap(_publish_many, [(final, 300, "a"), (final, 300, "b")])
    assert done == [300, 300]
    assert not [p for p in (tmp_path / "estimate").iterdir() if p.name.startswith(".")]  # no temp folder left


def test_unmet_needs_name_a_setting_or_call_that_provides_them():
    from calib.estimators import Need, check_needs, get_estimator

    with pytest.raises(CalibError) as info:
        check_needs([get_estimator("mc_sequence_entropy")], [Need.GREEDY, Need.SAMPLES])
    assert "token_logprobs (calib.decode.generate records them)" in str(info.value)


def test_an_atomic_write_gets_the_umask_permissions_not_the_temp_files_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.csv", "x\n")
        os.umask(0o027)
        atomic_write_text(tmp_path / "b.csv", "y\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.csv").stat().st_mode & 0o777 == 0o640


def test_an_atomic_folder_gets_the_umask_permissions_not_mkdtemps_0700(tmp_path):
    from calib.cache import atomic_dir

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "artifact") as folder:
            (folder / "x.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "artifact").stat().st_mode & 0o777 == 0o755  # others on a shared machine can read it
