"""What every recalibrator shares: a kind name, a fit, a transform, and a state that serialises losslessly.

A calibrator's state is split into `params` (JSON scalars: settings and fitted scalars) and `arrays` (float64 or
int64 numpy arrays). serialize.py writes both to JSON or safetensors; `from_parts` rebuilds an object whose
outputs are bit-identical to the original's.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import numpy as np

from calib.errors import CalibError
from calib.recalibrate import _checks

_REGISTRY: dict[str, type[RecalibrationModel]] = {}


class RecalibrationModel(ABC):
    """Anything with a serialisable fitted state (temperature scalers and confidence calibrators)."""

    kind: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """Settings and fitted scalars, JSON-serialisable (str, int, float, bool, None)."""

    def arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays (float64/int64); empty for calibrators described by scalars alone."""
        return {}

    @classmethod
    @abstractmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        """Rebuild from params() and arrays() (as written by serialize.py)."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        a, b = self.arrays(), other.arrays()
        return (
            self.params() == other.params()
            and a.keys() == b.keys()
            and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
        )

    __hash__ = None  # mutable (fit changes state)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({shown})"


class Calibrator(RecalibrationModel):
    """Maps a confidence in [0, 1] to a recalibrated confidence in [0, 1], fitted on labelled rows."""

    @property
    @abstractmethod
    def fitted(self) -> bool:
        """Whether fit (or an update) has given this calibrator a state."""

    def settings(self) -> dict[str, Any]:
        """The constructor settings (not fitted values): blank() builds an unfitted twin from them."""
        return {}

    def blank(self) -> Self:
        """A fresh, unfitted calibrator of the same kind and settings."""
        return type(self)(**self.settings())

    @abstractmethod
    def _fit(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Fit on checked float64 arrays of equal non-zero length."""

    @abstractmethod
    def _transform(self, confidence: np.ndarray) -> np.ndarray:
        """Recalibrate checked float64 confidences."""

    def fit(self, confidence: Any, correct: Any) -> Self:
        """Fit on the calibration split only (see splits.py); returns self."""
        c, y = _checks.pair(confidence, correct)
        self._fit(c, y)
        return self

    def transform(self, confidence: Any) -> np.ndarray:
        """Recalibrated confidences (float64, same length, in [0, 1])."""
        if not self.fitted:
            raise CalibError(f"{self.kind} calibrator is not fitted; call fit(confidence, correct) first")
        c = _checks.confidences(confidence, allow_empty=True)
        return np.clip(self._transform(c), 0.0, 1.0)

    def fit_transform(self, confidence: Any, correct: Any) -> np.ndarray:
        """Fit, then transform the same rows (only for calibration rows; never for test rows)."""
        return self.fit(confidence, correct).transform(confidence)


# Built-in kinds and the module that registers each, imported on first use (keeps `calib feedback` free of jax).
_BUILTIN = {
    "temperature": "calib.recalibrate.temperature",
    "platt": "calib.recalibrate.posthoc",
    "beta": "calib.recalibrate.posthoc",
    "isotonic": "calib.recalibrate.posthoc",
    "histogram": "calib.recalibrate.posthoc",
    "online_histogram": "calib.recalibrate.online",
}


def calibrator_kinds() -> list[str]:
    """Names of every registered recalibration kind (built-in and subclasses defined elsewhere)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def model_class(kind: str) -> type[RecalibrationModel]:
    """The class registered under `kind`."""
    if kind not in _REGISTRY and kind in _BUILTIN:
        importlib.import_module(_BUILTIN[kind])
    if kind not in _REGISTRY:
        raise CalibError(f"unknown calibrator kind {kind!r}; choose one of {', '.join(calibrator_kinds())}")
    return _REGISTRY[kind]


def make_calibrator(kind: str, **settings: Any) -> Calibrator:
    """A fresh, unfitted confidence calibrator of the named kind (e.g. "platt", "isotonic")."""
    cls = model_class(kind)
    if not issubclass(cls, Calibrator):
        raise CalibError(f"{kind!r} is not a confidence calibrator; it rescales logits, not confidences")
    try:
        return cls(**settings)
    except TypeError as err:
        raise CalibError(f"calibrator {kind!r}: bad settings {settings} ({err})") from err
