"""Consistency and semantic-entropy estimators: hand-computed values, agreement ordering, range on random inputs."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.special

from calib.estimators import Bundle, get_estimator
from calib.estimators.consistency import lcs_length, rouge_l
from calib.estimators.semantic_entropy import entropy, weighted_masses
from calib.estimators.synthetic import generations_from
from calib.semantic import Comparison


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


def _bundle(greedy, samples, logprobs=None, **kw):
    g = generations_from([[a] for a in greedy])
    s = generations_from(samples, logprobs=logprobs)
    return Bundle(g, s, [Example(f"q{i}") for i in range(len(greedy))], **kw)


def test_discrete_semantic_entropy_of_known_cluster_masses():
    # exact match: {Paris, Paris, paris.} and {Lyon} -> masses 3/4, 1/4
    bundle = _bundle(["Paris"], [["Paris", "Paris", "paris.", "Lyon"]])
    result = get_estimator("semantic_entropy_discrete")(bundle)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    np.testing.assert_allclose(result.raw, [expected], rtol=1e-12)
    np.testing.assert_allclose(result.confidence, [math.exp(-expected)], rtol=1e-12)


def test_semantic_entropy_is_farquhar_et_al_with_every_sample_counted():
    # Farquhar et al. (2024), Nature 630, and their code: per sample the mean token log-likelihood l̄_k, normalised
    # over the K samples by logsumexp, summed per meaning class by logsumexp, then -Σ_c p_c log p_c.
    samples = [["Paris", "Paris", "paris.", "Lyon"]]
    logprobs = [[[-0.4, -0.6], [-0.4, -0.6], [-1.0], [-2.0, -2.0]]]
    result = get_estimator("semantic_entropy")(_bundle(["Paris"], samples, logprobs))
    mean_ll = np.array([np.mean(lp) for lp in logprobs[0]])  # -0.5, -0.5, -1.0, -2.0
    normalised = mean_ll - scipy.special.logsumexp(mean_ll)
    classes = [[0, 1, 2], [3]]  # exact match: Paris, Paris, paris. | Lyon
    log_p = np.array([scipy.special.logsumexp(normalised[c]) for c in classes])
    np.testing.assert_allclose(result.raw, [-np.sum(np.exp(log_p) * log_p)], rtol=1e-6)
    np.testing.assert_allclose(result.confidence, np.exp(-result.raw))
    by_hand = (2 * math.exp(-0.5) + math.exp(-1.0)) / (2 * math.exp(-0.5) + math.exp(-1.0) + math.exp(-2.0))
    np.testing.assert_allclose(result.raw, [entropy(np.array([by_hand, 1 - by_hand]))], rtol=1e-6)


def test_unique_semantic_entropy_counts_each_distinct_string_once():
    samples = [["Paris", "Paris", "paris.", "Lyon"]]
    logprobs = [[[-0.4, -0.6], [-0.4, -0.6], [-1.0], [-2.0, -2.0]]]
    result = get_estimator("semantic_entropy_unique")(_bundle(["Paris"], samples, logprobs))
    w = np.exp([-0.5, -1.0, -2.0])  # Paris (once), paris., Lyon: exp(mean log-prob)
    p = np.array([w[0] + w[1], w[2]]) / w.sum()
    np.testing.assert_allclose(result.raw, [-(p * np.log(p)).sum()], rtol=1e-6)
    doubled = np.array([2 * w[0] + w[1], w[2]]) / (2 * w[0] + w[1] + w[2])  # what the old bug computed
    assert abs(result.raw[0] - entropy(doubled)) > 1e-3


def test_weighted_masses_skip_empty_answers_and_are_missing_when_all_are_empty():
    np.testing.assert_allclose(
        weighted_masses(np.array([0, 1]), ["a", ""], [np.array([-1.0]), np.array([])]), [1, 0]
    )
    assert np.isnan(weighted_masses(np.array([0]), [""], [np.array([])])).all()


def test_self_consistency_and_number_of_sets():
    bundle = _bundle(
        ["Paris", "Rome"], [["Paris", "the Paris", "Lyon", "Nice"], ["Oslo", "Rome", "Oslo", "Oslo"]]
    )
    np.testing.assert_allclose(get_estimator("self_consistency")(bundle).confidence, [0.5, 0.25])
    sets = get_estimator("num_semantic_sets")(bundle)
    np.testing.assert_allclose(sets.raw, [3, 2])
    np.testing.assert_allclose(sets.confidence, [1 / 3, 1 / 2])


def _lcs_brute_force(a, b):
    for size in range(min(len(a), len(b)), 0, -1):
        subsequences = set(itertools.combinations(b, size))
        if any(c in subsequences for c in itertools.combinations(a, size)):
            return size
    return 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("the cat sat on the mat", "the mat sat on a cat"),
        ("a b c d e", "e d c b a"),
        ("x y", "x y"),
        ("p", "q"),
    ],
)
def test_lcs_matches_brute_force(a, b):
    assert lcs_length(a.split(), b.split()) == _lcs_brute_force(a.split(), b.split())


def test_rouge_l_and_lexical_similarity_to_the_greedy_answer():
    # LCS("the capital is paris", "paris is the capital") = 2 ("the capital" or ...): P = R = 2/4
    assert rouge_l("The capital is Paris", "Paris is the capital") == pytest.approx(0.5)
    assert rouge_l("Paris", "Paris.") == 1.0 and rouge_l("Paris", "Lyon") == 0.0 and rouge_l("", "") == 1.0
    bundle = _bundle(["Paris"], [["Paris", "Lyon", "Paris France"]])
    expected = (1.0 + 0.0 + 2 * (1 / 2 * 1) / (1 / 2 + 1)) / 3
    np.testing.assert_allclose(get_estimator("lexical_similarity_greedy")(bundle).confidence, [expected])


class RandomBackend:
    """Random directional similarities; equivalent when both directions exceed 0.5."""

    name = "random"

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def compare(self, questions, answers):
        out = []
        for group in answers:
            s = self.rng.uniform(0, 1, (len(group), len(group))).astype(np.float32)
            np.fill_diagonal(s, 1.0)
            eq = (s >= 0.5) & (s.T >= 0.5)
            out.append(Comparison(s, eq))
        return out

    def pair_similarity(self, first, second):
        return self.rng.uniform(0, 1, len(first)).astype(np.float32)


SAMPLE_BASED = [
    "self_consistency", "num_semantic_sets", "num_semantic_sets_greedy", "lexical_similarity",
    "lexical_similarity_rouge1", "lexical_similarity_bleu", "lexical_similarity_greedy", "semantic_entropy",
    "semantic_entropy_discrete", "semantic_entropy_unique", "eigv", "degree", "degree_answer", "eccentricity", "kle", "sentence_sar", "sar",
    "multi_hypothesis", "label_prob", "luq",
]  # fmt: skip


def _constant_scorer(prompts, continuations):
    return [np.array([math.log(0.5)]) for _ in prompts]


def _decode(ids):
    return " ".join(f"w{int(i)}" for i in ids)


@pytest.mark.parametrize("name", SAMPLE_BASED)
def test_more_agreement_gives_more_confidence(name):
    agree = ["Paris"] * 6
    split = ["Paris", "Paris", "Paris", "Lyon", "Lyon", "Nice"]
    scatter = ["Paris", "Lyon", "Nice", "Lille", "Metz", "Brest"]
    samples = [agree, split, scatter]
    logprobs = [[[-0.7, -0.2]] * 6] * 3
    bundle = _bundle(["Paris"] * 3, samples, logprobs, score_fn=_constant_scorer, decode_fn=_decode)
    confidence = get_estimator(name)(bundle).confidence
    assert confidence[0] > confidence[1] > confidence[2], confidence


@pytest.mark.parametrize("seed", [0, 1])
def test_every_estimator_stays_in_range_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, k = 5, 7
    words = ["Paris", "Lyon", "Nice", "Metz", "the Paris", "Lille"]
    samples = [[" ".join(rng.choice(words, rng.integers(1, 3))) for _ in range(k)] for _ in range(n)]
    logprobs = [[(-rng.exponential(1.0, len(t.split()))).tolist() for t in row] for row in samples]
    bundle = _bundle(
        [row[0] for row in samples],
        samples,
        logprobs,
        semantic=RandomBackend(seed),
        score_fn=lambda p, c: [np.array([-rng.exponential()]) for _ in p],
        decode_fn=_decode,
    )
    for name in [*SAMPLE_BASED, "multi_hypothesis_valid_mass"]:
        result = get_estimator(name)(bundle)  # EstimatorResult itself rejects values outside [0, 1]
        assert result.confidence.shape == (n,)
        assert np.isfinite(result.confidence).all(), name
