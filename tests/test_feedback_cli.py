"""`calib feedback` subcommands through feedback_cli.main: record, refit, show, export, transform, errors."""

import json

import numpy as np
import pytest

from calib.feedback_cli import main
from calib.recalibrate import FeedbackStore, IsotonicCalibrator, OnlineHistogramCalibrator, load_calibrator


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
