"""Lexical similarity (Fomicheva et al. 2020; as an uncertainty baseline in Kuhn et al. 2023 and LM-Polygraph):
the mean similarity over all unordered pairs of the K samples,

    LexSim = (2 / (K(K-1))) Σ_{i<j} sim(s_i, s_j),

with sim the ROUGE-L (default), ROUGE-1 or ROUGE-2 F-measure of Google's `rouge-score` with its Porter stemmer, or
sentence BLEU (NLTK, no smoothing) of s_j against the reference s_i over whitespace tokens, using n-grams up to
n = min(4, shorter length) with uniform weights 1/n. Confidence is LexSim itself (already in [0, 1]).

Differences from LM-Polygraph 0.7.0: it reports -LexSim; its BLEU weights for a shortest text of three words are
0.33 each (sum 0.99) where these are 1/3; a pair with an empty text scores BLEU 0 here.
`lexical_similarity_greedy` (calib's earlier default) compares the greedy answer with each sample instead.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from itertools import combinations

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator

METRICS = ("rougeL", "rouge1", "rouge2", "bleu")


def bleu(reference: str, hypothesis: str) -> float:
    """Sentence BLEU of `hypothesis` against `reference` (whitespace tokens), n-gram orders up to the shorter
    length (at most 4) weighted equally; 0 when either text is empty."""
    from nltk.translate.bleu_score import sentence_bleu

    ref, hyp = reference.split(), hypothesis.split()
    order = min(4, len(ref), len(hyp))
    if order == 0:
        return 0.0
    with (
        warnings.catch_warnings()
    ):  # NLTK warns when a higher-order n-gram has no match (the score is then 0)
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ref], hyp, weights=[1.0 / order] * order))


def mean_pairwise(texts: list[str], similarity) -> float:
    """(2 / (K(K-1))) Σ_{i<j} similarity(s_i, s_j)."""
    return float(np.mean([similarity(a, b) for a, b in combinations(texts, 2)]))


@register_estimator
class LexicalSimilarity:
    """Mean pairwise lexical similarity of the samples; `metric` one of rougeL, rouge1, rouge2, bleu."""

    name = "lexical_similarity"
    needs = frozenset({Need.SAMPLES})

    def __init__(self, metric: str = "rougeL"):
        if metric not in METRICS:
            raise CalibError(f"lexical_similarity: metric {metric!r} is not one of {', '.join(METRICS)}")
        self.metric = metric
        self.name = "lexical_similarity" if metric == "rougeL" else f"lexical_similarity_{metric.lower()}"

    @cached_property
    def _scorer(self):
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer([self.metric], use_stemmer=True)

    def similarity(self, a: str, b: str) -> float:
        if self.metric == "bleu":
            return bleu(a, b)
        return float(self._scorer.score(a, b)[self.metric].fmeasure)

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        score = np.array(
            [mean_pairwise(row, self.similarity) for row in bundle.sample_texts], dtype=np.float64
        )
        return EstimatorResult(confidence=np.clip(score, 0.0, 1.0), raw=score, higher_raw_means="confident")


@register_estimator
class LexicalSimilarityRouge1(LexicalSimilarity):
    name = "lexical_similarity_rouge1"

    def __init__(self) -> None:
        super().__init__("rouge1")


@register_estimator
class LexicalSimilarityBleu(LexicalSimilarity):
    name = "lexical_similarity_bleu"

    def __init__(self) -> None:
        super().__init__("bleu")
