"""`calib cache` / `calib cache prune` (calib.cache_cli) on a synthetic cache folder: stale conversions, abandoned
temp folders, untagged compiled programs and digests of vanished files go; what this code reads, other hosts'
compilation caches, young temp folders and unknown names stay; --dry-run removes nothing."""

from __future__ import annotations

import json
import os
import time

import pytest

from calib.cache import host_tag
from calib.cli import main
from calib.models.registry import conversion_code


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_CACHE_DIR", str(tmp_path))
    models, jax_dir = tmp_path / "models", tmp_path / "jax"
    made = {
        "current": models / f"{'a' * 24}-{conversion_code()}",
        "stale": models / f"{'a' * 24}-{'0' * 12 if conversion_code() != '0' * 12 else '1' * 12}",
        "old_temp": models / f".{'b' * 24}-x.abc.tmp",
        "young_temp": models / f".{'c' * 24}-x.def.tmp",
        "unknown": models / "my-notes",
        "this_host": jax_dir / host_tag(),
        "other_host": jax_dir / "aarch64-0123456789ab",
    }
    for folder in made.values():
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 2048)
    hour_and_more = time.time() - 3700
    os.utime(made["old_temp"], (hour_and_more, hour_and_more))
    loose = [jax_dir / f"jit_f-{i}-cache" for i in range(3)]
    for f in loose:
        f.write_bytes(b"y" * 100)
    kept_file = tmp_path / "weights.gguf"
    kept_file.write_bytes(b"z")
    st = kept_file.stat()
    index = {
        f"{kept_file}|{st.st_size}|{st.st_mtime_ns}": "d1",
        f"{tmp_path / 'gone.gguf'}|1|1": "d2",
        f"{kept_file}|{st.st_size}|{st.st_mtime_ns + 1}": "d3",  # the file changed since
    }
    (tmp_path / "digests.json").write_text(json.dumps(index))
    return made, loose, index, tmp_path


def test_show_lists_every_entry_and_removes_nothing(cache, capsys):
    made, loose, _, root = cache
    with pytest.raises(SystemExit) as exit_code:
        main(["cache"])
    assert exit_code.value.code == 0
    out = capsys.readouterr().out
    for folder in made.values():
        assert str(folder.relative_to(root)) in out
    assert "3 compiled programs without a host tag" in out and "3 files, 2 gone or changed" in out
    assert all(p.exists() for p in [*made.values(), *loose])


def test_dry_run_names_what_prune_removes_and_removes_nothing(cache, capsys):
    made, loose, _, _ = cache
    with pytest.raises(SystemExit):
        main(["cache", "prune", "--dry-run"])
    out = capsys.readouterr().out
    assert f"would remove {made['stale']}" in out and f"would remove {made['old_temp']}" in out
    assert "(3 files)" in out and "3 entries and 2 digest-index lines" in out
    assert all(p.exists() for p in [*made.values(), *loose])


def test_prune_keeps_what_this_code_reads_and_other_hosts_caches(cache, capsys):
    made, loose, index, root = cache
    with pytest.raises(SystemExit):
        main(["cache", "prune"])
    gone = {"stale", "old_temp"}
    for name, folder in made.items():
        assert folder.exists() == (name not in gone), name
    assert not any(p.exists() for p in loose) and (root / "jax").is_dir()
    assert json.loads((root / "digests.json").read_text()) == {next(iter(index)): "d1"}
    with pytest.raises(SystemExit):
        main(["cache", "prune"])
    assert "removed 0 B in 0 entries and 0 digest-index lines" in capsys.readouterr().out
