"""Recalibration: token temperature scaling, post-hoc confidence calibrators, and a feedback loop.

- temperature.py: fit one T > 0 on token logits by NLL (optax L-BFGS); apply to logits/log-probs, or pass it to
  calib.decode.generate as a decoding temperature. retemper.py re-tempers saved generations without re-generating.
- posthoc.py / online.py: Platt, beta, isotonic, histogram binning, and an order-independent online histogram.
- splits.py: fit on the calibration split, evaluate on the test split, never the other way round.
- sweep.py: the accuracy/ECE/Brier/AUROC/Full-ECE table over temperatures, with bootstrap intervals.
- store.py / feedback.py: graded rows in local SQLite (WAL, transactions) and Recalibrator.update/transform.
- serialize.py: every calibrator to a small .json or .safetensors file and back, bit-identical.
Names are imported lazily, so the feedback loop and its CLI start without loading JAX.
Guide and runnable example: docs/recalibration.md.
"""

import importlib
from typing import Any

_EXPORTS = {
    "calib.recalibrate.base": ("Calibrator", "RecalibrationModel", "calibrator_kinds", "make_calibrator"),
    "calib.recalibrate.feedback": ("Recalibrator",),
    "calib.recalibrate.online": ("OnlineHistogramCalibrator",),
    "calib.recalibrate.posthoc": (
        "BetaCalibrator",
        "HistogramCalibrator",
        "IsotonicCalibrator",
        "PlattCalibrator",
    ),
    "calib.recalibrate.serialize": ("from_dict", "load_calibrator", "save_calibrator", "to_dict"),
    "calib.recalibrate.splits": (
        "RecalibrationResult",
        "Split",
        "fit_on_split",
        "recalibrate",
        "split_by_ids",
        "split_indices",
    ),
    "calib.recalibrate.retemper": ("temper_generations", "temper_token_logprobs"),
    "calib.recalibrate.store": ("FeedbackRow", "FeedbackStore", "db_path", "default_db_path"),
    "calib.recalibrate.sweep": (
        "SweepPoint",
        "SweepRow",
        "SweepTable",
        "posthoc_points",
        "temperature_sweep",
    ),
    "calib.recalibrate.temperature": (
        "TemperatureScaler",
        "fit_temperature",
        "full_ece_by_temperature",
        "temper_logits",
        "temper_logprobs",
        "token_logits",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'calib.recalibrate' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
