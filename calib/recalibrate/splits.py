"""Calibration/test discipline: calibrators are fitted on calibration rows and judged on disjoint test rows.

A Split holds two disjoint index sets. `recalibrate` hands the calibrator only `correct[split.calibration]`; the
test labels are read once, after fitting, to score the result. `split_by_ids` assigns each example by a hash of
its id, so a question is always on the same side across runs and machines (repeated ids never straddle), and
adding examples never moves old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calib.errors import CalibError
from calib.recalibrate import _checks
from calib.recalibrate.base import Calibrator, make_calibrator


@dataclass(frozen=True)
class Split:
    """Disjoint row indices: `calibration` (fit here) and `test` (evaluate here)."""

    calibration: np.ndarray
    test: np.ndarray

    def __post_init__(self) -> None:
        cal = np.asarray(self.calibration, np.int64).reshape(-1)
        test = np.asarray(self.test, np.int64).reshape(-1)
        if cal.size == 0:
            raise CalibError(
                "the calibration split is empty; raise calibration_fraction or add labelled rows"
            )
        if np.intersect1d(cal, test).size:
            raise CalibError(
                f"{np.intersect1d(cal, test).size} rows are in both the calibration and the test split; "
                "a calibrator must never see test labels, so make the splits disjoint"
            )
        if len(np.unique(cal)) != cal.size or len(np.unique(test)) != test.size:
            raise CalibError("a split lists the same row twice; pass each row index once")
        object.__setattr__(self, "calibration", cal)
        object.__setattr__(self, "test", test)

    def check_size(self, n: int) -> None:
        """Every index must address one of the n rows."""
        both = np.concatenate([self.calibration, self.test])
        if both.size and (both.min() < 0 or both.max() >= n):
            raise CalibError(f"the split addresses rows outside 0..{n - 1}; build it for these {n} rows")

    def calibration_part(self, items: Sequence[Any]) -> list[Any]:
        """The calibration rows of a list (e.g. prompts for fitting a temperature on token logits)."""
        return [items[i] for i in self.calibration]

    def test_part(self, items: Sequence[Any]) -> list[Any]:
        return [items[i] for i in self.test]


def split_indices(n: int, calibration_fraction: float = 0.5, seed: int = 0) -> Split:
    """A random split of n rows; the calibration part gets round(fraction * n) rows (at least one)."""
    n = _checks.positive_int(n, "n")
    if not 0 < calibration_fraction < 1:
        raise CalibError(
            f"calibration_fraction: got {calibration_fraction!r}; pass a number strictly between 0 and 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, round(calibration_fraction * n)), n)
    return Split(np.sort(order[:k]), np.sort(order[k:]))


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def split_by_ids(ids: Sequence[Any], calibration_fraction: float = 0.5, salt: str = "calib") -> Split:
    """Stable split by example id: the row goes to calibration when hash(salt, id) < fraction."""
    if not 0 < calibration_fraction < 1:
        raise CalibError(
            f"calibration_fraction: got {calibration_fraction!r}; pass a number strictly between 0 and 1"
        )
    u = np.array([_unit_hash(f"{salt}\x00{i}") for i in ids])
    rows = np.arange(len(u))
    return Split(rows[u < calibration_fraction], rows[u >= calibration_fraction])


@dataclass
class RecalibrationResult:
    """A calibrator fitted on the calibration rows, with test-split metrics before and after."""

    calibrator: Calibrator
    split: Split
    test_before: np.ndarray  # original test confidences
    test_after: np.ndarray  # recalibrated test confidences
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """A small markdown table of the test metrics before and after."""
        lines = ["| metric | before | after |", "|---|---|---|"]
        for name in self.metrics_before:
            lines.append(f"| {name} | {self.metrics_before[name]:.4f} | {self.metrics_after[name]:.4f} |")
        return "\n".join(lines)


def _test_metrics(c: np.ndarray, y: np.ndarray, n_bins: int) -> dict[str, float]:
    from calib.metrics import auroc, brier, ece

    out = {"ece": ece(c, y, n_bins=n_bins), "brier": brier(c, y)}
    if 0 < y.sum() < y.size:  # AUROC needs both classes
        out["auroc"] = auroc(c, y)
    return out


def fit_on_split(calibrator: Calibrator | str, confidence: Any, correct: Any, split: Split) -> Calibrator:
    """Fit on the calibration rows only; the test rows' labels are not read (not even validated)."""
    cal = make_calibrator(calibrator) if isinstance(calibrator, str) else calibrator
    c = _checks.confidences(confidence, allow_empty=True)
    split.check_size(c.size)
    y_cal = np.asarray(correct)[split.calibration]  # the only labels the calibrator gets
    return cal.fit(c[split.calibration], y_cal)


def recalibrate(
    calibrator: Calibrator | str, confidence: Any, correct: Any, split: Split, n_bins: int = 15
) -> RecalibrationResult:
    """Fit on the calibration split, transform the test split, and report ECE/Brier/AUROC on test only."""
    c = _checks.confidences(confidence, allow_empty=True)
    if np.asarray(correct).shape != c.shape:
        raise CalibError(
            f"confidence has {c.size} rows but correct has {np.asarray(correct).size}; one label per row"
        )
    cal = fit_on_split(calibrator, c, correct, split)
    if split.test.size == 0:
        raise CalibError(
            "the test split is empty; lower calibration_fraction so there are rows to evaluate on"
        )
    y_test = _checks.labels(np.asarray(correct)[split.test], "correct (test split)")
    before, after = c[split.test], cal.transform(c[split.test])
    return RecalibrationResult(
        cal, split, before, after, _test_metrics(before, y_test, n_bins), _test_metrics(after, y_test, n_bins)
    )
