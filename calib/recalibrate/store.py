"""The feedback database: (question, answer, confidence, correct) rows and calibrator states in local SQLite.

Concurrent writers (several processes recording user corrections) are safe: the database runs in WAL mode, every
write is one `BEGIN IMMEDIATE` transaction (writers queue on SQLite's lock for up to `timeout` seconds, readers
never block), and a failed write rolls back completely. Each row carries a unique `uid` so a retried write can
never duplicate it. Row ids come from AUTOINCREMENT and are never reused, so "rows with id > n" is exactly what a
calibrator has not seen yet.

Validate before writing: an existing file is first opened read-only (`mode=ro`) and must be an SQLite file with
calib's tables; only then does a writing store open it for writing. calib's tables are created only in a new or
empty file. A read-only store (`readonly=True`: `calib feedback show/export/transform`) never writes and never
takes the write lock, so it works while another process is writing. A damaged, foreign or locked file gives one
CalibError line and is never modified.
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


_SQLITE_MAGIC = b"SQLite format 3\x00"
_DAMAGED_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT"}


def _expected_columns() -> dict[str, list[tuple[str, str]]]:
    """(name, declared type) of the columns of each of calib's tables, as _SCHEMA creates them."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.executescript(_SCHEMA)
        return {
            table: [(r[1], r[2].upper()) for r in probe.execute(f"PRAGMA table_info({table})")]
            for table in ("meta", "feedback", "calibrators")
        }
    finally:
        probe.close()


_COLUMNS = _expected_columns()


def _error(err: sqlite3.Error, path: str, timeout: float, readonly: bool = False) -> CalibError:
    """One CalibError line for an sqlite error on `path`."""
    text = (str(err).strip() or type(err).__name__)[:300]
    low = text.lower()
    code = getattr(err, "sqlite_errorname", "") or ""
    if code in _DAMAGED_CODES or any(
        word in low
        for word in ("not a database", "malformed", "unsupported file format", "corrupt", "could not decode")
    ):
        return CalibError(
            f"feedback database {path} is damaged or not an SQLite file ({text}); it was left untouched - "
            "restore a backup or point --db at a new file"
        )
    if "locked" in low or "busy" in low:
        if readonly:
            return CalibError(
                f"feedback database {path} stayed locked for over {timeout:g} s while reading (another "
                "process is rewriting it); nothing was written - retry, or pass a longer --timeout"
            )
        return CalibError(
            f"feedback database {path} stayed locked by another writer for over {timeout:g} s; nothing was "
            "written - retry, or pass a longer timeout"
        )
    if readonly and ("unable to open" in low or "readonly" in low or "read-only" in low):
        folder = Path(path).absolute().parent
        if not os.access(path, os.R_OK):
            return CalibError(f"cannot read feedback database {path} ({text}); check the file's permissions")
        if not os.access(folder, os.W_OK | os.X_OK):
            return CalibError(
                f"cannot read feedback database {path} ({text}): it is in WAL mode and its folder {folder} is "
                f"read-only, so SQLite cannot create {Path(path).name}-wal and -shm next to it; make the folder "
                "writable, or copy the database to a writable folder and pass that copy to --db"
            )
        return CalibError(f"cannot read feedback database {path} ({text}); check the file and its folder")
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


def _damaged(path: str, what: str) -> CalibError:
    return CalibError(
        f"feedback database {path} is damaged or not an SQLite file ({what}); it was left untouched - "
        "restore a backup or point --db at a new file"
    )


def _sniff(path: str) -> bool:
    """Whether `path` holds data (False: missing or 0 bytes); refuse what is not an SQLite file before SQLite opens it."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return False
    except IsADirectoryError as err:
        raise CalibError(f"feedback database {path} is a folder; pass a file path to --db") from err
    except OSError as err:
        raise CalibError(
            f"cannot read feedback database {path} ({err.strerror or err}); check the file's permissions"
        ) from err
    if not head:
        return False
    if not head.startswith(_SQLITE_MAGIC):
        raise _damaged(path, "no SQLite header")
    if len(head) < 100:
        raise _damaged(path, f"truncated to {len(head)} bytes")
    return True


def _columns_text(columns: list[tuple[str, str]]) -> str:
    return "(" + ", ".join(f"{name} {kind}".strip() for name, kind in columns)[:200] + ")"


def _readonly_uri(path: str) -> str:
    """A `file:` URI that opens `path` read-only (`mode=ro`; never `immutable`, as others may be writing)."""
    return Path(path).absolute().as_uri() + "?mode=ro"


class FeedbackStore:
    """One process's connection to the feedback database (open one per process; never share across fork).

    readonly=False (the default; `record` and `refit`) may create calib's tables in a new or empty file and
    writes in transactions. readonly=True opens an existing calib database with `mode=ro`: it never writes and
    never takes the write lock.
    """

    def __init__(
        self,
        url: str | os.PathLike | None = None,
        timeout: float = 10.0,
        synchronous: str = "NORMAL",
        readonly: bool = False,
    ):
        self.path = db_path(url)
        self.timeout = float(timeout)
        self.readonly = bool(readonly)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise CalibError(f"synchronous: got {synchronous!r}; choose NORMAL (default) or FULL")
        if self.readonly:
            self._conn = self._open_readonly()
            try:
                if not self._inspect(self._conn):
                    raise CalibError(
                        f"feedback database {self.path} is empty (no calib tables yet); record rows first with "
                        "`calib feedback record`"
                    )
            except BaseException:
                self._conn.close()
                raise
            return
        if self.path != ":memory:" and _sniff(self.path):
            # an existing file: check it read-only first, so a foreign or damaged one is refused before any write
            probe = self._open_readonly()
            try:
                self._inspect(probe)
            finally:
                probe.close()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as err:
            raise _error(err, self.path, self.timeout) from err
        try:
            with self._guard():
                self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
                self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            with self.transaction() as cur:
                # checked again under the write lock: another process may have created the tables meanwhile
                if not self._inspect(cur):
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            cur.execute(statement)
                    cur.execute("INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        except BaseException:
            self._conn.close()
            raise

    def _open_readonly(self) -> sqlite3.Connection:
        """A `mode=ro` connection to the existing file (after a header check that needs no SQLite)."""
        if self.path == ":memory:":
            raise CalibError("a read-only feedback store needs a database file, not :memory:")
        if not _sniff(self.path) and not Path(self.path).is_file():
            raise CalibError(f"no feedback database at {self.path}; record rows first or pass --db")
        try:
            conn = sqlite3.connect(
                _readonly_uri(self.path), uri=True, timeout=self.timeout, isolation_level=None
            )
        except sqlite3.Error as err:
            raise _error(err, self.path, self.timeout, readonly=True) from err
        try:
            with self._guard(readonly=True):
                conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _inspect(self, conn: sqlite3.Connection | sqlite3.Cursor) -> bool:
        """True if the file has calib's schema, False if it is empty; anything else is a CalibError."""
        with self._guard(readonly=True):
            objects = conn.execute(
                "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            ).fetchall()
            tables = {str(name) for kind, name in objects if kind == "table"}
            if not objects:
                marks = [
                    f"{pragma}={value}"
                    for pragma in ("user_version", "application_id")
                    if (value := conn.execute(f"PRAGMA {pragma}").fetchone()[0])
                ]
                if marks:
                    raise CalibError(
                        f"{self.path} is an SQLite database of another program ({', '.join(marks)}) and has "
                        "no calib tables; calib does not add its tables to it - point --db at a new file"
                    )
                return False
            missing = [t for t in _COLUMNS if t not in tables]
            if missing:
                shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
                raise CalibError(
                    f"{self.path} is not a calib feedback database: it has tables {shown or '(none)'} but "
                    f"no {', '.join(missing)}; calib does not add its tables to another program's "
                    "database - point --db at calib's database or a new file"
                )
            for table, expected in _COLUMNS.items():
                found = [(str(r[1]), str(r[2]).upper()) for r in conn.execute(f"PRAGMA table_info({table})")]
                if found != expected:
                    raise CalibError(
                        f"{self.path}: table {table} has columns {_columns_text(found)}, calib expects "
                        f"{_columns_text(expected)}; this is not calib's feedback database (or a damaged "
                        "one) - point --db at calib's database or a new file"
                    )
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            raise CalibError(
                f"feedback database {self.path} has calib's tables but no schema_version in table meta; it "
                "is damaged - restore a backup or point --db at a new file"
            )
        if version[0] != SCHEMA_VERSION:
            raise CalibError(
                f"feedback database {self.path} has schema {str(version[0])[:40]!r}, this calib reads "
                f"{SCHEMA_VERSION}; use a matching calib version or a new --db file"
            )
        return True

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @contextlib.contextmanager
    def _guard(self, readonly: bool | None = None) -> Iterator[None]:
        """Turn sqlite errors into one CalibError line."""
        try:
            yield
        except sqlite3.Error as err:
            ro = self.readonly if readonly is None else readonly
            raise _error(err, self.path, self.timeout, readonly=ro) from err
        except (
            UnicodeDecodeError
        ) as err:  # sqlite3 decodes TEXT as UTF-8 itself and raises this, not an sqlite3.Error
            raise _damaged(self.path, f"text that is not UTF-8: {err.reason} at byte {err.start}") from err

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: takes the write lock up front (BEGIN IMMEDIATE); all or nothing."""
        if self.readonly:
            raise CalibError(
                f"feedback database {self.path} was opened read-only; open it with readonly=False "
                "(`calib feedback record` or `refit`) to write"
            )
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

    def _bad_row(self, row_id: Any, column: str, value: Any) -> CalibError:
        return CalibError(
            f"feedback database {self.path} is damaged: row id {str(row_id)[:20]} has {column} = "
            f"{str(value)[:40]!r} ({type(value).__name__}); it was left untouched - restore a backup or point "
            "--db at a new file"
        )

    def _checked(self, r: tuple) -> tuple:
        """A stored (id, confidence, correct, ...) row with the types and ranges its table's CHECKs promise."""
        row_id, confidence, correct = r[0], r[1], r[2]
        if type(row_id) is not int:
            raise self._bad_row(row_id, "id", row_id)
        if type(confidence) not in (int, float) or not 0.0 <= confidence <= 1.0:  # NaN fails the range too
            raise self._bad_row(row_id, "confidence", confidence)
        if type(correct) is not int or correct not in (0, 1):
            raise self._bad_row(row_id, "correct", correct)
        return r

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
        for r in rows:
            self._checked(r)
        arr = np.asarray(rows, np.float64)
        return arr[:, 1], arr[:, 2], int(rows[-1][0])

    def rows(self, limit: int | None = None) -> list[FeedbackRow]:
        """All stored rows (or the last `limit`), oldest first."""
        sql = "SELECT id, confidence, correct, uid, question, answer, source, created_at FROM feedback"
        with self._guard():
            if limit is None:
                found = self._conn.execute(sql + " ORDER BY id").fetchall()
            else:
                found = self._conn.execute(
                    sql + " ORDER BY id DESC LIMIT ?", (max(int(limit), 0),)
                ).fetchall()
                found.reverse()
        out = []
        for r in found:
            row_id, confidence, correct, uid, question, answer, source, created_at = self._checked(r)
            for column, value in (("uid", uid), ("question", question), ("answer", answer)):
                if type(value) is not str:
                    raise self._bad_row(row_id, column, value)
            if source is not None and type(source) is not str:
                raise self._bad_row(row_id, "source", source)
            if type(created_at) not in (int, float):
                raise self._bad_row(row_id, "created_at", created_at)
            out.append(
                FeedbackRow(
                    row_id, uid, question, answer, float(confidence), correct, source, float(created_at)
                )
            )
        return out

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
            if type(found[0]) is not str:
                raise TypeError(f"state is {type(found[0]).__name__}, not JSON text")
            if type(found[1]) is not int or found[1] < 0:
                raise TypeError(f"last_row_id is {str(found[1])[:20]!r}, not a row id")
            state = json.loads(found[0])
            if not isinstance(state, dict):
                raise TypeError(f"state is a JSON {type(state).__name__}, not an object")
            return state, found[1]
        except (TypeError, ValueError, RecursionError) as err:
            raise CalibError(
                f"calibrator {name!r} in {self.path} has a damaged state ({str(err)[:200]}); the feedback rows "
                "are intact - rebuild it with `calib feedback refit --full`"
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
            names = [r[0] for r in self._conn.execute("SELECT name FROM calibrators ORDER BY name")]
        for name in names:
            if type(name) is not str:
                raise CalibError(
                    f"feedback database {self.path} is damaged: a calibrator name is {str(name)[:40]!r} "
                    f"({type(name).__name__}); it was left untouched - restore a backup or point --db at a new file"
                )
        return names

    def check(self) -> str:
        """SQLite's integrity check: "ok", or the first problem it reports."""
        with self._guard():
            return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])
