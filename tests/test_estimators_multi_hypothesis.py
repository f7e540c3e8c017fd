"""Multi-hypothesis confidence: hand-computed masses and validities, and its behaviour when many answers are valid."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, get_estimator
from calib.estimators.multi_hypothesis import cluster_representatives
from calib.estimators.synthetic import generations_from


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


class FakePTrue:
    """A model whose renormalised P(True) of each proposed answer is given."""

    def __init__(self, p_true):
        self.p_true = p_true
        self.asked: list[str] = []

    def __call__(self, prompts, continuations):
        out = []
        for prompt, cont in zip(prompts, continuations):
            answer = re.search(r"Proposed Answer: (.*)\n", prompt).group(1)
            self.asked.append(answer)
            p = self.p_true[answer]
            out.append(np.array([math.log(p if cont == " (A)" else 1 - p)]))
        return out


P = {"France": 0.9, "Poland": 0.8, "Mars": 0.1, "Spain": 0.7, "Atlantis": 0.6, "Narnia": 0.6, "Gondor": 0.6}


def _bundle(greedy, samples, logprobs=None, p=P, **kw):
    scorer = FakePTrue(p)
    g = generations_from([[a] for a in greedy])
    s = generations_from(samples, logprobs=logprobs)
    return Bundle(g, s, [Example(f"q{i}") for i in range(len(greedy))], score_fn=scorer, **kw), scorer


SAMPLES = ["France", "France", "Poland", "Poland", "Mars"]  # masses 0.4, 0.4, 0.2


def test_valid_mass_and_greedy_confidence_by_hand():
    bundle, scorer = _bundle(["France", "Spain"], [SAMPLES, SAMPLES])
    valid = get_estimator("multi_hypothesis_valid_mass")(bundle)
    np.testing.assert_allclose(valid.confidence, [0.70, 0.70], rtol=1e-9)  # .4*.9 + .4*.8 + .2*.1
    result = get_estimator("multi_hypothesis")(bundle)
    # France is in the first cluster: .9 * (.4 + .4*.8 + .2*.1); Spain matches no cluster: .7 * (0 + .70)
    np.testing.assert_allclose(result.confidence, [0.9 * 0.74, 0.7 * 0.70], rtol=1e-9)
    assert sorted(set(scorer.asked)) == [
        "France",
        "Mars",
        "Poland",
        "Spain",
    ]  # each answer asked once per question


def test_hard_validity_threshold():
    bundle, _ = _bundle(["France"], [SAMPLES])
    result = get_estimator("multi_hypothesis", validity_threshold=0.5)(bundle)
    np.testing.assert_allclose(result.confidence, [0.9 * (0.4 + 0.4)], rtol=1e-9)
    valid = get_estimator("multi_hypothesis_valid_mass", validity_threshold=0.5)(bundle)
    np.testing.assert_allclose(valid.confidence, [0.8], rtol=1e-9)


def test_likelihood_masses():
    logprobs = [[[-1.0], [-1.0], [-2.0], [-2.0], [-3.0]]]
    bundle, _ = _bundle(["France"], [SAMPLES], logprobs)
    w = np.exp([-1.0, -2.0, -3.0])  # distinct strings once
    m = w / w.sum()
    result = get_estimator("multi_hypothesis", mass="likelihood")(bundle)
    np.testing.assert_allclose(result.confidence, [0.9 * (m[0] + m[1] * 0.8 + m[2] * 0.1)], rtol=1e-6)
    with pytest.raises(CalibError, match="mass 'votes'"):
        get_estimator("multi_hypothesis", mass="votes")


def test_representative_is_the_most_frequent_string_of_the_cluster():
    labels = np.array([0, 0, 0, 1, 1])
    assert cluster_representatives(labels, ["the France", "France", "France", "Poland", "poland"]) == [
        "France",
        "Poland",
    ]
    bundle, scorer = _bundle(["France"], [["the France", "France", "France", "Poland", "Poland"]])
    get_estimator("multi_hypothesis_valid_mass")(bundle)
    assert "the France" not in scorer.asked


def test_valid_diversity_keeps_confidence_where_semantic_entropy_drops_it():
    # Same cluster structure (five singletons); open question: all answers valid; closed one: only the greedy is.
    open_samples = ["France", "Poland", "Austria", "Denmark", "Belgium"]
    closed_samples = ["Canberra", "Sydney", "Melbourne", "Perth", "Hobart"]
    p = {**dict.fromkeys(open_samples, 0.9), "Canberra": 0.9, "Sydney": 0.2, "Melbourne": 0.2}
    p |= {"Perth": 0.1, "Hobart": 0.1, "Berlin": 0.9}
    consistent = ["Berlin"] * 5
    bundle, _ = _bundle(["France", "Canberra", "Berlin"], [open_samples, closed_samples, consistent], p=p)
    se = get_estimator("semantic_entropy_discrete")(bundle).confidence
    mh = get_estimator("multi_hypothesis")(bundle).confidence
    assert se[0] == pytest.approx(se[1]) and se[0] < se[2]  # SE cannot tell valid spread from doubt
    assert mh[0] > 2 * mh[1]  # the multi-hypothesis estimator can
    np.testing.assert_allclose(
        mh, [0.9 * (0.2 + 0.8 * 0.9), 0.9 * (0.2 + 0.2 * (0.2 + 0.2 + 0.1 + 0.1)), 0.9]
    )
