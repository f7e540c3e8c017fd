"""Confidence estimators: a typed bundle of shared statistics in, a confidence in [0, 1] per question out.

    from calib.estimators import Bundle, get_estimator, list_estimators, check_needs
    estimators = [get_estimator(name) for name in ("msp", "semantic_entropy", "multi_hypothesis")]
    check_needs(estimators, bundle.available())       # before any expensive work: one line naming what is missing
    results = {e.name: e(bundle) for e in estimators}

How to add one: docs/estimators.md.
"""

from __future__ import annotations

from calib.estimators import (  # noqa: F401  (importing registers the built-ins)
    attention,
    consistency,
    distribution,
    eigenscore,
    graph,
    information,
    kle,
    lexical,
    multi_hypothesis,
    reflexive,
    revision,
    sar,
    semantic_entropy,
    token_level,
)
from calib.estimators.base import (
    Estimator,
    EstimatorResult,
    Need,
    available_needs,
    check_needs,
    confidence_from_count,
    confidence_from_entropy,
    confidence_from_neg_log,
)
from calib.estimators.bundle import Bundle
from calib.estimators.registry import ENTRY_POINT_GROUP, get_estimator, list_estimators, register_estimator

__all__ = [
    "ENTRY_POINT_GROUP",
    "Bundle",
    "Estimator",
    "EstimatorResult",
    "Need",
    "available_needs",
    "check_needs",
    "confidence_from_count",
    "confidence_from_entropy",
    "confidence_from_neg_log",
    "get_estimator",
    "list_estimators",
    "register_estimator",
]

from calib.tuning import estimators as _tuned  # noqa: F401  (calibration_tuned, probe: issue 22)
