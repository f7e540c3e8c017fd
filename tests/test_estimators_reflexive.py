"""P(True) renormalisation through a fake scorer, and verbalized-confidence parsing."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, get_estimator
from calib.estimators.reflexive import parse_linguistic, parse_probability
from calib.estimators.synthetic import generations_from


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


# p(" (A)"), p(" (B)") the fake model gives each proposed answer; renormalised P(True) = pa / (pa + pb)
FAKE = {"Paris": (0.6, 0.2), "Lyon": (0.1, 0.3), "Canberra": (0.02, 0.18)}


class FakeScorer:
    def __init__(self):
        self.prompts: list[str] = []

    def __call__(self, prompts, continuations):
        out = []
        for prompt, cont in zip(prompts, continuations):
            self.prompts.append(prompt)
            answer = re.search(r"Proposed Answer: (.*)\n", prompt).group(1)
            pa, pb = FAKE[answer]
            p = {" (A)": pa, " (B)": pb}[cont]
            out.append(np.array([math.log(p) / 2, math.log(p) / 2]))  # two tokens; only the sum matters
        return out


def _bundle(answers, samples=None, **kw):
    examples = [Example(f"question {i}?") for i in range(len(answers))]
    greedy = generations_from([[a] for a in answers])
    return Bundle(greedy, samples, examples, **kw)


def test_p_true_is_the_renormalised_probability_of_true():
    bundle = _bundle(["Paris", "Lyon", "Canberra"], score_fn=FakeScorer())
    result = get_estimator("p_true")(bundle)
    np.testing.assert_allclose(result.confidence, [0.75, 0.25, 0.1], rtol=1e-9)


def test_p_true_brainstorm_lists_the_samples_in_the_prompt():
    scorer = FakeScorer()
    samples = generations_from([["Paris", "Lyon", "Paris"]])
    bundle = _bundle(["Paris"], samples, score_fn=scorer)
    result = get_estimator("p_true", brainstorm=2)(bundle)
    np.testing.assert_allclose(result.confidence, [0.75])
    assert "Here are some brainstormed ideas:\nParis\nLyon\nProposed Answer: Paris" in scorer.prompts[0]
    assert all(p.startswith("Question: question 0?") for p in scorer.prompts)


def test_p_true_sampling_is_lm_polygraphs_probability_of_true_after_all_samples():
    calls = []

    def scorer(prompts, continuations):
        calls.extend(zip(prompts, continuations))
        return [
            np.array([math.log(0.3), math.log(0.5)]) if "Lyon" in p else np.array([math.log(0.9)])
            for p in prompts
        ]

    samples = generations_from([["Paris", "Lyon", "Paris"], ["Rome", "Rome", "Rome"]])
    bundle = _bundle(["Paris", "Rome"], samples, score_fn=scorer, wrap_prompt=lambda p: f"<{p}>")
    result = get_estimator("p_true_sampling")(bundle)
    np.testing.assert_allclose(
        result.confidence, [0.3 * 0.5, 0.9]
    )  # p("True"), not renormalised against False
    np.testing.assert_allclose(result.raw, np.log([0.15, 0.9]))
    assert calls[0] == (
        "<Question: question 0?\n Here are some ideas that were brainstormed: Paris, Lyon, Paris\n Possible answer:Paris"
        "\n Is the possible answer:\n (A) True\n (B) False\n The possible answer is:>",
        "True",
    )


def test_p_true_prompt_goes_through_wrap_prompt():
    scorer = FakeScorer()
    bundle = _bundle(["Paris"], score_fn=scorer, wrap_prompt=lambda p: f"<user>{p}</user>")
    get_estimator("p_true")(bundle)
    assert scorer.prompts[0].startswith("<user>Question:") and scorer.prompts[0].endswith("</user>")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 0.85", 0.85),
        ("0.7.", 0.7),
        (" .3", 0.3),
        ("85%", 0.85),
        ("I'd say 90 percent sure", 0.9),
        ("8/10", 0.8),
        ("7 out of 10", 0.7),
        ("95", 0.95),
        ("1", 1.0),
        ("0", 0.0),
        ("Probability: 0.25 (low)", 0.25),
    ],
)
def test_numeric_replies_parse(text, expected):
    assert parse_probability(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "I am not sure", "high", "-0.4", "150", "250%", "3/0"])
def test_unparsable_numeric_replies_are_missing(text):
    assert math.isnan(parse_probability(text))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Almost certain.", 0.93),
        ("probably not", 0.3),
        ("Probable", 0.75),
        ("it is highly likely", 0.93),
        ("Chances about even", 0.5),
        ("almost certainly not", 0.07),
        ("Certain", 1.0),
        ("unlikely", 0.3),
        ("impossible", 0.0),
    ],
)
def test_linguistic_replies_map_to_the_scale(text, expected):
    assert parse_linguistic(text) == pytest.approx(expected)


def test_linguistic_does_not_match_inside_words():
    assert math.isnan(parse_linguistic("I am uncertain"))
    assert math.isnan(parse_linguistic("no idea"))


def test_verbalized_estimator_parses_each_reply_and_marks_garbage_missing():
    replies = {"Paris": " 0.9", "Lyon": " no idea", "Canberra": " 40%"}
    seen = []

    def generate_fn(prompts, max_new_tokens):
        seen.append(max_new_tokens)
        return [replies[re.search(r"Proposed answer: (.*)\n", p).group(1)] for p in prompts]

    bundle = _bundle(["Paris", "Lyon", "Canberra"], generate_fn=generate_fn)
    result = get_estimator("verbalized")(bundle)
    np.testing.assert_allclose(result.confidence, [0.9, np.nan, 0.4])
    assert seen == [12]
    get_estimator("verbalized")(bundle)
    assert seen == [12]  # the second run is served from the bundle's generation cache


def test_verbalized_linguistic_asks_for_the_scale():
    prompts = []

    def generate_fn(batch, max_new_tokens):
        prompts.extend(batch)
        return [" probable"] * len(batch)

    result = get_estimator("verbalized_linguistic")(_bundle(["Paris"], generate_fn=generate_fn))
    np.testing.assert_allclose(result.confidence, [0.75])
    assert "almost certainly not" in prompts[0]
    with pytest.raises(CalibError, match="scale 'words'"):
        get_estimator("verbalized", scale="words")
