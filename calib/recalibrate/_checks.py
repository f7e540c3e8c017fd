"""Input checks for the recalibrators: bad data fails early with a one-line CalibError naming the fix.

Calibrators keep float64 internally (fitted parameters must round-trip exactly through JSON), so these checks
return float64 arrays rather than the float32 the metrics use.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calib.errors import CalibError

# Confidences computed in float32 may overshoot [0, 1] by a rounding error; such values are clipped.
RANGE_TOLERANCE = 1e-6


def _numeric(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists, objects numpy cannot read
        raise CalibError(f"{name}: cannot be read as an array ({err}); pass a flat list of numbers") from err
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CalibError(f"{name}: has dtype {arr.dtype}; pass numbers (float, int or bool)")
    return arr.astype(np.float64)


def vector(x: Any, name: str, allow_empty: bool = False) -> np.ndarray:
    """A finite 1-D float64 array."""
    arr = _numeric(x, name)
    if arr.ndim != 1:
        raise CalibError(f"{name}: has shape {arr.shape}; pass a flat 1-D list of numbers")
    if arr.size == 0 and not allow_empty:
        raise CalibError(f"{name}: is empty; pass at least one value")
    if not np.isfinite(arr).all():
        raise CalibError(f"{name}: has NaN or infinite values; drop or repair those rows first")
    return arr


def confidences(x: Any, name: str = "confidence", allow_empty: bool = False) -> np.ndarray:
    """Confidences in [0, 1] as float64; float32 rounding overshoot is clipped."""
    arr = vector(x, name, allow_empty)
    if arr.size and (arr.min() < -RANGE_TOLERANCE or arr.max() > 1 + RANGE_TOLERANCE):
        bad = arr[(arr < -RANGE_TOLERANCE) | (arr > 1 + RANGE_TOLERANCE)][0]
        raise CalibError(
            f"{name}: value {bad:g} is outside [0, 1]; map scores to confidences in [0, 1] first"
        )
    return np.clip(arr, 0.0, 1.0)


def labels(x: Any, name: str = "correct", allow_empty: bool = False) -> np.ndarray:
    """Correctness labels that are exactly 0 or 1, as float64."""
    arr = _numeric(x, name)
    if arr.ndim != 1:
        raise CalibError(f"{name}: has shape {arr.shape}; pass a flat 1-D list of 0/1 labels")
    if arr.size == 0 and not allow_empty:
        raise CalibError(f"{name}: is empty; pass at least one 0/1 label")
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise CalibError(f"{name}: value {arr[bad][0]:g} is not 0 or 1; pass correctness as bool or 0/1")
    return arr


def pair(confidence: Any, correct: Any, what: str = "calibration split") -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of equal, non-zero length; an empty split is a user error naming the split."""
    c = confidences(confidence, allow_empty=True)
    y = labels(correct, allow_empty=True)
    if c.shape[0] != y.shape[0]:
        raise CalibError(
            f"confidence has {c.shape[0]} rows but correct has {y.shape[0]}; pass one label per row"
        )
    if c.shape[0] == 0:
        raise CalibError(f"the {what} is empty; give the calibrator at least one labelled row to fit on")
    return c, y


def temperature(value: Any, name: str = "temperature") -> float:
    """A finite temperature > 0."""
    try:
        t = float(value)
    except (TypeError, ValueError) as err:
        raise CalibError(f"{name}: {value!r} is not a number; pass a temperature > 0 such as 1.0") from err
    if isinstance(value, bool) or not math.isfinite(t) or t <= 0:
        raise CalibError(
            f"{name}: got {value!r}; a temperature must be a finite number > 0 (1.0 = unchanged)"
        )
    return t


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """An int >= minimum (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise CalibError(f"{name}: got {value!r}; pass an integer >= {minimum}")
    return int(value)
