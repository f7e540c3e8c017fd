"""Multi-hypothesis confidence for questions with many valid answers (this project's estimator; DESIGN.md §6).

Semantic entropy reads every spread of the samples as doubt, so on "Name a country that borders Germany" a model that
answers France, Poland, Austria, ... (all right) looks unsure. Here the spread is kept apart from validity:

1. cluster the K samples by meaning; cluster c has mass m_c (share of samples, or length-normalised likelihood);
2. ask the model itself whether each cluster's representative (its most frequent string) is a correct answer:
   v_c = P(True) of that representative;
3. (a) valid mass  M = Σ_c m_c v_c — how much of the model's answer distribution is on answers it judges valid;
   (b) confidence that the *given* (greedy) answer g is correct:
         c = P(True)(g) · (m_g + Σ_{c ≠ g} m_c v_c),
       with m_g the mass of the cluster g falls in (0 if none). The sampling evidence for g is its own mass plus the
       mass of the *other valid* answers: valid alternatives do not count against it (unlike semantic entropy or plain
       cluster mass), invalid ones do. For a closed question answered consistently c ≈ P(True)(g); when the samples
       scatter over wrong answers c falls; when they scatter over valid answers c stays near P(True)(g).
Both lie in [0, 1] because Σ_c m_c = 1 and v_c, P(True) ∈ [0, 1].

The judge (step 2 and P(True)(g)) is the untuned model's P(True) by default; `judge="calibration_tuned"` or
`judge="probe"` with `judge_path` (a calib.tuning artifact) takes it from a calibration-tuned adapter or a probe
instead, and `multi_hypothesis_tuned` is (b) with such a judge, so both can run side by side.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.reflexive import p_true
from calib.estimators.registry import register_estimator
from calib.estimators.semantic_entropy import discrete_masses, weighted_masses


def cluster_representatives(labels: np.ndarray, texts: list[str]) -> list[str]:
    """The most frequent string of each cluster (first seen wins a tie), in cluster-id order."""
    reps = []
    for c in range(int(np.max(labels)) + 1):
        counts = Counter(t for t, label in zip(texts, labels) if label == c)
        reps.append(
            max(counts, key=counts.__getitem__)
        )  # Counter keeps first-seen order, max keeps the first
    return reps


def greedy_answer_confidence(
    masses: np.ndarray, validity: np.ndarray, greedy_cluster: int, p_greedy: float
) -> float:
    """P(True)(g) · (m_g + Σ_{c≠g} m_c v_c)."""
    others = np.ones(len(masses), dtype=bool)
    own = 0.0
    if greedy_cluster >= 0:
        others[greedy_cluster] = False
        own = float(masses[greedy_cluster])
    return float(np.clip(p_greedy * (own + np.sum(masses[others] * validity[others])), 0.0, 1.0))


class _MultiHypothesisBase:
    def __init__(
        self,
        mass: str = "count",
        validity_threshold: float | None = None,
        judge: str = "p_true",
        judge_path: str | None = None,
    ):
        if mass not in ("count", "likelihood"):
            raise CalibError(f"multi_hypothesis: mass {mass!r} is not 'count' or 'likelihood'")
        self.mass = mass
        self.validity_threshold = validity_threshold
        needs = {Need.GREEDY, Need.SAMPLES, Need.SEMANTIC, Need.QUESTIONS, Need.SCORE}
        self.judge_name, self.trained = judge, None
        if judge != "p_true":
            from calib.tuning.estimators import JUDGES

            if judge not in JUDGES:
                raise CalibError(f"multi_hypothesis: judge {judge!r} is not p_true, {', '.join(JUDGES)}")
            self.trained = JUDGES[judge](judge_path)
            needs |= set(self.trained.needs)
        self.needs = frozenset(needs | {Need.SAMPLE_TOKENS} if mass == "likelihood" else needs)

    def validity(self, bundle: Bundle, items: list[tuple[int, str]]) -> np.ndarray:
        """P(valid) of each (question index, answer) from the judge: P(True), or the tuned adapter / probe."""
        return p_true(bundle, items) if self.trained is None else self.trained.judge(bundle, items)

    def hypotheses(self, bundle: Bundle) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per question: cluster masses and validities (one batched P(True) call over all representatives)."""
        masses, items, spans = [], [], []
        for i, labels in enumerate(bundle.clusters):
            if self.mass == "likelihood":
                m = weighted_masses(labels, bundle.sample_texts[i], bundle.sample_logprobs[i])
            else:
                m = discrete_masses(labels)
            reps = cluster_representatives(labels, bundle.sample_texts[i])
            spans.append((len(items), len(reps)))
            items += [(i, rep) for rep in reps]
            masses.append(m)
        p = self.validity(bundle, items)
        if self.validity_threshold is not None:
            p = (p >= self.validity_threshold).astype(np.float64)
        return masses, [p[start : start + n] for start, n in spans]


@register_estimator
class MultiHypothesis(_MultiHypothesisBase):
    """(b): confidence that the greedy answer is one of the correct answers."""

    name = "multi_hypothesis"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        masses, validity = self.hypotheses(bundle)
        p_greedy = self.validity(bundle, list(enumerate(bundle.greedy_texts)))
        c = np.array(
            [
                greedy_answer_confidence(m, v, int(g), float(pg)) if not np.isnan(m).any() else np.nan
                for m, v, g, pg in zip(masses, validity, bundle.greedy_cluster, p_greedy)
            ]
        )
        return EstimatorResult(confidence=c, raw=c, higher_raw_means="confident")


@register_estimator
class ValidMass(_MultiHypothesisBase):
    """(a): probability mass of the model's answers on clusters it judges valid, Σ_c m_c v_c."""

    name = "multi_hypothesis_valid_mass"

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        masses, validity = self.hypotheses(bundle)
        value = np.clip(np.array([float(np.sum(m * v)) for m, v in zip(masses, validity)]), 0.0, 1.0)
        return EstimatorResult(confidence=value, raw=value, higher_raw_means="confident")


@register_estimator
class MultiHypothesisTuned(MultiHypothesis):
    """(b) with a trained judge: `judge` calibration_tuned (default) or probe, `judge_path` its artifact folder."""

    name = "multi_hypothesis_tuned"

    def __init__(
        self,
        mass: str = "count",
        validity_threshold: float | None = None,
        judge: str = "calibration_tuned",
        judge_path: str | None = None,
    ):
        if judge == "p_true":
            raise CalibError(
                "multi_hypothesis_tuned: judge p_true is multi_hypothesis; pick calibration_tuned or probe"
            )
        super().__init__(mass, validity_threshold, judge, judge_path)
