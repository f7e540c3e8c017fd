"""Revision estimators: how the model's answers move when it is asked to pause and revise (calib.decode.revise).

They read `bundle.passes`: pass r = 0..R as Generations with the greedy answer at index 0 of each question,
optionally followed by that pass's samples (what `Revision.answers(k, r)` returns). The graded answer is
`bundle.greedy`, by convention the final pass's greedy answer. Equivalence comes from the bundle's semantic
backend, over every answer of every pass of a question in one comparison shared by all revision estimators.

- revision_stability: share of the earlier passes whose greedy answer is equivalent to the graded answer
  (an answer the model keeps when asked to check it is more likely right).
- revision_agreement: share of all samples of all passes equivalent to the graded answer (self-consistency
  pooled across passes).
- revision_sample_stability: mean over sample chains of the share of earlier passes where the chain already gave
  its final answer (how settled the model is, independent of the graded answer).
- revision_final_confidence: a token-level confidence of the final pass's greedy answer, read from the final
  pass (so it stays the final pass's even when a run grades another answer).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator
from calib.estimators.token_level import inverse_perplexity, mean_token_probability, sequence_probability


@dataclass(frozen=True)
class PassComparison:
    """Per question: equivalence [M, M] over [graded, pass-0 answers, pass-1 answers, ...] and where each sits."""

    equivalent: list[np.ndarray]
    index: list[list[list[int]]]  # [i][r][s] -> position of answer s of pass r (s = 0 greedy) in the matrix


_SHARED: weakref.WeakKeyDictionary[Bundle, PassComparison] = weakref.WeakKeyDictionary()


def pass_comparison(bundle: Bundle) -> PassComparison:
    """One backend call over every answer of every pass (computed once per bundle)."""
    bundle.require(Need.PASSES)
    if bundle in _SHARED:
        return _SHARED[bundle]
    groups, index = [], []
    for i, graded in enumerate(bundle.greedy_texts):
        group, where = [graded], []
        for gens in bundle.passes:
            row = gens.texts[i]
            where.append(list(range(len(group), len(group) + len(row))))
            group += list(row)
        groups.append(group)
        index.append(where)
    comparisons = bundle.semantic.compare(bundle.contexts, groups)
    if len(comparisons) != len(groups):
        raise CalibError(
            f"semantic backend returned {len(comparisons)} comparisons for {len(groups)} questions"
        )
    result = PassComparison([np.asarray(c.equivalent, bool) for c in comparisons], index)
    _SHARED[bundle] = result
    return result


@register_estimator
class RevisionStability:
    """Share of passes 0..R-1 whose greedy answer is equivalent to the graded (final) answer."""

    name = "revision_stability"
    needs = frozenset({Need.GREEDY, Need.PASSES})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        shared = pass_comparison(bundle)
        share = np.array(
            [
                np.mean([eq[0, where[r][0]] for r in range(len(where) - 1)])
                for eq, where in zip(shared.equivalent, shared.index)
            ],
            dtype=np.float64,
        )
        return EstimatorResult(confidence=share, raw=share, higher_raw_means="confident")


@register_estimator
class RevisionAgreement:
    """Share of the samples of all passes (K per pass, pooled) equivalent to the graded answer."""

    name = "revision_agreement"
    needs = frozenset({Need.GREEDY, Need.SAMPLES, Need.PASSES})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        shared = pass_comparison(bundle)
        out = []
        for eq, where in zip(shared.equivalent, shared.index):
            pooled = [j for row in where for j in row[1:]]
            if not pooled:
                raise CalibError(
                    "revision_agreement: the revise passes hold no samples; keep samples on every pass"
                )
            out.append(eq[0, pooled].mean())
        share = np.asarray(out, dtype=np.float64)
        return EstimatorResult(confidence=share, raw=share, higher_raw_means="confident")


@register_estimator
class RevisionSampleStability:
    """Mean over sample chains s of the share of passes 0..R-1 where chain s already gave its final answer."""

    name = "revision_sample_stability"
    needs = frozenset({Need.SAMPLES, Need.PASSES})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        shared = pass_comparison(bundle)
        out = []
        for eq, where in zip(shared.equivalent, shared.index):
            chains = range(1, len(where[-1]))
            if not chains:
                raise CalibError(
                    "revision_sample_stability: the revise passes hold no samples; keep samples on every pass"
                )
            out.append(
                np.mean([[eq[where[-1][s], where[r][s]] for r in range(len(where) - 1)] for s in chains])
            )
        share = np.asarray(out, dtype=np.float64)
        return EstimatorResult(confidence=share, raw=share, higher_raw_means="confident")


_STATS = {
    "msp": sequence_probability,
    "inverse_perplexity": inverse_perplexity,
    "mean_token_prob": mean_token_probability,
}


@register_estimator
class RevisionFinalConfidence:
    """A token-level confidence (default inverse perplexity) of the final pass's greedy answer."""

    name = "revision_final_confidence"
    needs = frozenset({Need.PASSES})

    def __init__(self, stat: str = "inverse_perplexity"):
        if stat not in _STATS:
            raise CalibError(
                f"revision_final_confidence: unknown stat {stat!r}; choose one of {', '.join(_STATS)}"
            )
        self.stat = stat

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        bundle.require(Need.PASSES)
        final = bundle.passes[-1]
        fn = _STATS[self.stat]
        p = np.array(
            [fn(np.asarray(row[0], np.float64)) if len(row[0]) else np.nan for row in final.token_logprobs],
            dtype=np.float64,
        )
        return EstimatorResult(confidence=np.clip(p, 0.0, 1.0), raw=p, higher_raw_means="confident")
