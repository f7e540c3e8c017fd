"""The feedback database: (question, answer, confidence, correct) rows and calibrator states in local SQLite.

Concurrent writers (several processes recording user corrections) are safe: the database runs in WAL mode, every
write is one `BEGIN IMMEDIATE` transaction (writers queue on SQLite's lock for up to `timeout` seconds, readers
never block), and a failed write rolls back completely. Each row carries a unique `uid` so a retried write can
never duplicate it. Row ids come from AUTOINCREMENT and are never reused, so "rows with id > n" is exactly what a
calibrator has not seen yet. A damaged, foreign or locked file gives one CalibError line and is never modified.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calib.errors import CalibError
from calib.recalibrate import _checks

SCHEMA_VERSION = "1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    confidence REAL NOT NULL CHECK (confidence >= 0.0 AND confidence <= 1.0),
    correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
    source TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS calibrators (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    last_row_id INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
"""


def default_db_path() -> Path:
    """$CALIB_FEEDBACK_DB, else feedback.sqlite in the platform's user data dir (e.g. ~/.local/share/calib)."""
    from platformdirs import user_data_dir

    return Path(os.environ.get("CALIB_FEEDBACK_DB") or Path(user_data_dir("calib")) / "feedback.sqlite")


def db_path(url: str | os.PathLike | None) -> str:
    """File path (or ":memory:") of a database URL: a plain path, sqlite:///relative or sqlite:////absolute."""
    if url is None:
        return str(default_db_path())
    text = str(url)
    if text.startswith("sqlite://"):
        rest = text[len("sqlite://") :]
        if not rest.startswith("/") or rest == "/":
            raise CalibError(
                f"database URL {text!r} has no file; write sqlite:///feedback.db or sqlite:////abs/path.db"
            )
        return rest[1:]
    if "://" in text:
        raise CalibError(
            f"database URL {text!r}: only local SQLite is supported (sqlite:///path.db or a file path); "
            "no server is needed"
        )
    return text


@dataclass(frozen=True)
class FeedbackRow:
    """One graded answer as stored."""

    id: int
    uid: str
    question: str
    answer: str
    confidence: float
    correct: int
    source: str | None
    created_at: float


def _error(err: sqlite3.Error, path: str, timeout: float) -> CalibError:
    text = str(err).strip() or type(err).__name__
    low = text.lower()
    if "locked" in low or "busy" in low:
        return CalibError(
            f"feedback database {path} stayed locked by another writer for over {timeout:g} s; nothing was "
            "written - retry, or pass a longer timeout"
        )
    if "unable to open" in low or "readonly" in low or "read-only" in low:
        return CalibError(
            f"cannot open feedback database {path} for writing ({text}); check the folder and permissions"
        )
    if isinstance(err, sqlite3.DatabaseError) and not isinstance(
        err, sqlite3.IntegrityError | sqlite3.OperationalError
    ):
        return CalibError(
            f"feedback database {path} is damaged or not an SQLite file ({text}); it was left untouched - "
            "restore a backup or point --db at a new file"
        )
    return CalibError(f"feedback database {path}: {text}")


class FeedbackStore:
    """One process's connection to the feedback database (open one per process; never share across fork)."""

    def __init__(
        self, url: str | os.PathLike | None = None, timeout: float = 10.0, synchronous: str = "NORMAL"
    ):
        self.path = db_path(url)
        self.timeout = float(timeout)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise CalibError(f"synchronous: got {synchronous!r}; choose NORMAL (default) or FULL")
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise _error(err, self.path, self.timeout) from err
        try:
            with self._guard():
                # a read first: a foreign or damaged file fails here, before anything could write to it
                self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            with self.transaction() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                found = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if found is None:
                    cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
                elif found[0] != SCHEMA_VERSION:
                    raise CalibError(
                        f"feedback database {self.path} has schema {found[0]}, this calib reads {SCHEMA_VERSION}; "
                        "use a matching calib version or a new --db file"
                    )
        except BaseException:
            self._conn.close()
            raise

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn sqlite errors into one CalibError line."""
        try:
            yield
        except sqlite3.Error as err:
            raise _error(err, self.path, self.timeout) from err

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: takes the write lock up front (BEGIN IMMEDIATE); all or nothing."""
        with self._guard():
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @staticmethod
    def prepare(
        confidence: Any,
        correct: Any,
        questions: Sequence[str] | None = None,
        answers: Sequence[str] | None = None,
        source: str | None = None,
        uids: Sequence[str] | None = None,
    ) -> list[tuple]:
        """Checked rows ready for insert(); run before taking the write lock so bad input never holds it."""
        c = _checks.confidences(confidence, allow_empty=True)
        y = _checks.labels(correct, allow_empty=True)
        n = c.size
        questions = [""] * n if questions is None else [str(q) for q in questions]
        answers = [""] * n if answers is None else [str(a) for a in answers]
        uids = [uuid.uuid4().hex for _ in range(n)] if uids is None else [str(u) for u in uids]
        lengths = {"confidence": n, "correct": y.size, "questions": len(questions), "answers": len(answers)}
        lengths["uids"] = len(uids)
        if len(set(lengths.values())) != 1:
            raise CalibError(
                f"feedback rows have different lengths {lengths}; pass one value per row for each"
            )
        now = time.time()
        return [
            (u, q, a, float(ci), int(yi), source, now)
            for u, q, a, ci, yi in zip(uids, questions, answers, c, y)
        ]

    def insert(self, cur: sqlite3.Cursor, rows: list[tuple]) -> int:
        """Insert prepared rows inside an open transaction; rows whose uid already exists are skipped."""
        before = self._conn.total_changes
        cur.executemany(
            "INSERT OR IGNORE INTO feedback (uid, question, answer, confidence, correct, source, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return self._conn.total_changes - before

    def record(self, confidence: Any, correct: Any, **fields: Any) -> int:
        """Store graded rows in one transaction; returns how many were new. Fields: see prepare()."""
        rows = self.prepare(confidence, correct, **fields)
        with self.transaction() as cur:
            return self.insert(cur, rows)

    def arrays(
        self, after_id: int = 0, cur: sqlite3.Cursor | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(confidence, correct, largest id) of the rows with id > after_id, in id order."""
        with self._guard():
            rows = (
                (cur or self._conn)
                .execute(
                    "SELECT id, confidence, correct FROM feedback WHERE id > ? ORDER BY id", (int(after_id),)
                )
                .fetchall()
            )
        if not rows:
            return np.zeros(0), np.zeros(0), int(after_id)
        arr = np.asarray(rows, np.float64)
        return arr[:, 1], arr[:, 2], int(rows[-1][0])

    def rows(self, limit: int | None = None) -> list[FeedbackRow]:
        """All stored rows (or the last `limit`), oldest first."""
        sql = "SELECT id, uid, question, answer, confidence, correct, source, created_at FROM feedback ORDER BY id"
        with self._guard():
            found = self._conn.execute(sql).fetchall()
        return [FeedbackRow(*r) for r in (found if limit is None else found[-limit:])]

    def count(self) -> int:
        with self._guard():
            return int(self._conn.execute("SELECT count(*) FROM feedback").fetchone()[0])

    def load_state(self, name: str, cur: sqlite3.Cursor | None = None) -> tuple[dict | None, int]:
        """(serialised calibrator dict or None, last folded row id) of the named calibrator."""
        with self._guard():
            found = (
                (cur or self._conn)
                .execute("SELECT state, last_row_id FROM calibrators WHERE name = ?", (name,))
                .fetchone()
            )
        if found is None:
            return None, 0
        try:
            return json.loads(found[0]), int(found[1])
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise CalibError(
                f"calibrator {name!r} in {self.path} has a damaged state ({err}); the feedback rows are intact - "
                "rebuild it with `calib feedback refit --full`"
            ) from err

    def save_state(self, cur: sqlite3.Cursor, name: str, state: dict, last_row_id: int) -> None:
        """Write a calibrator state inside an open transaction."""
        cur.execute(
            "INSERT INTO calibrators (name, state, last_row_id, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET state = excluded.state, last_row_id = excluded.last_row_id, "
            "updated_at = excluded.updated_at",
            (name, json.dumps(state, allow_nan=False), int(last_row_id), time.time()),
        )

    def calibrator_names(self) -> list[str]:
        with self._guard():
            return [r[0] for r in self._conn.execute("SELECT name FROM calibrators ORDER BY name")]

    def check(self) -> str:
        """SQLite's integrity check: "ok", or the first problem it reports."""
        with self._guard():
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
