"""SAR, shifting attention to relevance (Duan et al. 2023), following LM-Polygraph's TokenSAR / SentenceSAR / SAR.

- token relevance R_t = 1 - sim(x + s, x + s without token t) (the bundle's semantic backend gives `sim`),
  normalised R̃_t = R_t / Σ R_t (uniform when all are 0); tokenSAR(s) = Σ_t -ℓ_t R̃_t, a relevance-weighted NLL.
- sentence relevance with g = ½(S + Sᵀ) over the samples and temperature τ = 0.001:
  E(s_j) = -log(p(s_j) + Σ_{k≠j} g(s_j, s_k) p(s_k) / τ), score = mean_j E(s_j);
  SentenceSAR uses p(s) = exp(Σ_t ℓ_t), SAR uses p(s) = exp(-tokenSAR(s)).
Confidence maps: tokenSAR ≥ 0 → exp(-tokenSAR), a relevance-weighted geometric-mean probability; E (any sign) →
sigmoid(-E) = x / (1 + x) of the relevance mass x.
"""

from __future__ import annotations

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_neg_log
from calib.estimators.bundle import Bundle
from calib.estimators.graph import symmetric
from calib.estimators.registry import register_estimator

TEMPERATURE = 0.001


def token_sar(logprobs: np.ndarray, relevance: np.ndarray) -> float:
    """Σ_t -ℓ_t R̃_t; NaN for an empty answer."""
    if len(logprobs) == 0:
        return float("nan")
    relevance = np.clip(np.asarray(relevance, dtype=np.float64), 0.0, None)
    total = relevance.sum()
    weights = relevance / total if total > 0 else np.full(len(relevance), 1.0 / len(relevance))
    return float(np.sum(-np.asarray(logprobs) * weights))


def sentence_sar(
    probabilities: np.ndarray, similarity: np.ndarray, temperature: float = TEMPERATURE
) -> float:
    """mean_j -log(p_j + Σ_{k≠j} g_jk p_k / τ) for one question; samples with NaN probability count as 0."""
    p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64), nan=0.0)
    if not np.any(p > 0):
        return float("nan")
    g = np.asarray(similarity, dtype=np.float64) * (1.0 - np.eye(len(p)))
    with np.errstate(divide="ignore"):
        return float(np.mean(-np.log(p + g @ p / temperature)))


@register_estimator
class TokenSAR:
    """tokenSAR of the greedy answer."""

    name = "token_sar"
    needs = frozenset({Need.GREEDY_TOKENS, Need.DECODE})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        score = np.array(
            [token_sar(lp, r) for lp, r in zip(bundle.greedy_logprobs, bundle.greedy_token_relevance)],
            dtype=np.float64,
        )
        return EstimatorResult(confidence=np.exp(-score), raw=score, higher_raw_means="uncertain")


@register_estimator
class SentenceSAR:
    name = "sentence_sar"
    needs = frozenset({Need.SAMPLES, Need.SAMPLE_TOKENS, Need.SEMANTIC})

    def __init__(self, temperature: float = TEMPERATURE):
        self.temperature = temperature

    def _probabilities(self, bundle: Bundle, i: int) -> np.ndarray:
        return np.array([np.exp(np.sum(lp)) if len(lp) else np.nan for lp in bundle.sample_logprobs[i]])

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        g = symmetric(bundle.sample_similarity).astype(np.float64)
        score = np.array(
            [sentence_sar(self._probabilities(bundle, i), g[i], self.temperature) for i in range(len(g))],
            dtype=np.float64,
        )
        return EstimatorResult(
            confidence=confidence_from_neg_log(score), raw=score, higher_raw_means="uncertain"
        )


@register_estimator
class SAR(SentenceSAR):
    name = "sar"
    needs = frozenset({Need.SAMPLES, Need.SAMPLE_TOKENS, Need.SEMANTIC, Need.DECODE})

    def _probabilities(self, bundle: Bundle, i: int) -> np.ndarray:
        pairs = zip(bundle.sample_logprobs[i], bundle.sample_token_relevance[i])
        return np.exp(-np.array([token_sar(lp, r) for lp, r in pairs], dtype=np.float64))
