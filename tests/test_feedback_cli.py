"""`calib feedback` subcommands through feedback_cli.main: record, refit, show, export, transform, errors."""

import json

import numpy as np
import pytest

from calib.feedback_cli import main
from calib.recalibrate import (
    FeedbackStore,
    IsotonicCalibrator,
    OnlineHistogramCalibrator,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_record_refit_show_export_transform(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/fb.db"
    code, out, _ = run(
        capsys,
        "record",
        "--db",
        db,
        "--question",
        "Capital of Australia?",
        "--answer",
        "Canberra",
        "--confidence",
        "0.62",
        "--correct",
        "yes",
        "--uid",
        "r1",
    )
    assert code == 0 and "recorded 1 new rows" in out
    assert run(capsys, "record", "--db", db, "--confidence", "0.62", "--correct", "1", "--uid", "r1")[0] == 0

    rng = np.random.default_rng(0)
    c = rng.random(60)
    y = (rng.random(60) < c).astype(int)
    jsonl = tmp_path / "graded.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({"question": f"q{i}", "answer": "a", "confidence": float(ci), "correct": int(yi)})
            for i, (ci, yi) in enumerate(zip(c, y))
        )
    )
    code, out, _ = run(capsys, "record", "--db", db, "--file", str(jsonl), "--no-refit")
    assert code == 0 and "recorded 60 new rows" in out
    csv_file = tmp_path / "more.csv"
    csv_file.write_text("question,answer,confidence,correct\nq,a,0.3,false\nq,b,0.8,true\n")
    assert run(capsys, "record", "--db", db, "--file", str(csv_file), "--no-refit")[0] == 0

    code, out, _ = run(capsys, "refit", "--db", db)
    assert code == 0 and "refitted 'default'" in out
    all_c = np.concatenate([[0.62], c, [0.3, 0.8]])
    all_y = np.concatenate([[1], y, [0, 1]]).astype(float)
    with FeedbackStore(db) as store:
        assert store.count() == 63  # r1 recorded once
    code, out, _ = run(capsys, "show", "--db", db, "--check")
    assert code == 0 and "rows: 63" in out and "integrity: ok" in out and "online_histogram" in out

    out_file = tmp_path / "cal.json"
    assert run(capsys, "export", "--db", db, "--out", str(out_file))[0] == 0
    cal = load_calibrator(out_file)
    assert cal == OnlineHistogramCalibrator().fit(all_c, all_y)
    code, out, _ = run(capsys, "transform", "--calibrator", str(out_file), "0.9", "0.2")
    assert code == 0
    np.testing.assert_allclose([float(v) for v in out.split()], cal.transform([0.9, 0.2]), atol=1e-6)
    code, out_db, _ = run(capsys, "transform", "--db", db, "0.9", "0.2")
    assert out_db == out

    code, out, _ = run(capsys, "refit", "--db", db, "--kind", "isotonic")
    assert code == 0 and "IsotonicCalibrator" in out
    assert run(capsys, "export", "--db", db, "--out", str(tmp_path / "iso.safetensors"))[0] == 0
    assert load_calibrator(tmp_path / "iso.safetensors") == IsotonicCalibrator().fit(all_c, all_y)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["record", "--confidence", "0.5", "--correct", "2"], "not a correctness label"),
        (["record", "--confidence", "1.5", "--correct", "1"], "outside [0, 1]"),
        (["record", "--confidence", "high", "--correct", "1"], "not a number"),
        (["record", "--correct", "1"], "needs --confidence and --correct"),
        (["record", "--file", "missing.jsonl"], "no such file"),
        (["transform", "--calibrator", "none.json", "0.5"], "no such calibrator file"),
        (["show"], "no feedback database"),
        (["refit"], "no feedback database"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv, "--db", str(tmp_path / "fb.db"))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("calib: error: ") and match in err


def test_damaged_database_through_the_cli(tmp_path, capsys):
    bad = tmp_path / "fb.db"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = run(capsys, "show", "--db", str(bad))
    assert code == 2 and err.count("\n") == 1 and "damaged or not an SQLite file" in err
    assert bad.read_bytes() == b"garbage" * 100


def test_bad_rows_in_a_file_name_the_row(tmp_path, capsys):
    f = tmp_path / "rows.jsonl"
    f.write_text('{"confidence": 0.5, "correct": 1}\n{"confidence": 0.5, "correct": "maybe"}\n')
    code, _, err = run(capsys, "record", "--db", str(tmp_path / "fb.db"), "--file", str(f))
    assert code == 2 and "row 2" in err
    with FeedbackStore(tmp_path / "fb.db") as store:
        assert store.count() == 0  # the good first row was not written either


def test_the_calib_console_script_dispatches_feedback(tmp_path):
    """`calib feedback ...` reaches feedback_cli through the installed `calib` entry point (a subprocess)."""
    import subprocess
    import sys
    from pathlib import Path

    calib = Path(sys.executable).with_name("calib")
    db = f"sqlite:///{tmp_path}/fb.db"
    args = ["--db", db, "--confidence", "0.9", "--correct", "0", "--uid", "x"]
    done = subprocess.run([calib, "feedback", "record", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "recorded 1 new rows" in done.stdout, done.stderr
    bad = subprocess.run(
        [calib, "feedback", "record", "--db", db, "--confidence", "1.5", "--correct", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


# ---- issue 17 cases 6 and 11 through `calib feedback ...` (calib.cli.main): exit 2, one line, files unchanged ----


def sha(path) -> str:
    import hashlib
    from pathlib import Path

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def calib_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`calib feedback ARGV` in-process: (exit status, stdout, stderr)."""
    from calib.cli import main as calib_main

    with pytest.raises(SystemExit) as info:
        calib_main(["feedback", *argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("calib: error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.fixture
def database(tmp_path, capsys):
    """A calib feedback database with 40 rows and its default calibrator, closed (everything in the main file)."""
    rng = np.random.default_rng(0)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"confidence": float(c), "correct": int(c > 0.4)}) for c in rng.random(40))
    )
    code, _, err = calib_cli(capsys, "record", "--db", str(tmp_path / "fb.db"), "--file", str(rows))
    assert code == 0, err
    return tmp_path / "fb.db"


@pytest.mark.parametrize(
    "command", [["show"], ["show", "--check"], ["export", "--out", "x.json"], ["transform", "0.5"]]
)
def test_read_commands_on_a_foreign_sqlite_file_change_nothing(tmp_path, capsys, monkeypatch, command):
    """Another program's database (own table, journal mode DELETE): exit 2, byte-identical, still not WAL."""
    import sqlite3

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO orders VALUES (1, 9.5)")
    conn.close()
    before = sha(path)
    code, out, err = calib_cli(capsys, *command, "--db", str(path))
    assert code == 2 and out == ""
    assert_one_error_line(err, str(path), "not a calib feedback database", "orders")
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


@pytest.mark.parametrize("command", [["record", "--confidence", "0.5", "--correct", "1"], ["refit"]])
def test_write_commands_refuse_a_foreign_sqlite_file_too(tmp_path, capsys, command):
    import sqlite3

    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER)")
    conn.close()
    before = sha(path)
    code, _, err = calib_cli(capsys, *command, "--db", str(path))
    assert code == 2
    assert_one_error_line(err, str(path), "not a calib feedback database")
    assert sha(path) == before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header"])
def test_show_on_a_damaged_database_leaves_it_byte_identical(database, capsys, damage):
    data = bytearray(database.read_bytes())
    if damage == "garbage":
        data = bytearray(b"\x13\x37not sqlite" * 500)
    elif damage == "truncated":
        data = data[:1000]
    else:
        data[16:18] = b"\x00\x03"  # page size 3: not a power of two
    database.write_bytes(bytes(data))
    code, out, err = calib_cli(capsys, "show", "--db", str(database))
    assert code == 2 and out == ""
    assert_one_error_line(err, str(database), "damaged or not an SQLite file", "left untouched")
    assert database.read_bytes() == bytes(data)


def test_show_export_transform_work_while_another_process_holds_a_write_transaction(database, capsys):
    """Readers never block: the read commands succeed during another writer's open BEGIN IMMEDIATE transaction."""
    import sqlite3

    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute(
        "INSERT INTO feedback (uid, question, answer, confidence, correct, created_at) "
        "VALUES ('pending', '', '', 0.5, 1, 0)"
    )
    try:
        code, out, err = calib_cli(capsys, "show", "--db", str(database), "--timeout", "0.2")
        assert code == 0 and "rows: 40" in out, err  # the committed rows, not the pending one
        out_file = database.parent / "cal.json"
        code, _, err = calib_cli(
            capsys, "export", "--db", str(database), "--out", str(out_file), "--timeout", "0.2"
        )
        assert code == 0 and load_calibrator(out_file).n_rows == 40, err
        code, out, err = calib_cli(capsys, "transform", "--db", str(database), "0.5", "--timeout", "0.2")
        assert code == 0 and len(out.split()) == 1, err
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_read_commands_never_write_the_database(database, capsys):
    before = sha(database)
    for argv in (
        ["show", "--check"],
        ["export", "--out", str(database.parent / "c.json")],
        ["transform", "0.3"],
    ):
        code, _, err = calib_cli(capsys, *argv, "--db", str(database))
        assert code == 0, err
        assert sha(database) == before, argv


def saved(tmp_path, kind: str = "platt") -> dict:
    rng = np.random.default_rng(2)
    c = rng.random(300)
    path = save_calibrator(
        make_calibrator(kind).fit(c, (rng.random(300) < c).astype(float)), tmp_path / "ok.json"
    )
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("kind", "edit", "field"),
    [
        ("platt", lambda d: d["params"].update(a="1.5"), "field 'a' is '1.5' (str)"),
        ("platt", lambda d: d["params"].update(b=[0.1]), "field 'b' is '[0.1]' (list)"),
        ("platt", lambda d: d["params"].pop("smooth_targets"), "field 'smooth_targets' is missing"),
        ("platt", lambda d: d["params"].update(a=float("nan")), "field 'a' is nan"),
        ("beta", lambda d: d["params"].update(a=-1.0), "field 'a' is -1.0"),
        ("online_histogram", lambda d: d["params"].update(n_bins="20"), "field 'n_bins' is '20' (str)"),
        (
            "online_histogram",
            lambda d: d["params"].update(prior_strength=float("inf")),
            "'prior_strength' is inf",
        ),
        ("online_histogram", lambda d: d["arrays"].pop("hits"), "array 'hits' is missing"),
        ("online_histogram", lambda d: d["arrays"]["counts"].update(data=[1.5] * 20), "holds '1.5' (float)"),
        ("isotonic", lambda d: d["arrays"]["y"]["data"].__setitem__(0, "x"), "array 'y' holds 'x' (str)"),
        ("isotonic", lambda d: d["arrays"]["x"]["data"].reverse(), "array 'x' is not in increasing order"),
        ("histogram", lambda d: d["params"].update(binning=None), "field 'binning' is 'None'"),
        (
            "histogram",
            lambda d: d["arrays"]["values"]["data"].__setitem__(0, 7.0),
            "array 'values' has values outside",
        ),
    ],
)
def test_transform_with_a_wrong_typed_calibrator_file_names_the_file_and_the_field(
    tmp_path, capsys, kind, edit, field
):
    d = saved(tmp_path, kind)
    edit(d)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(d))
    before = sha(path)
    code, out, err = calib_cli(capsys, "transform", "--calibrator", str(path), "0.5")
    assert code == 2 and out == ""
    assert_one_error_line(err, str(path), field)
    assert sha(path) == before


def test_export_into_an_unwritable_place_is_one_line_and_leaves_nothing(database, capsys, monkeypatch):
    """A path under a regular file, and a read-only folder (forced by a failing write when running as root)."""
    import os

    blocker = database.parent / "plain-file"
    blocker.write_text("not a folder")
    code, out, err = calib_cli(capsys, "export", "--db", str(database), "--out", str(blocker / "cal.json"))
    assert code == 2 and out == ""
    assert_one_error_line(err, f"cannot write {blocker / 'cal.json'}: {blocker} is a file, not a folder")
    assert blocker.read_text() == "not a folder"

    locked = database.parent / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores the folder's mode: make the write fail the way it would
        import calib.cache

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(calib.cache.tempfile, "mkstemp", refuse)
    code, out, err = calib_cli(capsys, "export", "--db", str(database), "--out", str(locked / "cal.json"))
    locked.chmod(0o755)
    assert code == 2 and out == ""
    assert_one_error_line(err, f"cannot write {locked / 'cal.json'}: Permission denied")
    assert list(locked.iterdir()) == []


def test_export_failing_at_the_rename_keeps_the_old_file_and_no_temp_file(database, capsys, monkeypatch):
    """Writes go to a temp name and are renamed: a failure leaves the previous export intact and nothing else."""
    import calib.cache

    out_file = database.parent / "exports" / "cal.json"
    assert calib_cli(capsys, "export", "--db", str(database), "--out", str(out_file))[0] == 0
    before = sha(out_file)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(calib.cache.os, "replace", fail)
    code, _, err = calib_cli(capsys, "export", "--db", str(database), "--out", str(out_file))
    assert code == 2
    assert_one_error_line(err, f"cannot write {out_file}: No space left on device")
    assert sha(out_file) == before and [p.name for p in out_file.parent.iterdir()] == ["cal.json"]


def test_export_and_transform_refuse_a_calibrator_the_database_does_not_have(database, capsys):
    code, _, err = calib_cli(capsys, "export", "--db", str(database), "--name", "nope", "--out", "x.json")
    assert code == 2
    assert_one_error_line(err, "has no calibrator 'nope' (it has: default)")
    code, _, err = calib_cli(capsys, "transform", "--db", str(database), "--name", "nope", "0.5")
    assert code == 2
    assert_one_error_line(err, "has no calibrator 'nope'")
