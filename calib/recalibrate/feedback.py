"""The feedback loop: user or grader corrections keep recalibrating a deployed model's confidence.

    rec = Recalibrator("sqlite:///feedback.db")           # db=None: in memory, no database
    rec.update([0.9, 0.6], [1, 0], questions=[...], answers=[...])
    rec.transform([0.9])                                    # recalibrated with everything recorded so far
    rec.save("calibrator.json"); load_calibrator("calibrator.json").transform([0.9])   # deploy without the db

With a database, `update` records the rows and, in the same transaction, folds every row the calibrator has not
seen yet (including rows other processes recorded) into its state, so state and rows never disagree. An
incremental calibrator (online_histogram, the default: integer counts) folds just the new rows and its state equals
a batch refit on the same rows exactly; any other kind (isotonic, platt, ...) is refitted on all rows there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calib.errors import CalibError
from calib.recalibrate import serialize
from calib.recalibrate.base import Calibrator, make_calibrator
from calib.recalibrate.store import FeedbackStore

DEFAULT_KIND = "online_histogram"


def _incremental(cal: Calibrator) -> bool:
    return hasattr(cal, "partial_fit")


class Recalibrator:
    """A named calibrator kept in step with the feedback rows of one database (or in memory when db is None).

    `kind` and `settings` (e.g. n_bins=20) apply when the database has no calibrator of this name yet; an
    existing one keeps its kind (asking for another kind is an error: rebuild with refit(kind=...)).
    readonly=True opens the database read-only (transform and save only; update and refit are refused).
    """

    def __init__(
        self,
        db: str | os.PathLike | FeedbackStore | None = None,
        name: str = "default",
        kind: str | None = None,
        timeout: float = 10.0,
        readonly: bool = False,
        **settings: Any,
    ):
        self.name = name
        if isinstance(db, str | os.PathLike):
            self.store: FeedbackStore | None = FeedbackStore(db, timeout=timeout, readonly=readonly)
        else:
            self.store = db
        self.calibrator: Calibrator = make_calibrator(kind or DEFAULT_KIND, **settings)
        self._last_id = 0
        self._memory: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])  # rows kept in memory mode
        if self.store is not None:
            # a damaged state: refit(kind=...) can still rebuild it; every other call reports it
            with contextlib.suppress(CalibError):
                self.refresh()
        if kind is not None and self.calibrator.kind != kind:
            raise CalibError(
                f"calibrator {name!r} in {self.store.path} is {self.calibrator.kind}, not {kind}; pass another "
                f"name for a second calibrator, or rebuild this one with refit(kind={kind!r})"
            )

    @property
    def kind(self) -> str:
        return self.calibrator.kind

    @property
    def rows_seen(self) -> int:
        """Largest feedback row id folded into the state (database mode)."""
        return self._last_id

    def _where(self) -> str:
        return f"calibrator {self.name!r} in {self.store.path}"

    def update(
        self,
        confidence: Any,
        correct: Any,
        questions: Sequence[str] | None = None,
        answers: Sequence[str] | None = None,
        source: str | None = None,
        uids: Sequence[str] | None = None,
    ) -> int:
        """Record graded rows and fold them into the calibrator atomically; returns how many rows were new."""
        rows = FeedbackStore.prepare(confidence, correct, questions, answers, source, uids)
        if self.store is None:
            c, y = np.array([r[3] for r in rows]), np.array([r[4] for r in rows], np.float64)
            self._memory[0].append(c)
            self._memory[1].append(y)
            if _incremental(self.calibrator):
                self.calibrator.partial_fit(c, y)
            else:
                self._refit_memory(self.calibrator.blank())
            return len(rows)
        with self.store.transaction() as cur:
            added = self.store.insert(cur, rows)
            self._catch_up(cur)
        return added

    def _refit_memory(self, cal: Calibrator) -> None:
        if self._memory[1]:
            cal.fit(np.concatenate(self._memory[0]), np.concatenate(self._memory[1]))
        self.calibrator = cal

    def _catch_up(self, cur: Any, rebuild_as: str | None = None) -> None:
        """Inside a write transaction: fold unseen rows (or rebuild from all rows) and write the state back."""
        if rebuild_as is not None:
            same = rebuild_as == self.kind
            cal, last = (self.calibrator.blank() if same else make_calibrator(rebuild_as)), 0
        else:
            stored, last = self.store.load_state(self.name, cur)
            cal = self.calibrator.blank() if stored is None else serialize.from_dict(stored, self._where())
        if _incremental(cal):
            c, y, newest = self.store.arrays(last, cur)
            cal.partial_fit(c, y)
        else:
            c, y, newest = self.store.arrays(0, cur)
            cal = cal.blank().fit(c, y) if len(y) else cal.blank()
        newest = max(newest, last)
        self.store.save_state(cur, self.name, serialize.to_dict(cal), newest)
        self.calibrator, self._last_id = cal, newest

    def refit(self, kind: str | None = None, full: bool = False) -> Calibrator:
        """Fold rows recorded without update(); full=True or a kind rebuilds from every row (also a damaged state)."""
        rebuild_as = kind or (self.kind if full else None)
        if self.store is None:
            if rebuild_as is not None:
                self._refit_memory(
                    self.calibrator.blank() if rebuild_as == self.kind else make_calibrator(rebuild_as)
                )
            return self.calibrator
        with self.store.transaction() as cur:
            self._catch_up(cur, rebuild_as)
        return self.calibrator

    def refresh(self) -> Calibrator:
        """Reload the state other processes may have advanced (database mode); cheap when nothing changed."""
        if self.store is not None:
            stored, last = self.store.load_state(self.name)
            if stored is not None and (last != self._last_id or stored.get("kind") != self.kind):
                self.calibrator = serialize.from_dict(stored, self._where())
                self._last_id = last
        return self.calibrator

    def transform(self, confidence: Any) -> np.ndarray:
        """Recalibrated confidences under the latest state."""
        return self.refresh().transform(confidence)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the current calibrator to .json/.safetensors; load_calibrator(path) reproduces its outputs."""
        return serialize.save_calibrator(self.refresh(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, name: str = "default") -> Recalibrator:
        """An in-memory Recalibrator starting from a saved calibrator (no database needed).

        Further update()s fold into it incrementally; a batch kind refits on the rows given after loading.
        """
        cal = serialize.load_calibrator(path)
        if not isinstance(cal, Calibrator):
            raise CalibError(f"{path} holds a {cal.kind} model, not a confidence calibrator")
        rec = cls(None, name=name, kind=cal.kind, **cal.settings())
        rec.calibrator = cal
        return rec

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> Recalibrator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
