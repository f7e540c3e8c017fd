"""Token-level estimators against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calib.estimators import Bundle, get_estimator
from calib.estimators.synthetic import generations_from

P = [[0.5, 0.8, 0.25], [0.9], [0.6, 0.6]]  # token probabilities of three greedy answers
H = [[1.0, 0.5, 0.0], [0.2], [0.3, 0.9]]


@pytest.fixture(scope="module")
def bundle():
    logprobs = [[[math.log(p) for p in row]] for row in P]
    greedy = generations_from([["a b c"], ["d"], ["e f"]], logprobs=logprobs, entropies=[[h] for h in H])
    return Bundle(greedy)


EXPECTED = {
    "msp": [0.5 * 0.8 * 0.25, 0.9, 0.36],
    "mean_token_prob": [(0.5 + 0.8 + 0.25) / 3, 0.9, 0.6],
    "inverse_perplexity": [(0.5 * 0.8 * 0.25) ** (1 / 3), 0.9, 0.6],
    "min_token_prob": [0.25, 0.9, 0.6],
    "first_token_prob": [0.5, 0.9, 0.6],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_probability_estimators_match_hand_computation(bundle, name):
    result = get_estimator(name)(bundle)
    np.testing.assert_allclose(result.confidence, EXPECTED[name], rtol=1e-6)
    np.testing.assert_allclose(result.raw, EXPECTED[name], rtol=1e-6)
    assert result.higher_raw_means == "confident"


def test_mean_token_entropy_raw_is_the_mean_and_confidence_exp_minus_it(bundle):
    result = get_estimator("mean_token_entropy")(bundle)
    mean = np.array([0.5, 0.2, 0.6])
    np.testing.assert_allclose(result.raw, mean, rtol=1e-6)
    np.testing.assert_allclose(result.confidence, np.exp(-mean), rtol=1e-6)
    assert result.higher_raw_means == "uncertain"
    assert np.argsort(result.confidence).tolist() == np.argsort(-mean).tolist()


def test_an_empty_answer_is_missing_not_confident():
    greedy = generations_from([[""], ["x"]], logprobs=[[[]], [[math.log(0.5)]]])
    for name in (*EXPECTED, "mean_token_entropy"):
        confidence = get_estimator(name)(Bundle(greedy)).confidence
        assert np.isnan(confidence[0]) and not np.isnan(confidence[1])


def test_geometric_mean_lies_between_min_and_arithmetic_mean(bundle):
    low = get_estimator("min_token_prob")(bundle).confidence
    mid = get_estimator("inverse_perplexity")(bundle).confidence
    high = get_estimator("mean_token_prob")(bundle).confidence
    assert np.all(low <= mid + 1e-12) and np.all(mid <= high + 1e-12)
