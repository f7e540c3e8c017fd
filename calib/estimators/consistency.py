"""Consistency estimators: how much the K samples agree with the greedy answer or with each other."""

from __future__ import annotations

import re

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_count
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator
from calib.semantic.clustering import cluster_batch

_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1 over lower-cased word tokens; two empty texts agree (1), one empty text shares nothing (0)."""
    a, b = _words(reference), _words(candidate)
    if not a and not b:
        return 1.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(b), lcs / len(a)
    return 2 * precision * recall / (precision + recall)


@register_estimator
class SelfConsistency:
    """Share of the K samples equivalent to the greedy answer (Wang et al. 2022 vote share)."""

    name = "self_consistency"
    needs = frozenset({Need.GREEDY, Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        share = bundle.greedy_equivalent.mean(axis=1).astype(np.float64)
        return EstimatorResult(confidence=share, raw=share, higher_raw_means="confident")


@register_estimator
class NumSemanticSets:
    """Number of semantic sets |C| (Lin et al. 2023): connected components of the samples' equivalence graph, as
    LM-Polygraph's NumSemSets; confidence 1/|C|. Two answers joined through a third share a set even when not
    equivalent themselves. `method="greedy"` counts Kuhn et al.'s greedy clusters instead."""

    name = "num_semantic_sets"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})
    method = "components"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        labels = cluster_batch(bundle.sample_equivalent, method=self.method)
        count = (labels.max(axis=1) + 1).astype(np.float64)
        return EstimatorResult(
            confidence=confidence_from_count(count), raw=count, higher_raw_means="uncertain"
        )


@register_estimator
class NumSemanticSetsGreedy(NumSemanticSets):
    """Number of greedy clusters (each sample joins the first cluster whose representative it is equivalent to);
    calib's default before issue 21."""

    name = "num_semantic_sets_greedy"
    method = "greedy"


@register_estimator
class LabelProb:
    """Share of the samples in the largest semantic cluster, max_c n_c / K (LM-Polygraph's LabelProb, which reports
    1 minus it). The share of the *greedy answer's* cluster is `self_consistency`."""

    name = "label_prob"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        share = np.array(
            [np.bincount(labels[labels >= 0]).max() / len(labels) for labels in bundle.clusters],
            dtype=np.float64,
        )
        return EstimatorResult(confidence=share, raw=share, higher_raw_means="confident")


def luq(similarity: np.ndarray) -> float:
    """LUQ = 1 - (1/K) Σ_i (1/(K-1)) Σ_{j≠i} a(s_j, s_i): one minus the mean support of each sample by the others."""
    s = np.asarray(similarity, dtype=np.float64)
    k = s.shape[-1]
    support = (s.sum(axis=0) - np.diagonal(s)) / (k - 1)
    return float(1.0 - support.mean())


@register_estimator
class LUQ:
    """LUQ (Zhang et al. 2024, EMNLP) on whole answers with the bundle's similarity a(s_j, s_i) as the support of
    s_i by s_j (LM-Polygraph: p(entail) / (p(entail) + p(contradict)) of an NLI model, no sentence splitting, as
    here). Confidence 1 - LUQ, the mean off-diagonal similarity (unlike Degree, which keeps the diagonal)."""

    name = "luq"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        u = np.array([luq(s) for s in bundle.sample_similarity], dtype=np.float64)
        return EstimatorResult(confidence=np.clip(1.0 - u, 0.0, 1.0), raw=u, higher_raw_means="uncertain")


@register_estimator
class LexicalSimilarityGreedy:
    """Mean ROUGE-L F1 (calib's own, no stemmer) between the greedy answer and each sample; calib's
    `lexical_similarity` before issue 21, which now averages over sample pairs as LM-Polygraph does."""

    name = "lexical_similarity_greedy"
    needs = frozenset({Need.GREEDY, Need.SAMPLES})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        score = np.array(
            [
                np.mean([rouge_l(g, s) for s in row])
                for g, row in zip(bundle.greedy_texts, bundle.sample_texts)
            ],
            dtype=np.float64,
        )
        return EstimatorResult(confidence=score, raw=score, higher_raw_means="confident")
