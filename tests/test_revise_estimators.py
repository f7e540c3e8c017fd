"""Revision estimators on hand-built passes: values computed by hand, registry and needs, and equivalence through
the bundle's semantic backend (one comparison shared by all of them)."""

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, Need, check_needs, get_estimator, list_estimators
from calib.estimators.revision import pass_comparison
from calib.estimators.synthetic import generations_from
from calib.semantic.exact import ExactMatch

NAMES = ("revision_stability", "revision_agreement", "revision_sample_stability", "revision_final_confidence")

# Two questions, three passes; each pass: [greedy, sample 1, sample 2].
PASSES = [
    [["Paris", "Lyon", "Paris"], ["Rome", "Rome", "Milan"]],
    [["Paris", "Paris", "Paris"], ["Milan", "Rome", "Milan"]],
    [["Paris.", "Paris", "Nice"], ["Rome", "Rome", "Milan"]],
]


def bundle(passes=PASSES, logprobs=None) -> Bundle:
    gens = [generations_from(p) for p in passes]
    if logprobs is not None:
        gens[-1] = generations_from(passes[-1], logprobs=logprobs)
    final = gens[-1]
    return Bundle(final.select(slice(0, 1)), final.select(slice(1, None)), passes=gens, semantic=ExactMatch())


def test_registered_with_the_builtins_and_needing_passes():
    assert set(NAMES) <= set(list_estimators())
    for name in NAMES:
        assert Need.PASSES in get_estimator(name).needs
    one_pass = Bundle(generations_from([["a"]]), generations_from([["a", "b"]]))
    with pytest.raises(CalibError, match="needs passes"):
        check_needs([get_estimator("revision_stability")], one_pass.available())


def test_stability_is_the_share_of_earlier_passes_that_already_gave_the_final_answer():
    result = get_estimator("revision_stability")(bundle())
    # q0: final "Paris." == "Paris" (normalised) on passes 0 and 1 -> 1; q1: final "Rome": pass 0 yes, pass 1 no
    np.testing.assert_allclose(result.confidence, [1.0, 0.5])
    assert result.higher_raw_means == "confident"


def test_agreement_pools_the_samples_of_every_pass():
    result = get_estimator("revision_agreement")(bundle())
    # q0 samples: Lyon Paris | Paris Paris | Paris Nice -> 4 of 6 equal "Paris."; q1: Rome Milan | Rome Milan | Rome Milan
    np.testing.assert_allclose(result.confidence, [4 / 6, 3 / 6])


def test_sample_stability_follows_each_chain():
    result = get_estimator("revision_sample_stability")(bundle())
    # q0: chain 1 final Paris: Lyon no, Paris yes -> 1/2; chain 2 final Nice: no, no -> 0 => 1/4
    # q1: chain 1 final Rome: yes, yes -> 1; chain 2 final Milan: yes, yes -> 1 => 1
    np.testing.assert_allclose(result.confidence, [0.25, 1.0])


def test_final_confidence_reads_the_final_pass_tokens():
    logprobs = [[[-0.2, -0.4], [-0.1], [-0.3]], [[-1.0], [-0.1], [-0.1]]]
    b = bundle(logprobs=logprobs)
    np.testing.assert_allclose(get_estimator("revision_final_confidence")(b).confidence, np.exp([-0.3, -1.0]))
    np.testing.assert_allclose(
        get_estimator("revision_final_confidence", stat="msp")(b).confidence, np.exp([-0.6, -1.0])
    )
    with pytest.raises(CalibError, match="unknown stat"):
        get_estimator("revision_final_confidence", stat="median")


def test_one_backend_call_serves_every_revision_estimator():
    calls = []

    class Counting(ExactMatch):
        def compare(self, questions, answers):
            calls.append([list(a) for a in answers])
            return super().compare(questions, answers)

    gens = [generations_from(p) for p in PASSES]
    b = Bundle(
        gens[-1].select(slice(0, 1)), gens[-1].select(slice(1, None)), passes=gens, semantic=Counting()
    )
    for name in NAMES[:3]:
        get_estimator(name)(b)
    assert len(calls) == 1 and calls[0][0] == ["Paris.", *PASSES[0][0], *PASSES[1][0], *PASSES[2][0]]
    shared = pass_comparison(b)
    assert shared.index[0] == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_passes_without_samples_are_an_error_for_sample_estimators():
    greedy_only = [[[p[0][0]], [p[1][0]]] for p in PASSES]
    gens = [generations_from(p) for p in greedy_only]
    b = Bundle(gens[-1], generations_from([["x", "y"], ["x", "y"]]), passes=gens)
    with pytest.raises(CalibError, match="hold no samples"):
        get_estimator("revision_agreement")(b)
    np.testing.assert_allclose(get_estimator("revision_stability")(b).confidence, [1.0, 0.5])
