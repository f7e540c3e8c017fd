"""Estimators that read the whole next-token distribution at each greedy-answer token, not only the chosen token.

Each reads one column of `bundle.greedy_distribution` ([T, 5] per answer, computed in one teacher-forced pass over the
greedy answer: `calib.decode.sampling.distribution_statistics`, whose docstring gives the per-token formulas) and
averages it over the answer's tokens, as LM-Polygraph 0.7.0 does. An empty answer is NaN (missing).

Per-token defaults are LM-Polygraph's: Rényi α = 0.5 and Fisher–Rao at temperature T = 2; self-certainty at T = 1;
boosted probability with `boostedprob`'s "difference_jump" (p_jump = 0.3, ε = 0.005). Other settings:
`calib.decode.score_distribution(lm, prompts, token_ids, alpha=..., temperature=...)`.
"""

from __future__ import annotations

import numpy as np

from calib.decode.sampling import DISTRIBUTION_COLUMNS
from calib.decode.score import score_distribution
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator


def column_mean(stats: list[np.ndarray], column: str) -> np.ndarray:
    """(1/T) Σ_t of one DISTRIBUTION_COLUMNS column per answer; NaN for an empty answer."""
    c = DISTRIBUTION_COLUMNS.index(column)
    return np.array([s[:, c].mean() if len(s) else np.nan for s in stats], dtype=np.float64)


def log_vocab(stats: list[np.ndarray]) -> np.ndarray:
    return np.array([s[0, -1] if len(s) else np.nan for s in stats], dtype=np.float64)


def renyi_negentropy(stats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(1/T) Σ_t D_α(p_t^(T) ‖ U), the Rényi divergence from the uniform distribution U over the V tokens,
    D_α(p ‖ U) = log(Σ_v p_v^α) / (α − 1) + log V = log V − H_α(p) (Darrin et al. 2023, "Rainproof", via Todd).

    Returns (D, confidence exp(D − log V) = exp(−mean_t H_α)): a point mass gives 1, the uniform 1/V.
    """
    d = column_mean(stats, "renyi_divergence")
    return d, np.clip(np.exp(d - log_vocab(stats)), 0.0, 1.0)


def fisher_rao_distance(stats: list[np.ndarray]) -> np.ndarray:
    """(1/T) Σ_t (2/π) arccos(Σ_v √(p_t,v^(T) · 1/V)), the Fisher–Rao distance from the uniform distribution,
    scaled to [0, 1] (Darrin et al. 2023; LM-Polygraph's FisherRao). Far from uniform reads as confident."""
    return column_mean(stats, "fisher_rao")


def self_certainty(stats: list[np.ndarray]) -> np.ndarray:
    """(1/T) Σ_t KL(U ‖ p_t) = (1/T) Σ_t [−(1/V) Σ_v log p_t,v − log V] (Kang et al. 2025, "Scalable Best-of-N
    Selection for Large Language Models via Self-Certainty"); higher = more certain."""
    return column_mean(stats, "self_certainty")


def boosted_probability(stats: list[np.ndarray]) -> np.ndarray:
    """(1/T) Σ_t b_t, b_t the chosen token's probability boosted to the mass of the dominant tokens when it is one
    of them (Dinh & Niehues 2025, "Boosting probability for quality estimation", EMNLP; LM-Polygraph's
    BoostedProbSequence)."""
    return column_mean(stats, "boosted_prob")


class _DistributionEstimator:
    name = ""
    needs = frozenset({Need.GREEDY_TOKENS, Need.DISTRIBUTION})
    # what computes the per-token statistics the bundle hands over: named here so an estimate's artifact key
    # (calib.fingerprint follows names) changes when that code does
    computed_by = staticmethod(score_distribution)


@register_estimator
class RenyiNegentropy(_DistributionEstimator):
    name = "renyi_negentropy"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        raw, confidence = renyi_negentropy(bundle.greedy_distribution)
        return EstimatorResult(confidence=confidence, raw=raw, higher_raw_means="confident")


@register_estimator
class FisherRao(_DistributionEstimator):
    name = "fisher_rao"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        raw = fisher_rao_distance(bundle.greedy_distribution)
        return EstimatorResult(confidence=np.clip(raw, 0.0, 1.0), raw=raw, higher_raw_means="confident")


@register_estimator
class SelfCertainty(_DistributionEstimator):
    name = "self_certainty"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        """Confidence 1 − exp(−KL): 0 for a uniform distribution, → 1 as it concentrates."""
        raw = self_certainty(bundle.greedy_distribution)
        return EstimatorResult(
            confidence=-np.expm1(-np.maximum(raw, 0.0)), raw=raw, higher_raw_means="confident"
        )


@register_estimator
class BoostedProbSequence(_DistributionEstimator):
    name = "boosted_prob_sequence"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        raw = boosted_probability(bundle.greedy_distribution)
        return EstimatorResult(confidence=np.clip(raw, 0.0, 1.0), raw=raw, higher_raw_means="confident")
