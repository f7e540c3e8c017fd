"""Monte-Carlo sequence entropy and (conditional) PMI on small fake bundles, computed by hand."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calib.estimators import Bundle, get_estimator
from calib.estimators.information import NEUTRAL_PROMPT
from calib.estimators.synthetic import generations_from


@dataclass
class Example:
    question: str


def test_monte_carlo_sequence_entropy_and_its_length_normalised_form():
    samples = [["a b", "c", ""], ["x", "y"]]
    logprobs = [[[-0.5, -1.0], [-2.0], []], [[-0.1], [-0.3]]]
    greedy = generations_from([["a b"], ["x"]])
    bundle = Bundle(greedy, generations_from(samples, logprobs=logprobs))
    h = get_estimator("mc_sequence_entropy")(bundle)
    # -log p of each sample, averaged over all K samples (the empty one has p = 1)
    np.testing.assert_allclose(h.raw, [(1.5 + 2.0 + 0.0) / 3, (0.1 + 0.3) / 2], rtol=1e-6)
    np.testing.assert_allclose(h.confidence, np.exp(-h.raw))
    hn = get_estimator("mc_normalized_sequence_entropy")(bundle)
    # per-token NLL of each sample with tokens: (1.5/2, 2.0/1), (0.1, 0.3)
    np.testing.assert_allclose(hn.raw, [(0.75 + 2.0) / 2, 0.2], rtol=1e-6)
    assert h.higher_raw_means == hn.higher_raw_means == "uncertain"


class QuestionFreeScorer:
    """Log-probs of each answer after the neutral prompt; records the calls."""

    def __init__(self, table):
        self.table, self.calls = table, []

    def __call__(self, prompts, continuations):
        self.calls += list(zip(prompts, continuations))
        return [np.array(self.table[c]) for c in continuations]


def _pmi_bundle(scorer):
    texts = [["Paris France"], ["Lyon"], [""]]
    logprobs = [[[-0.5, -0.25]], [[-0.1]], [[]]]
    entropies = [[[0.01, 0.5]], [[2.0]], [[]]]
    greedy = generations_from(texts, logprobs=logprobs, entropies=entropies)
    return Bundle(greedy, examples=[Example("q")] * 3, score_fn=scorer)


def test_mean_pmi_subtracts_the_question_free_log_prob_of_every_token():
    # "Lyon" re-tokenises to two tokens although it was decoded as one: missing, not misaligned
    scorer = QuestionFreeScorer({"Paris France": [-2.0, -1.0], "Lyon": [-3.0, -4.0]})
    result = get_estimator("mean_pmi")(_pmi_bundle(scorer))
    pmi = ((-0.5 - -2.0) + (-0.25 - -1.0)) / 2  # first token included
    np.testing.assert_allclose(result.raw[0], pmi)
    np.testing.assert_allclose(result.confidence[0], 1 / (1 + math.exp(-pmi)))
    assert np.isnan(result.raw[1:]).all() and np.isnan(result.confidence[1:]).all()
    assert scorer.calls == [
        (NEUTRAL_PROMPT, "Paris France"),
        (NEUTRAL_PROMPT, "Lyon"),
    ]  # the empty answer: no call


def test_mean_cpmi_gates_the_question_free_term_by_the_entropy():
    scorer = QuestionFreeScorer({"Paris France": [-2.0, -1.0], "Lyon": [-3.0]})
    result = get_estimator("mean_cpmi")(_pmi_bundle(scorer))
    lam = 3.599
    # entropies 0.01 < τ = 0.0656 (term dropped) and 0.5 ≥ τ (kept, scaled by λ); "Lyon" has H = 2.0 ≥ τ
    expected = [(-0.5 + (-0.25 - lam * -1.0)) / 2, -0.1 - lam * -3.0]
    np.testing.assert_allclose(result.raw[:2], expected)
    np.testing.assert_allclose(result.confidence[:2], 1 / (1 + np.exp(-np.array(expected))))
    assert np.isnan(result.raw[2])
    high_tau = get_estimator("mean_cpmi", tau=10.0)(_pmi_bundle(scorer))
    np.testing.assert_allclose(high_tau.raw[:2], [(-0.5 - 0.25) / 2, -0.1])  # no gate open: mean log-prob


def test_pmi_scores_every_generated_token_including_the_stop_token():
    """An answer's text is cut before its stop string while its log-probs include the stop token: the question-free
    score is taken on the decoded tokens, so the two align (on SmolLM2 the text alone misaligned 9 of 12 answers)."""
    greedy = generations_from([["Paris"]], logprobs=[[[-0.5, -0.25]]], token_ids=[[[7, 9]]])
    scorer = QuestionFreeScorer({"Paris\n": [-2.0, -1.0]})
    decoded = {(7, 9): "Paris\n"}
    bundle = Bundle(
        greedy, examples=[Example("q")], score_fn=scorer, decode_fn=lambda ids: decoded[tuple(ids)]
    )
    result = get_estimator("mean_pmi")(bundle)
    np.testing.assert_allclose(result.raw, [((-0.5 + 2.0) + (-0.25 + 1.0)) / 2])
    assert scorer.calls == [(NEUTRAL_PROMPT, "Paris\n")]
