"""Feedback database and Recalibrator: WAL, idempotent rows, damaged/locked files, incremental = batch state."""

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from calib.errors import CalibError
from calib.recalibrate import (
    FeedbackStore,
    IsotonicCalibrator,
    OnlineHistogramCalibrator,
    Recalibrator,
    db_path,
)


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.random(n)
    return c, (rng.random(n) < c**2).astype(float)


def test_urls_and_wal_mode(tmp_path):
    assert db_path("sqlite:///rel/fb.db") == "rel/fb.db"
    assert db_path("sqlite:////abs/fb.db") == "/abs/fb.db"
    assert db_path(tmp_path / "x.db") == str(tmp_path / "x.db")
    with pytest.raises(CalibError, match="only local SQLite"):
        db_path("postgresql://host/db")
    with pytest.raises(CalibError, match="has no file"):
        db_path("sqlite://")
    with FeedbackStore(f"sqlite:///{tmp_path}/fb.db") as store:
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.check() == "ok"


def test_record_is_idempotent_by_uid(tmp_path):
    with FeedbackStore(tmp_path / "fb.db") as store:
        assert (
            store.record([0.9, 0.2], [1, 0], questions=["q1", "q2"], answers=["a", "b"], uids=["u1", "u2"])
            == 2
        )
        assert store.record([0.9, 0.4], [1, 1], uids=["u1", "u3"]) == 1  # u1 was already stored
        got = store.rows()
        assert [r.uid for r in got] == ["u1", "u2", "u3"]
        assert np.all(np.diff([r.id for r in got]) > 0)  # ids only grow (an ignored insert may skip one)
        assert got[0].question == "q1" and got[0].confidence == 0.9 and got[0].correct == 1


@pytest.mark.parametrize(
    ("conf", "correct", "match"),
    [
        ([0.5], [2], "not 0 or 1"),
        ([0.5], [0.5], "not 0 or 1"),
        ([1.5], [1], "outside"),
        ([0.5, 0.1], [1], "lengths"),
    ],
)
def test_bad_rows_are_rejected_and_nothing_is_written(tmp_path, conf, correct, match):
    rec = Recalibrator(tmp_path / "fb.db")
    rec.update([0.3], [0])
    with pytest.raises(CalibError, match=match) as err:
        rec.update(conf, correct)
    assert "\n" not in str(err.value)
    assert rec.store.count() == 1 and rec.calibrator.n_rows == 1


def test_online_state_equals_batch_refit_and_tracks_rows(tmp_path):
    c, y = rows(300)
    rec = Recalibrator(tmp_path / "fb.db", n_bins=12)
    for i in range(0, 300, 7):
        rec.update(c[i : i + 7], y[i : i + 7])
    assert rec.rows_seen == 300
    assert rec.calibrator == OnlineHistogramCalibrator(n_bins=12).fit(c, y)
    # a second process's view (fresh object) sees the same state
    other = Recalibrator(tmp_path / "fb.db")
    assert other.calibrator == rec.calibrator and other.kind == "online_histogram"
    np.testing.assert_array_equal(other.transform([0.1, 0.5]), rec.transform([0.1, 0.5]))


def test_rows_recorded_without_update_are_folded_in_by_refit_or_next_update(tmp_path):
    c, y = rows(50)
    rec = Recalibrator(tmp_path / "fb.db")
    rec.update(c[:10], y[:10])
    rec.store.record(c[10:40], y[10:40])  # e.g. `calib feedback record --no-refit` from elsewhere
    assert rec.calibrator.n_rows == 10
    rec.refit()
    assert rec.calibrator == OnlineHistogramCalibrator().fit(c[:40], y[:40])
    rec.store.record(c[40:45], y[40:45])
    rec.update(c[45:], y[45:])
    assert rec.calibrator == OnlineHistogramCalibrator().fit(c, y)


def test_batch_kind_refits_on_all_rows(tmp_path):
    c, y = rows(200, seed=2)
    rec = Recalibrator(tmp_path / "fb.db", name="iso", kind="isotonic")
    rec.update(c[:100], y[:100])
    rec.update(c[100:], y[100:])
    assert rec.calibrator == IsotonicCalibrator().fit(c, y)
    with pytest.raises(CalibError, match="is isotonic, not platt"):
        Recalibrator(tmp_path / "fb.db", name="iso", kind="platt")
    rec.refit(kind="platt")  # rebuild from every row as another kind
    assert Recalibrator(tmp_path / "fb.db", name="iso").kind == "platt"


def test_not_a_database_is_one_line_error_and_file_untouched(tmp_path):
    path = tmp_path / "fb.db"
    garbage = b"this is not sqlite at all " * 200
    path.write_bytes(garbage)
    with pytest.raises(CalibError, match="damaged or not an SQLite file") as err:
        Recalibrator(path)
    assert "\n" not in str(err.value)
    assert path.read_bytes() == garbage
    assert not (tmp_path / "fb.db-wal").exists() or (tmp_path / "fb.db-wal").stat().st_size == 0


def test_damaged_pages_are_one_line_error_and_file_untouched(tmp_path):
    path = tmp_path / "fb.db"
    c, y = rows(2000)
    with Recalibrator(path) as rec:
        rec.update(c, y, questions=[f"question number {i} " * 4 for i in range(2000)])
        rec.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    data[8192:16384] = b"\xff" * 8192  # smash pages in the middle of the feedback table
    path.write_bytes(bytes(data))
    with pytest.raises(CalibError, match="damaged") as err, FeedbackStore(path) as store:
        store.rows()
    assert "\n" not in str(err.value)
    assert path.read_bytes() == bytes(data)  # never modified


def test_locked_database_is_one_line_error_and_loses_nothing(tmp_path):
    path = tmp_path / "fb.db"
    c, y = rows(20)
    rec = Recalibrator(path, timeout=0.2)
    rec.update(c[:10], y[:10])
    before = (rec.store.count(), rec.calibrator.counts.copy())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(CalibError, match="locked by another writer") as err:
            rec.update(c[10:], y[10:])
        assert "\n" not in str(err.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert rec.store.count() == before[0] and np.array_equal(Recalibrator(path).calibrator.counts, before[1])
    rec.update(c[10:], y[10:])  # after the lock is gone the same write goes through, once
    assert rec.store.count() == 20 and rec.calibrator == OnlineHistogramCalibrator().fit(c, y)


def test_writer_waits_for_a_short_lock(tmp_path):
    path = tmp_path / "fb.db"
    rec = Recalibrator(path, timeout=10)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    rec.update([0.4], [1])  # blocks until the other writer commits, then succeeds
    release.join()
    holder.close()
    assert rec.store.count() == 1


def test_damaged_state_is_reported_and_rebuilt_from_rows(tmp_path):
    path = tmp_path / "fb.db"
    c, y = rows(40)
    Recalibrator(path).update(c, y)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("UPDATE calibrators SET state = '{broken' WHERE name = 'default'")
    raw.close()
    rec = Recalibrator(path)
    with pytest.raises(CalibError, match="damaged state") as err:
        rec.transform([0.5])
    assert "\n" not in str(err.value) and "refit --full" in str(err.value)
    rec.refit(full=True)
    assert rec.calibrator == OnlineHistogramCalibrator().fit(c, y) and rec.store.count() == 40


def test_in_memory_recalibrator_matches_batch(tmp_path):
    c, y = rows(100)
    rec = Recalibrator(None, kind="isotonic")
    for i in range(0, 100, 30):
        rec.update(c[i : i + 30], y[i : i + 30])
    assert rec.calibrator == IsotonicCalibrator().fit(c, y)
    assert rec.refit(kind="histogram").kind == "histogram"


# ---- validate before writing: foreign, damaged and busy files (issue 17, case 6) ------------------------------------


def sha(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def foreign_db(path: Path) -> Path:
    """Another program's SQLite file: its own table, rollback journal (DELETE), closed cleanly."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE people (name TEXT, age INTEGER)")
    conn.execute("INSERT INTO people VALUES ('ada', 36)")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    return path


def calib_db(path: Path, n: int = 50) -> Path:
    c, y = rows(n)
    with Recalibrator(path) as rec:
        rec.update(c, y, questions=[f"q{i}" for i in range(n)])
    return path


@pytest.mark.parametrize("readonly", [True, False])
def test_foreign_sqlite_file_is_refused_before_any_write(tmp_path, readonly):
    """Neither a reading nor a writing store adds calib's tables to another program's file or switches it to WAL."""
    path = foreign_db(tmp_path / "other.db")
    before = sha(path)
    with pytest.raises(
        CalibError, match="not a calib feedback database: it has tables people but no meta"
    ) as err:
        FeedbackStore(path, readonly=readonly)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, -shm or -journal either
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


def test_sqlite_file_marked_by_another_program_is_refused(tmp_path):
    """No tables but a user_version: someone else's (empty) database, not an empty file calib may take over."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    before = sha(path)
    with pytest.raises(CalibError, match=r"another program.*user_version=7"):
        FeedbackStore(path)
    assert sha(path) == before


def test_calib_tables_with_other_columns_or_schema_are_refused(tmp_path):
    path = tmp_path / "fb.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE meta (key TEXT, value TEXT); CREATE TABLE feedback (id INTEGER, text TEXT);"
        "CREATE TABLE calibrators (name TEXT);"
    )
    conn.close()
    before = sha(path)
    with pytest.raises(CalibError, match="table feedback has columns"):
        FeedbackStore(path)
    assert sha(path) == before
    newer = calib_db(tmp_path / "newer.db")
    raw = sqlite3.connect(newer, isolation_level=None)
    raw.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    raw.close()
    for readonly in (True, False):
        with pytest.raises(CalibError, match="has schema '2', this calib reads 1"):
            FeedbackStore(newer, readonly=readonly)


def test_only_a_writing_store_creates_the_schema_and_only_in_a_new_or_empty_file(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    with pytest.raises(CalibError, match="is empty"):
        FeedbackStore(empty, readonly=True)
    assert empty.read_bytes() == b""
    with pytest.raises(CalibError, match="no feedback database at"):
        FeedbackStore(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()
    with FeedbackStore(empty) as store:  # a 0-byte file is new: the writing store may create the tables
        store.record([0.5], [1])
    with FeedbackStore(empty, readonly=True) as store:
        assert store.count() == 1


@pytest.mark.parametrize(
    "damage",
    ["random", "truncated-header", "truncated-pages", "header-version", "page-size", "zeroed-schema"],
)
@pytest.mark.parametrize("readonly", [True, False])
def test_damaged_file_is_never_modified(tmp_path, damage, readonly):
    """Random bytes, a cut-off file or a mutated header: one CalibError line naming the file, bytes identical."""
    path = calib_db(tmp_path / "fb.db")
    data = bytearray(path.read_bytes())
    if damage == "random":
        data = bytearray(np.random.default_rng(5).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    elif damage == "truncated-header":
        data = data[:60]
    elif damage == "truncated-pages":
        data = data[: len(data) // 2 + 100]
    elif damage == "header-version":
        data[18:20] = b"\x07\x07"  # read/write format versions SQLite does not know
    elif damage == "page-size":
        data[16:18] = b"\x01\x23"  # not a power of two
    else:
        data[100:4096] = bytes(3996)  # sqlite_master's page wiped
    path.write_bytes(bytes(data))
    with pytest.raises(CalibError) as err, FeedbackStore(path, readonly=readonly) as store:
        store.rows()
        Recalibrator(store).refresh()
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert path.read_bytes() == bytes(data)
    for side in ("fb.db-wal", "fb.db-journal"):
        assert not (tmp_path / side).exists() or (tmp_path / side).stat().st_size == 0


@pytest.mark.parametrize("lock", ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"])
def test_reading_store_works_while_another_process_writes(tmp_path, lock):
    """A read-only store never takes the write lock: it reads the last committed rows during a write transaction."""
    path = calib_db(tmp_path / "fb.db", n=30)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(lock)
    holder.execute(
        "INSERT INTO feedback (uid, question, answer, confidence, correct, created_at) "
        "VALUES ('pending', '', '', 0.5, 1, 0)"
    )
    try:
        began = time.perf_counter()
        with FeedbackStore(path, timeout=5, readonly=True) as store:
            assert store.count() == 30 and store.check() == "ok"
            rec = Recalibrator(store)
            assert rec.rows_seen == 30 and rec.transform([0.5]).shape == (1,)
        assert time.perf_counter() - began < 2  # did not wait for the writer's lock
        with pytest.raises(CalibError, match="locked by another writer"):
            FeedbackStore(path, timeout=0.1).record([0.5], [1])  # a writer does wait, and reports it
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_reading_store_refuses_to_write(tmp_path):
    path = calib_db(tmp_path / "fb.db")
    before = sha(path)
    rec = Recalibrator(path, readonly=True)
    for write in (lambda: rec.update([0.5], [1]), lambda: rec.refit(full=True)):
        with pytest.raises(CalibError, match="opened read-only"):
            write()
    rec.close()
    assert sha(path) == before


def test_rows_with_wrong_types_are_reported_not_crashed_on(tmp_path):
    """A value the table's CHECKs forbid (written around them) is a CalibError naming the row and the column."""
    path = calib_db(tmp_path / "fb.db", n=5)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA ignore_check_constraints = ON")
    raw.execute("UPDATE feedback SET confidence = 'high' WHERE id = 3")
    raw.close()
    with FeedbackStore(path, readonly=True) as store:
        for read in (store.rows, store.arrays):
            with pytest.raises(CalibError, match="row id 3 has confidence = 'high'"):
                read()


def test_text_that_is_not_utf8_is_a_damaged_file_error(tmp_path):
    """In a row, sqlite3 raises OperationalError; in a table name, UnicodeDecodeError (found by the fuzz test)."""
    path = calib_db(tmp_path / "fb.db", n=5)
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("UPDATE feedback SET question = CAST(X'80FF' AS TEXT) WHERE id = 2")
    raw.close()
    before = sha(path)
    with (
        FeedbackStore(path, readonly=True) as store,
        pytest.raises(CalibError, match=r"damaged.*decode") as err,
    ):
        store.rows()
    assert str(path) in str(err.value) and sha(path) == before

    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("CREATE TABLE extra (x)")
    raw.execute("PRAGMA writable_schema = ON")
    raw.execute("UPDATE sqlite_master SET name = CAST(X'80' AS TEXT) WHERE name = 'extra'")
    raw.close()
    before = sha(path)
    with pytest.raises(CalibError, match=r"damaged or not an SQLite file.*not UTF-8"):
        FeedbackStore(path, readonly=True)
    assert sha(path) == before
