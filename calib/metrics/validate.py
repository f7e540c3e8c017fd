"""Input checks shared by the metrics: bad arrays fail early with a one-line CalibError, never deep inside jit.

Inputs that are JAX tracers (a metric called inside `jax.vmap`/`jax.jit`, e.g. by `bootstrap_ci`) cannot be
inspected, so the public metrics skip these checks for them and run the pure `jax.numpy` core directly.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from calib.errors import CalibError

# Probabilities computed in float32 may overshoot [0, 1] by a rounding error; such values are clipped, larger
# excursions are user errors.
RANGE_TOLERANCE = 1e-6
# Rows of multi-class probabilities must sum to 1 within this tolerance.
ROW_SUM_TOLERANCE = 1e-3


def is_traced(*arrays: Any) -> bool:
    """True when any argument is a JAX tracer (the caller is inside jit/vmap and values are not concrete)."""
    return any(isinstance(a, jax.core.Tracer) for a in arrays)


def _as_numeric(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists, objects numpy cannot read
        raise CalibError(
            f"{name}: cannot be read as an array ({err}); pass a flat list or array of numbers"
        ) from err
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CalibError(f"{name}: has dtype {arr.dtype}; pass numbers (float, int or bool)")
    return arr


def _check_shape(arr: np.ndarray, name: str, ndim: int) -> None:
    if arr.ndim != ndim:
        want = "a 1-D array [n]" if ndim == 1 else "a 2-D array [n, classes]"
        raise CalibError(f"{name}: has shape {arr.shape}; pass {want}")
    if arr.shape[0] == 0:
        raise CalibError(f"{name}: is empty; metrics need at least one prediction")
    if ndim == 2 and arr.shape[1] < 2:
        raise CalibError(f"{name}: has {arr.shape[1]} class column(s); pass at least 2 classes")


def _check_finite(arr: np.ndarray, name: str) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise CalibError(
            f"{name}: has {bad} NaN or infinite value(s); drop or impute them before computing metrics"
        )


def unit_interval(x: Any, name: str = "confidence", ndim: int = 1) -> np.ndarray:
    """Finite values in [0, 1] (rounding overshoot up to 1e-6 clipped), as float32 of the given rank."""
    arr = _as_numeric(x, name)
    _check_shape(arr, name, ndim)
    _check_finite(arr, name)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        bad = lo if lo < -RANGE_TOLERANCE else hi
        raise CalibError(
            f"{name}: value {bad:g} is outside [0, 1]; pass probabilities (higher = more confident)"
        )
    if lo < 0.0 or hi > 1.0:
        arr = np.clip(arr, 0.0, 1.0)
    return arr.astype(np.float32, copy=False)


def finite_vector(x: Any, name: str) -> np.ndarray:
    """A non-empty 1-D array of finite numbers (any range), as float32."""
    arr = _as_numeric(x, name)
    _check_shape(arr, name, 1)
    _check_finite(arr, name)
    return arr.astype(np.float32)


def binary(x: Any, name: str = "correct") -> np.ndarray:
    """Labels that are exactly 0 or 1 (bool or numbers), as float32."""
    arr = _as_numeric(x, name)
    _check_shape(arr, name, 1)
    _check_finite(arr, name)
    if not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))][0]
        raise CalibError(f"{name}: value {bad:g} is not 0 or 1; pass correctness as bool or 0/1")
    return arr.astype(np.float32)


def class_labels(x: Any, n_classes: int, name: str = "labels") -> np.ndarray:
    """Integer class indices in [0, n_classes), as int32."""
    arr = _as_numeric(x, name)
    _check_shape(arr, name, 1)
    _check_finite(arr, name)
    if not np.all(arr == np.round(arr)):
        raise CalibError(f"{name}: has non-integer values; pass class indices 0..{n_classes - 1}")
    if arr.min() < 0 or arr.max() >= n_classes:
        bad = arr.min() if arr.min() < 0 else arr.max()
        raise CalibError(
            f"{name}: class {bad:g} is outside 0..{n_classes - 1}; labels must index the prob columns"
        )
    return arr.astype(np.int32)


def prob_rows(x: Any, name: str = "probs") -> np.ndarray:
    """Multi-class probabilities [n, K] in [0, 1] whose rows sum to 1 (within 1e-3), as float32."""
    arr = unit_interval(x, name, ndim=2)
    sums = arr.astype(np.float64).sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > ROW_SUM_TOLERANCE:
        raise CalibError(
            f"{name}: row {worst} sums to {sums[worst]:.6g}, not 1; pass normalised probabilities"
        )
    return arr


def same_length(*named: tuple[str, np.ndarray]) -> None:
    """All arrays have the same number of rows."""
    lengths = {name: len(arr) for name, arr in named}
    if len(set(lengths.values())) > 1:
        desc = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise CalibError(f"mismatched lengths ({desc}); pass one value per prediction in each array")


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer setting such as n_bins (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise CalibError(f"{name}: got {value!r}; pass an integer >= {minimum}")
    return int(value)


def fraction(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """A float setting in (0, 1] (or [0, 1] with allow_zero), such as a coverage or rejection fraction."""
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    low_ok = ok and (value >= 0 if allow_zero else value > 0)
    if not (ok and low_ok and value <= 1 and np.isfinite(value)):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise CalibError(f"{name}: got {value!r}; pass a number in {interval}")
    return float(value)


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    """A string option such as binning or norm."""
    if value not in options:
        raise CalibError(f"{name}: got {value!r}; pass one of {', '.join(repr(o) for o in options)}")
    return value


def pair(
    confidence: Any, correct: Any, *, soft: bool = False, second: str = "correct"
) -> tuple[np.ndarray, ...]:
    """The common (confidence [n] in [0, 1], correctness [n]) pair; soft=True allows any quality in [0, 1]."""
    c = unit_interval(confidence, "confidence")
    y = unit_interval(correct, second) if soft else binary(correct, second)
    same_length(("confidence", c), (second, y))
    return c, y
