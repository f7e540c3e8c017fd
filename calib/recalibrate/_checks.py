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


# ---- fields of a saved calibrator state (serialize.py adds the file name and the fix) ------------------------------


def field_keys(
    params: dict[str, Any], arrays: dict[str, np.ndarray], params_needed: set[str], arrays_allowed: set[str]
) -> None:
    """Exactly the params a kind writes, and no arrays it does not write."""
    missing = sorted(params_needed - set(params))
    if missing:
        raise CalibError(f"field {missing[0]!r} is missing")
    unknown = sorted(set(map(str, params)) - params_needed) + sorted(set(map(str, arrays)) - arrays_allowed)
    if unknown:
        raise CalibError(f"field {unknown[0][:40]!r} is unknown")


def _shown(value: Any) -> str:
    return f"{str(value)[:40]!r} ({type(value).__name__})"


def field_number(
    params: dict[str, Any],
    name: str,
    allow_none: bool = False,
    minimum: float | None = None,
    above: bool = False,
) -> float | None:
    """A finite float param (ints accepted, bools and strings not); None only where the kind allows it."""
    value = params[name]
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CalibError(f"field {name!r} is {_shown(value)}; expected a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise CalibError(f"field {name!r} is {value!r}; expected a finite number")
    if minimum is not None and (number <= minimum if above else number < minimum):
        raise CalibError(
            f"field {name!r} is {number!r}; expected a number {'>' if above else '>='} {minimum:g}"
        )
    return number


def field_int(params: dict[str, Any], name: str, minimum: int = 1) -> int:
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CalibError(f"field {name!r} is {_shown(value)}; expected an integer >= {minimum}")
    return value


def field_bool(params: dict[str, Any], name: str) -> bool:
    value = params[name]
    if not isinstance(value, bool):
        raise CalibError(f"field {name!r} is {_shown(value)}; expected true or false")
    return value


def field_choice(params: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = params[name]
    if not isinstance(value, str) or value not in choices:
        raise CalibError(f"field {name!r} is {_shown(value)}; expected one of {', '.join(choices)}")
    return value


def field_array(
    arrays: dict[str, np.ndarray],
    name: str,
    dtype: str,
    length: int | None = None,
    min_length: int = 0,
    low: float | None = None,
    high: float | None = None,
) -> np.ndarray:
    """A 1-D array of exactly `dtype`, finite, of the given length and within [low, high]."""
    if name not in arrays:
        raise CalibError(f"array {name!r} is missing")
    arr = arrays[name]
    if not isinstance(arr, np.ndarray) or arr.dtype.name != dtype:
        raise CalibError(
            f"array {name!r} has dtype {getattr(arr, 'dtype', type(arr).__name__)}; expected {dtype}"
        )
    if arr.ndim != 1 or (length is not None and arr.shape[0] != length) or arr.shape[0] < min_length:
        expected = f"({length},)" if length is not None else f"1-D with at least {min_length} values"
        raise CalibError(f"array {name!r} has shape {arr.shape}; expected {expected}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise CalibError(f"array {name!r} has NaN or infinite values")
    if (low is not None and (arr < low).any()) or (high is not None and (arr > high).any()):
        raise CalibError(f"array {name!r} has values outside [{low}, {high}]")
    return arr
