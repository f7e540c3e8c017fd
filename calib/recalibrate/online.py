"""An online calibrator whose state is integer counts, so incremental updates equal a batch refit exactly.

The feedback loop folds rows in as they arrive, from several processes, in whatever order the database commits
them. Integer per-bin counts are order-independent, so the state after any sequence of updates is identical to a
fit on the same rows at once. The map itself is derived from the counts: each bin's correctness rate is smoothed
toward the bin's midpoint with `prior_strength` pseudo-rows (so a bin with few rows stays near the identity), made
non-decreasing by weighted isotonic regression over the bins, and interpolated linearly between bin midpoints.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from sklearn.isotonic import isotonic_regression

from calib.errors import CalibError
from calib.recalibrate import _checks
from calib.recalibrate.base import Calibrator


class OnlineHistogramCalibrator(Calibrator):
    """Per-bin counts of (rows, correct rows) over M equal-width bins; bin b holds b/M <= c < (b+1)/M, 1.0 in M-1."""

    kind = "online_histogram"

    def __init__(
        self,
        n_bins: int = 20,
        prior_strength: float = 2.0,
        counts: np.ndarray | None = None,
        hits: np.ndarray | None = None,
    ):
        self.n_bins = _checks.positive_int(n_bins, "n_bins")
        try:
            strength = float(prior_strength)
        except (TypeError, ValueError):
            strength = float("nan")
        if not np.isfinite(strength) or strength <= 0:
            raise CalibError(
                f"prior_strength: got {prior_strength!r}; pass a number of pseudo-rows > 0 (e.g. 2)"
            )
        self.prior_strength = strength
        zeros = np.zeros(self.n_bins, np.int64)
        self.counts = zeros.copy() if counts is None else np.asarray(counts, np.int64).copy()
        self.hits = zeros.copy() if hits is None else np.asarray(hits, np.int64).copy()
        if self.counts.shape != (self.n_bins,) or self.hits.shape != (self.n_bins,):
            raise CalibError(f"online calibrator state has the wrong shape; expected {self.n_bins} bins")
        if (self.hits < 0).any() or (self.hits > self.counts).any():
            raise CalibError(
                "online calibrator state is inconsistent (hits outside 0..count); refit it from the rows"
            )

    @property
    def fitted(self) -> bool:
        return True  # with no rows the prior alone gives (nearly) the identity map

    @property
    def n_rows(self) -> int:
        return int(self.counts.sum())

    def bin_index(self, confidence: np.ndarray) -> np.ndarray:
        return np.minimum(np.floor(confidence * self.n_bins).astype(np.int64), self.n_bins - 1)

    def partial_fit(self, confidence: Any, correct: Any) -> Self:
        """Fold more labelled rows into the counts (no rows is a no-op)."""
        c = _checks.confidences(confidence, allow_empty=True)
        y = _checks.labels(correct, allow_empty=True)
        if c.shape != y.shape:
            raise CalibError(
                f"confidence has {c.shape[0]} rows but correct has {y.shape[0]}; pass one label per row"
            )
        idx = self.bin_index(c)
        self.counts += np.bincount(idx, minlength=self.n_bins).astype(np.int64)
        self.hits += np.bincount(idx[y == 1], minlength=self.n_bins).astype(np.int64)
        return self

    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        self.counts[:] = 0
        self.hits[:] = 0
        self.partial_fit(confidence, correct)

    def merge(self, other: OnlineHistogramCalibrator) -> Self:
        """Add another calibrator's counts (same bins), e.g. from a second store."""
        if not isinstance(other, OnlineHistogramCalibrator) or other.n_bins != self.n_bins:
            raise CalibError("can only merge online_histogram calibrators with the same n_bins")
        self.counts += other.counts
        self.hits += other.hits
        return self

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(bin midpoints, calibrated value at each midpoint): smoothed bin rates made non-decreasing."""
        mids = (np.arange(self.n_bins) + 0.5) / self.n_bins
        weight = self.counts + self.prior_strength
        rate = (self.hits + self.prior_strength * mids) / weight
        return mids, np.asarray(
            isotonic_regression(rate, sample_weight=weight, y_min=0.0, y_max=1.0), np.float64
        )

    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        mids, values = self.curve()
        return np.interp(confidence, mids, values)

    def settings(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "prior_strength": self.prior_strength}

    def params(self) -> dict[str, Any]:
        return self.settings()

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "hits": self.hits}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, {"n_bins", "prior_strength"}, {"counts", "hits"})
        n_bins = _checks.field_int(params, "n_bins")
        strength = _checks.field_number(params, "prior_strength", minimum=0.0, above=True)
        counts = _checks.field_array(arrays, "counts", "int64", length=n_bins, low=0)
        hits = _checks.field_array(arrays, "hits", "int64", length=n_bins, low=0)
        if (hits > counts).any():
            raise CalibError("array 'hits' exceeds 'counts' in some bin")
        return cls(n_bins, strength, counts, hits)
