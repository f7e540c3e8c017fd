"""EigenScore (Chen et al. 2024, "INSIDE: LLMs' internal states retain the power of hallucination detection").

The K samples' sentence embeddings z_1..z_K ∈ R^D (rows of Z) are centred over their D features, J_d = I_d - (1/d) 11ᵀ,
and EigenScore = (1/K) Σ_k log λ_k of Σ = Z J_d Zᵀ + α I_K, α = 1e-3: the mean log-eigenvalue, i.e.
(1/K) log det Σ, the log-volume the answers span in embedding space. Higher = more spread = less confident;
confidence sigmoid(-EigenScore).

Differences: the paper and LM-Polygraph 0.7.0 embed each sample by the middle layer's state at its last token; calib
records the final hidden state (after the last layer) that produced the last answer token's distribution, so this
is EigenScore on final-layer embeddings. Needs the *samples'* hidden states (the decode loop records them for
greedy answers and samples alike when hidden states are requested).
"""

from __future__ import annotations

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need, confidence_from_neg_log
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator

ALPHA = 1e-3


def eigenscore(embeddings: np.ndarray, alpha: float = ALPHA) -> float:
    """(1/K) Σ_k log λ_k(Z J_d Zᵀ + α I) for Z the [K, D] embeddings."""
    z = np.asarray(embeddings, dtype=np.float64)
    d = z.shape[-1]
    centring = np.eye(d) - np.full((d, d), 1.0 / d)
    covariance = z @ centring @ z.T + alpha * np.eye(len(z))
    eigenvalues = np.linalg.eigvalsh(covariance)
    return float(np.mean(np.log(np.maximum(eigenvalues, 1e-10))))


@register_estimator
class EigenScore:
    name = "eigenscore"
    needs = frozenset({Need.SAMPLES, Need.HIDDEN})

    def __init__(self, alpha: float = ALPHA):
        self.alpha = alpha

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        bundle.require(Need.SAMPLES)
        hidden = bundle.samples.hidden
        if len(hidden) != bundle.num_questions:
            raise CalibError(f"eigenscore needs the samples' hidden states: {Need.HIDDEN.fix}")
        score = np.array([eigenscore(h, self.alpha) for h in hidden], dtype=np.float64)
        return EstimatorResult(
            confidence=confidence_from_neg_log(score), raw=score, higher_raw_means="uncertain"
        )
