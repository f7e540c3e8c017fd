"""Post-hoc calibrators of any estimator's confidence: Platt, beta, isotonic regression, histogram binning.

Each is fitted on the calibration split only (splits.py enforces this) and maps a confidence c in [0, 1] to a
recalibrated one. Transforms are plain numpy on the stored float64 state, so a reloaded calibrator gives
bit-identical outputs.
- Platt (1999): sigma(a * logit(c) + b), maximum likelihood (no target smoothing unless asked), so on
  already-calibrated data it is the identity a = 1, b = 0.
- Beta (Kull, Silva Filho, Flach 2017): sigma(a ln c - b ln(1 - c) + m) with a, b >= 0; the identity is a = b = 1,
  m = 0, and it can fix confidence that is both over- and under-confident in different ranges.
- Isotonic (Zadrozny & Elkan 2002): the monotone step fit of scikit-learn, interpolated linearly between its
  thresholds (what IsotonicRegression.predict does), clipped outside.
- Histogram binning (Zadrozny & Elkan 2001): the mean label of the calibration rows in each bin.
"""

from __future__ import annotations

import warnings
from typing import Any, Self

import numpy as np
from scipy import optimize
from sklearn.isotonic import IsotonicRegression

from calib.errors import CalibError
from calib.recalibrate import _checks
from calib.recalibrate.base import Calibrator

# Confidences are clipped to [EPS, 1 - EPS] before logs/logits so that c = 0 or 1 stays finite.
EPS = 1e-12
# A fit is flagged as degenerate when a slope exceeds MAX_SLOPE in size (a near-step function: the data were
# (nearly) separable) or a class has fewer than MIN_PER_CLASS calibration rows (too few to trust any shape).
MAX_SLOPE, MIN_PER_CLASS = 50.0, 20


def degenerate(kind: str, correct: np.ndarray, slopes: dict[str, float] | None = None) -> str | None:
    """Why a fitted calibrator is not to be trusted (one line), or None; see MAX_SLOPE and MIN_PER_CLASS."""
    reasons = [
        f"|{k}| = {abs(v):.3g} > {MAX_SLOPE:g}" for k, v in (slopes or {}).items() if abs(v) > MAX_SLOPE
    ]
    n_pos = int(np.sum(correct > 0.5))
    n_neg = len(correct) - n_pos
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        reasons.append(f"{n_pos} correct / {n_neg} wrong rows (< {MIN_PER_CLASS} per class)")
    return f"{kind} fit on {len(correct)} rows is degenerate: " + "; ".join(reasons) if reasons else None


def _flag(cal: Calibrator, correct: np.ndarray, slopes: dict[str, float] | None = None) -> None:
    """Set cal.degenerate (the reason or None) and warn in one line when the fit is degenerate."""
    cal.degenerate = degenerate(cal.kind, correct, slopes)
    if cal.degenerate:
        warnings.warn(cal.degenerate, RuntimeWarning, stacklevel=4)


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, EPS, 1 - EPS)
    return np.log(c) - np.log1p(-c)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))


def _two_classes(y: np.ndarray, kind: str) -> None:
    if y.min() == y.max():
        raise CalibError(
            f"{kind} needs both correct and wrong rows in the calibration split, got only {int(y[0])}s; "
            "add rows or use kind='isotonic' or 'histogram'"
        )


def fit_logistic(
    features: np.ndarray,
    y: np.ndarray,
    start: np.ndarray,
    bounds: list[tuple[float | None, float | None]] | None = None,
) -> np.ndarray:
    """Weights [d + 1] (last = intercept) of the maximum-likelihood logistic regression of y on features [n, d].

    Convex, so the start (the identity map, inside any bounds) only affects speed; y may be soft targets.
    """
    x = np.column_stack([features, np.ones(len(y))])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w
        value = np.mean(np.logaddexp(0.0, z) - y * z)
        grad = x.T @ (_sigmoid(z) - y) / len(y)
        return float(value), grad

    res = optimize.minimize(
        loss,
        np.asarray(start, np.float64),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10},
    )
    if not np.all(np.isfinite(res.x)):
        raise CalibError(
            "logistic calibration fit diverged; check that the confidences are not all identical"
        )
    return res.x


class PlattCalibrator(Calibrator):
    """sigma(a * logit(c) + b), fitted by maximum likelihood on the calibration split."""

    kind = "platt"

    def __init__(self, smooth_targets: bool = False, a: float | None = None, b: float | None = None):
        self.smooth_targets = bool(smooth_targets)
        self.a, self.b = a, b

    @property
    def fitted(self) -> bool:
        return self.a is not None

    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        _two_classes(correct, self.kind)
        y = correct
        if self.smooth_targets:  # Platt's (N+ + 1)/(N+ + 2) and 1/(N- + 2) targets against overfitting
            n_pos, n_neg = correct.sum(), len(correct) - correct.sum()
            y = np.where(correct == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        a, b = fit_logistic(_logit(confidence)[:, None], y, start=np.array([1.0, 0.0]))
        self.a, self.b = float(a), float(b)
        _flag(self, correct, {"a": self.a})

    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        return _sigmoid(self.a * _logit(confidence) + self.b)

    def settings(self) -> dict[str, Any]:
        return {"smooth_targets": self.smooth_targets}

    def params(self) -> dict[str, Any]:
        return {"smooth_targets": self.smooth_targets, "a": self.a, "b": self.b}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, {"smooth_targets", "a", "b"}, set())
        a, b = (_checks.field_number(params, k, allow_none=True) for k in ("a", "b"))
        if (a is None) != (b is None):
            raise CalibError("fields 'a' and 'b' must both be numbers (fitted) or both null (not fitted)")
        return cls(_checks.field_bool(params, "smooth_targets"), a, b)


class BetaCalibrator(Calibrator):
    """sigma(a ln c - b ln(1 - c) + m) with a, b >= 0 (Kull et al. 2017's three-parameter beta calibration)."""

    kind = "beta"

    def __init__(self, a: float | None = None, b: float | None = None, m: float | None = None):
        self.a, self.b, self.m = a, b, m

    @property
    def fitted(self) -> bool:
        return self.a is not None

    @staticmethod
    def _features(c: np.ndarray) -> np.ndarray:
        c = np.clip(c, EPS, 1 - EPS)
        return np.column_stack([np.log(c), -np.log1p(-c)])

    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        _two_classes(correct, self.kind)
        a, b, m = fit_logistic(
            self._features(confidence),
            correct,
            start=np.array([1.0, 1.0, 0.0]),
            bounds=[(0.0, None), (0.0, None), (None, None)],
        )
        self.a, self.b, self.m = float(a), float(b), float(m)
        _flag(self, correct, {"a": self.a, "b": self.b})

    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        return _sigmoid(self._features(confidence) @ np.array([self.a, self.b]) + self.m)

    def params(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "m": self.m}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, {"a", "b", "m"}, set())
        a, b = (_checks.field_number(params, k, allow_none=True, minimum=0.0) for k in ("a", "b"))
        m = _checks.field_number(params, "m", allow_none=True)
        if len({a is None, b is None, m is None}) > 1:
            raise CalibError("fields 'a', 'b' and 'm' must all be numbers (fitted) or all null (not fitted)")
        return cls(a, b, m)


class IsotonicCalibrator(Calibrator):
    """The non-decreasing least-squares fit of correctness on confidence (scikit-learn's PAV)."""

    kind = "isotonic"

    def __init__(self, x: np.ndarray | None = None, y: np.ndarray | None = None):
        self.x, self.y = x, y

    @property
    def fitted(self) -> bool:
        return self.x is not None

    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(confidence, correct)
        self.x = np.asarray(iso.X_thresholds_, np.float64)
        self.y = np.asarray(iso.y_thresholds_, np.float64)
        _flag(self, correct)

    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        return np.interp(confidence, self.x, self.y)

    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.x is None else {"x": self.x, "y": self.y}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, set(), {"x", "y"})
        if not arrays:
            return cls()
        x = _checks.field_array(arrays, "x", "float64", min_length=1, low=0.0, high=1.0)
        y = _checks.field_array(arrays, "y", "float64", length=x.shape[0], low=0.0, high=1.0)
        if (np.diff(x) < 0).any():
            raise CalibError("array 'x' is not in increasing order")
        return cls(x, y)


class HistogramCalibrator(Calibrator):
    """Mean correctness of the calibration rows in each bin; an empty bin keeps its midpoint.

    Bins follow calib's [e_b, e_{b+1}) convention with 1.0 in the last bin; "uniform" uses equal widths,
    "quantile" equal numbers of calibration rows (edges at quantiles, duplicates merged).
    """

    kind = "histogram"

    def __init__(self, n_bins: int = 15, binning: str = "quantile", edges=None, values=None):
        self.n_bins = _checks.positive_int(n_bins, "n_bins")
        if binning not in ("uniform", "quantile"):
            raise CalibError(f"binning: got {binning!r}; choose 'uniform' or 'quantile'")
        self.binning = binning
        self.edges, self.values = edges, values

    @property
    def fitted(self) -> bool:
        return self.edges is not None

    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        if self.binning == "uniform":
            edges = np.linspace(0.0, 1.0, self.n_bins + 1)
        else:
            inner = np.quantile(confidence, np.arange(1, self.n_bins) / self.n_bins)
            edges = np.unique(np.concatenate([[0.0], inner, [1.0]]))
        idx = self._bins(confidence, edges)
        count = np.bincount(idx, minlength=len(edges) - 1)
        hits = np.bincount(idx, weights=correct, minlength=len(edges) - 1)
        mid = (edges[:-1] + edges[1:]) / 2
        self.edges = edges
        self.values = np.where(count > 0, hits / np.maximum(count, 1), mid)
        _flag(self, correct)

    @staticmethod
    def _bins(c: np.ndarray, edges: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges[1:-1], c, side="right")

    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        return self.values[self._bins(confidence, self.edges)]

    def settings(self) -> dict[str, Any]:
        return {"n_bins": self.n_bins, "binning": self.binning}

    def params(self) -> dict[str, Any]:
        return self.settings()

    def arrays(self) -> dict[str, np.ndarray]:
        return {} if self.edges is None else {"edges": self.edges, "values": self.values}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, {"n_bins", "binning"}, {"edges", "values"})
        n_bins = _checks.field_int(params, "n_bins")
        binning = _checks.field_choice(params, "binning", ("uniform", "quantile"))
        if not arrays:
            return cls(n_bins, binning)
        edges = _checks.field_array(arrays, "edges", "float64", min_length=2, low=0.0, high=1.0)
        if edges.shape[0] > n_bins + 1 or edges[0] != 0.0 or edges[-1] != 1.0 or (np.diff(edges) <= 0).any():
            raise CalibError(
                f"array 'edges' must rise from 0 to 1 in at most n_bins = {n_bins} steps; got {edges.shape[0]} edges"
            )
        values = _checks.field_array(
            arrays, "values", "float64", length=edges.shape[0] - 1, low=0.0, high=1.0
        )
        return cls(n_bins, binning, edges=edges, values=values)
