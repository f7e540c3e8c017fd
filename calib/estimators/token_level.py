"""Token-level baselines on the greedy answer's untempered token log-probs ℓ_1..ℓ_T.

An empty answer (T = 0) has nothing to score: its confidence is NaN (missing), not a guess.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_entropy
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator


def _per_answer(values: list[np.ndarray], fn: Callable[[np.ndarray], float]) -> np.ndarray:
    return np.array([fn(v) if len(v) else np.nan for v in values], dtype=np.float64)


def sequence_probability(logprobs: np.ndarray) -> float:
    """MSP: exp(Σ_t ℓ_t)."""
    return float(np.exp(np.sum(logprobs)))


def mean_token_probability(logprobs: np.ndarray) -> float:
    """(1/T) Σ_t exp(ℓ_t); known to be overconfident."""
    return float(np.mean(np.exp(logprobs)))


def inverse_perplexity(logprobs: np.ndarray) -> float:
    """Geometric mean token probability exp((1/T) Σ_t ℓ_t)."""
    return float(np.exp(np.mean(logprobs)))


def min_token_probability(logprobs: np.ndarray) -> float:
    return float(np.exp(np.min(logprobs)))


def first_token_probability(logprobs: np.ndarray) -> float:
    return float(np.exp(logprobs[0]))


class _ProbabilityEstimator:
    """Shared body of the estimators whose raw score already is a probability."""

    name = ""
    needs = frozenset({Need.GREEDY_TOKENS})
    fn = staticmethod(sequence_probability)

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        p = _per_answer(bundle.greedy_logprobs, type(self).fn)
        return EstimatorResult(confidence=np.clip(p, 0.0, 1.0), raw=p, higher_raw_means="confident")


@register_estimator
class MaxSequenceProbability(_ProbabilityEstimator):
    name = "msp"
    fn = staticmethod(sequence_probability)


@register_estimator
class MeanTokenProbability(_ProbabilityEstimator):
    name = "mean_token_prob"
    fn = staticmethod(mean_token_probability)


@register_estimator
class InversePerplexity(_ProbabilityEstimator):
    name = "inverse_perplexity"
    fn = staticmethod(inverse_perplexity)


@register_estimator
class MinTokenProbability(_ProbabilityEstimator):
    name = "min_token_prob"
    fn = staticmethod(min_token_probability)


@register_estimator
class FirstTokenProbability(_ProbabilityEstimator):
    name = "first_token_prob"
    fn = staticmethod(first_token_probability)


@register_estimator
class MeanTokenEntropy:
    """Mean over the answer's tokens of the full-vocabulary entropy H(p_t) (nats); confidence exp(-mean H)."""

    name = "mean_token_entropy"
    needs = frozenset({Need.GREEDY_TOKENS})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        h = _per_answer(bundle.greedy_entropies, lambda e: float(np.mean(e)))
        return EstimatorResult(confidence=confidence_from_entropy(h), raw=h, higher_raw_means="uncertain")
