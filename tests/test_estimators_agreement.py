"""Pairwise lexical similarity, number of semantic sets by components, label probability and LUQ, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, get_estimator
from calib.estimators.lexical import bleu
from calib.estimators.synthetic import generations_from
from calib.semantic import Comparison


class MatrixBackend:
    """Given [K+1, K+1] similarities (greedy answer first); equivalent iff similarity >= 0.5 both ways."""

    name = "matrix"

    def __init__(self, matrices):
        self.matrices = [np.asarray(m, dtype=np.float64) for m in matrices]

    def compare(self, questions, answers):
        return [Comparison(m, (m >= 0.5) & (m.T >= 0.5)) for m in self.matrices]

    def pair_similarity(self, first, second):
        raise AssertionError("not used")


def _samples_bundle(samples, **kw):
    return Bundle(generations_from([[row[0]] for row in samples]), generations_from(samples), **kw)


def test_lexical_similarity_averages_rouge_over_sample_pairs_with_the_stemmer():
    # "cats" stems to "cat": pair (0, 1) shares all three words; the other pairs share none
    bundle = _samples_bundle([["the cats sat", "the cat sat", "dogs ran"], ["a b c", "c b a", "a b c"]])
    rouge_l = get_estimator("lexical_similarity")(bundle)
    # question 2: LCS("a b c", "c b a") = 1 -> F = 1/3 (twice); identical pair -> 1
    np.testing.assert_allclose(rouge_l.raw, [1 / 3, (1 / 3 + 1 + 1 / 3) / 3])
    np.testing.assert_allclose(rouge_l.confidence, rouge_l.raw)
    rouge_1 = get_estimator("lexical_similarity", metric="rouge1")
    assert rouge_1.name == "lexical_similarity_rouge1"
    np.testing.assert_allclose(rouge_1(bundle).raw, [1 / 3, 1.0])  # unigrams ignore order
    # the greedy variant compares "the cats sat" with each sample, without a stemmer: 1, 2/3, 0
    greedy = get_estimator("lexical_similarity_greedy")(bundle)
    np.testing.assert_allclose(greedy.raw[0], (1 + 2 / 3 + 0) / 3)


def test_bleu_by_hand_and_its_pairwise_mean():
    # modified n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty)
    assert bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx((1 / 12) ** 0.25)
    # one shared unigram, hypothesis of 1 word against a reference of 2: brevity penalty exp(1 - 2/1)
    assert bleu("Paris France", "Paris") == pytest.approx(math.exp(-1))
    assert bleu("Paris", "") == 0.0 and bleu("Lyon", "Paris") == 0.0
    bundle = _samples_bundle([["Paris France", "Paris", "Lyon"]])
    # pairs (reference s_i, hypothesis s_j), i < j: e^-1, 0, 0
    result = get_estimator("lexical_similarity_bleu")(bundle)
    np.testing.assert_allclose(result.raw, [math.exp(-1) / 3])
    with pytest.raises(CalibError, match="metric 'bleu4'"):
        get_estimator("lexical_similarity", metric="bleu4")


def _chain_bundle():
    """s0 ~ s1, s1 ~ s2, s0 !~ s2, s3 alone: components {0,1,2},{3}; greedy clusters {0,1},{2},{3}."""
    s = np.array([[1.0, 0.9, 0.1, 0.0], [0.9, 1.0, 0.8, 0.0], [0.1, 0.8, 1.0, 0.2], [0.0, 0.0, 0.2, 1.0]])
    full = np.ones((5, 5))
    full[1:, 1:] = s
    samples = generations_from([["s0", "s1", "s2", "s3"]])
    return Bundle(generations_from([["g"]]), samples, semantic=MatrixBackend([full])), s


def test_num_semantic_sets_counts_connected_components_and_the_greedy_variant_greedy_clusters():
    bundle, _ = _chain_bundle()
    components = get_estimator("num_semantic_sets")(bundle)
    np.testing.assert_allclose(components.raw, [2])
    np.testing.assert_allclose(components.confidence, [1 / 2])
    np.testing.assert_allclose(get_estimator("num_semantic_sets_greedy")(bundle).raw, [3])


def test_label_prob_is_the_share_of_the_largest_cluster():
    bundle = _samples_bundle([["Paris", "Lyon", "Paris", "Paris", "Nice"], ["a", "b", "c", "a", "b"]])
    result = get_estimator("label_prob")(bundle)
    np.testing.assert_allclose(result.confidence, [3 / 5, 2 / 5])
    # not the greedy answer's cluster: greedy "Lyon" (first sample) has a share of 1/5
    greedy = Bundle(
        generations_from([["Lyon"]]), generations_from([["Paris", "Lyon", "Paris", "Paris", "Nice"]])
    )
    np.testing.assert_allclose(get_estimator("label_prob")(greedy).confidence, [3 / 5])
    np.testing.assert_allclose(get_estimator("self_consistency")(greedy).confidence, [1 / 5])


def test_luq_is_one_minus_the_mean_support_of_each_sample_by_the_others():
    bundle, s = _chain_bundle()
    result = get_estimator("luq")(bundle)
    k = len(s)
    support = [np.mean([s[j, i] for j in range(k) if j != i]) for i in range(k)]  # a(s_j, s_i), j != i
    np.testing.assert_allclose(result.raw, [1 - np.mean(support)])
    np.testing.assert_allclose(result.confidence, [np.mean(support)])
    off_diagonal = (s.sum() - k) / (k * (k - 1))
    np.testing.assert_allclose(result.confidence, [off_diagonal])
