"""Semantic entropy (Kuhn et al. 2023; Farquhar et al. 2024): entropy over meaning clusters of the K samples.

- discrete: SE_D = -Σ_c (n_c/K) log(n_c/K);
- weighted (`semantic_entropy`, Farquhar et al. 2024 and their code `semantic_uncertainty`): p̄(s_k) = exp(mean_t ℓ_{k,t})
  (their log-likelihoods *are* length-normalised: the mean token log-prob), p̂(c) = Σ_{k ∈ c} p̄(s_k) / Σ_k p̄(s_k) over
  every sample k = 1..K, repeats included, and SE = -Σ_c p̂(c) log p̂(c) (their `predictive_entropy_rao`). A sample
  drawn twice counts twice: repeats are the Monte-Carlo evidence that the answer is likely.
- weighted over distinct strings (`semantic_entropy_unique`, calib's default before issue 21): the same with each
  distinct sample string counted once. LM-Polygraph's `use_unique_responses=True` also counts each string once, but
  with its default's unnormalised likelihoods and estimator below, so it is a different number.
Answers without tokens have no likelihood and are left out of the weighted forms.
Confidence exp(-SE): 1 for one cluster, 1/C for C equally likely clusters.

LM-Polygraph 0.7.0's default SemanticEntropy differs: it sums *unnormalised* sequence likelihoods exp(Σ_t ℓ_t) per
class without normalising over the samples, and estimates -mean_k log p(c(s_k)) (its "mean" estimator).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_entropy
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats of a probability vector (zeros contribute nothing)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def discrete_masses(labels: np.ndarray) -> np.ndarray:
    """n_c / K for each cluster id 0..C-1."""
    labels = np.asarray(labels)
    return np.bincount(labels[labels >= 0]).astype(np.float64) / np.sum(labels >= 0)


def weighted_masses(
    labels: np.ndarray, texts: Sequence[str], logprobs: Sequence[np.ndarray], unique: bool = True
) -> np.ndarray:
    """p̂(c) from length-normalised likelihoods (each distinct string once if `unique`); answers without tokens are
    skipped.

    Returns NaNs when no sample has a token (nothing to weigh).
    """
    labels = np.asarray(labels)
    seen: set[str] = set()
    members, log_weights = [], []
    for label, text, lp in zip(labels, texts, logprobs):
        if (unique and text in seen) or len(lp) == 0 or label < 0:
            continue
        seen.add(text)
        members.append(int(label))
        log_weights.append(float(np.mean(lp)))
    count = int(labels.max()) + 1 if labels.size else 0
    if not log_weights:
        return np.full(count, np.nan)
    w = np.exp(np.array(log_weights) - max(log_weights))  # stable: the common factor cancels in the ratio
    mass = np.bincount(np.array(members), weights=w, minlength=count)
    return mass / mass.sum()


@register_estimator
class SemanticEntropy:
    """Farquhar et al.'s weighted semantic entropy by default (every sample counts); `unique=True` counts each
    distinct string once; `weighted=False` gives the discrete (count-based) one."""

    name = "semantic_entropy"

    def __init__(self, weighted: bool = True, unique: bool = False):
        self.weighted, self.unique = weighted, unique
        if not weighted:
            self.name = "semantic_entropy_discrete"
        else:
            self.name = "semantic_entropy_unique" if unique else "semantic_entropy"
        needs = {Need.SAMPLES, Need.SEMANTIC}
        self.needs = frozenset(needs | {Need.SAMPLE_TOKENS} if weighted else needs)

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        values = []
        for i, labels in enumerate(bundle.clusters):
            if self.weighted:
                texts, logprobs = bundle.sample_texts[i], bundle.sample_logprobs[i]
                mass = weighted_masses(labels, texts, logprobs, unique=self.unique)
            else:
                mass = discrete_masses(labels)
            values.append(np.nan if np.isnan(mass).any() else entropy(mass))
        se = np.array(values, dtype=np.float64)
        return EstimatorResult(confidence=confidence_from_entropy(se), raw=se, higher_raw_means="uncertain")


@register_estimator
class UniqueSemanticEntropy(SemanticEntropy):
    name = "semantic_entropy_unique"

    def __init__(self) -> None:
        super().__init__(weighted=True, unique=True)


@register_estimator
class DiscreteSemanticEntropy(SemanticEntropy):
    name = "semantic_entropy_discrete"

    def __init__(self) -> None:
        super().__init__(weighted=False)
