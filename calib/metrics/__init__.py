"""Calibration, discrimination and selective-prediction metrics in JAX, with bootstrap intervals.

Every metric accepts numpy or JAX arrays (lists too), validates concrete inputs (one-line CalibError) and returns
a Python float; called on traced arrays (inside jit/vmap, e.g. by bootstrap_ci) it skips validation and returns
a JAX scalar. Definitions, bin conventions and the libraries each metric matches: docs/metrics.md.
"""

from calib.metrics.bootstrap import BootstrapResult, bootstrap_ci, bootstrap_metrics, paired_bootstrap
from calib.metrics.calibration import (
    average_bin_ce,
    debiased_l2_ce,
    ece,
    mce,
    reliability_bins,
    rmsce,
)
from calib.metrics.full_ece import full_ece, full_ece_accumulate, full_ece_from_bins
from calib.metrics.multiclass import ace, classwise_ece
from calib.metrics.scoring import brier, brier_skill, nll
from calib.metrics.selective import (
    auarc,
    auprc,
    aurc,
    auroc,
    prr,
    selective_accuracy,
    spearman,
)
from calib.metrics.smooth import smece

__all__ = [
    "BootstrapResult",
    "ace",
    "auarc",
    "auprc",
    "aurc",
    "auroc",
    "average_bin_ce",
    "bootstrap_ci",
    "bootstrap_metrics",
    "brier",
    "brier_skill",
    "classwise_ece",
    "debiased_l2_ce",
    "ece",
    "full_ece",
    "full_ece_accumulate",
    "full_ece_from_bins",
    "mce",
    "nll",
    "paired_bootstrap",
    "prr",
    "reliability_bins",
    "rmsce",
    "selective_accuracy",
    "smece",
    "spearman",
]
