"""Consistency estimators: how much the K samples agree with the greedy answer or with each other."""

from __future__ import annotations

import re

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_count
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator

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
    """Number of semantic clusters |C| among the samples; confidence 1/|C|."""

    name = "num_semantic_sets"
    needs = frozenset({Need.SAMPLES, Need.SEMANTIC})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        count = bundle.num_clusters.astype(np.float64)
        return EstimatorResult(
            confidence=confidence_from_count(count), raw=count, higher_raw_means="uncertain"
        )


@register_estimator
class LexicalSimilarity:
    """Mean ROUGE-L F1 between the greedy answer and each sample (as LM-Polygraph's LexicalSimilarity)."""

    name = "lexical_similarity"
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
