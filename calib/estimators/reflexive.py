"""Reflexive estimators: the model is asked about its own answer.

- P(True) (Kadavath et al. 2022): confidence = p(" (A)") / (p(" (A)") + p(" (B)")) after a True/False prompt,
  optionally listing the model's own samples first ("brainstormed ideas").
- P(True) with sampling as LM-Polygraph's PTrueSampling (`p_true_sampling`): its own prompt listing *all* K samples
  joined by ", " and the probability of the word "True" itself after it, not normalised against "False".
- Verbalized confidence (Tian et al. 2023, two-stage): ask for a probability (numeric) or an expression of
  likelihood (linguistic); an unparsable reply is missing (NaN), never 0.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator
from calib.semantic.judge import binary_choice_probability

P_TRUE_TEMPLATE = (
    "Question: {question}\n{ideas}Proposed Answer: {answer}\n"
    "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:"
)
IDEAS_TEMPLATE = "Here are some brainstormed ideas:\n{ideas}\n"
P_TRUE_SAMPLING_TEMPLATE = (
    "Question: {q}\n Here are some ideas that were brainstormed: {s}\n Possible answer:{a}\n "
    "Is the possible answer:\n (A) True\n (B) False\n The possible answer is:"
)  # LM-Polygraph 0.7.0's SamplingPromptCalculator, spaces and all

NUMERIC_TEMPLATE = (
    "Question: {question}\nProposed answer: {answer}\n"
    "What is the probability that the proposed answer is correct? Reply with a number between 0.0 and 1.0.\n"
    "Probability:"
)
LINGUISTIC_TEMPLATE = (
    "Question: {question}\nProposed answer: {answer}\n"
    "How likely is the proposed answer to be correct? Reply with one of: certain, almost certain, probable, "
    "chances about even, probably not, almost certainly not, impossible.\n"
    "Likelihood:"
)

# Sherman Kent's "Words of Estimative Probability" (1964): the seven bands and their synonyms from his table.
LINGUISTIC_SCALE: dict[str, float] = {
    "certain": 1.0,
    "almost certain": 0.93,
    "virtually certain": 0.93,
    "highly likely": 0.93,
    "highly probable": 0.93,
    "very likely": 0.93,
    "probable": 0.75,
    "probably": 0.75,
    "likely": 0.75,
    "chances are good": 0.75,
    "chances about even": 0.5,
    "about even": 0.5,
    "even chance": 0.5,
    "fifty-fifty": 0.5,
    "better than even": 0.5,
    "less than even": 0.5,
    "probably not": 0.3,
    "not likely": 0.3,
    "unlikely": 0.3,
    "improbable": 0.3,
    "doubtful": 0.3,
    "we doubt": 0.3,
    "almost certainly not": 0.07,
    "highly unlikely": 0.07,
    "very unlikely": 0.07,
    "highly doubtful": 0.07,
    "almost impossible": 0.07,
    "virtually impossible": 0.07,
    "little chance": 0.07,
    "almost no chance": 0.07,
    "slight chance": 0.07,
    "impossible": 0.0,
}
_PHRASES = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, LINGUISTIC_SCALE), key=len, reverse=True)) + r")\b"
)
_NUMBER = re.compile(
    r"(?P<neg>-\s*)?(?P<num>\d+(?:\.\d+)?|\.\d+)\s*(?:(?P<pct>%|percent\b|per cent\b)|(?:/|out of)\s*(?P<den>\d+(?:\.\d+)?))?"
)


def parse_probability(text: str) -> float:
    """The first number in `text` read as a probability: 0.8, .8, 80%, 80 percent, 8/10, 8 out of 10, and bare
    numbers in (1, 100] as percent. Anything else (no number, negative, above 100%) -> NaN."""
    match = _NUMBER.search(text.lower())
    if match is None or match.group("neg"):
        return float("nan")
    value = float(match.group("num"))
    if match.group("den") is not None:
        denominator = float(match.group("den"))
        value = value / denominator if denominator > 0 else float("nan")
    elif match.group("pct") or value > 1.0:
        value /= 100.0
    return value if 0.0 <= value <= 1.0 else float("nan")


def parse_linguistic(text: str) -> float:
    """The earliest expression of the scale in `text` (longest wins at a tie) mapped to its probability; else NaN."""
    match = _PHRASES.search(text.lower().replace("’", "'"))
    return LINGUISTIC_SCALE[match.group(1)] if match else float("nan")


def p_true_prompt(question: str, answer: str, ideas: Sequence[str] | None = None) -> str:
    listed = IDEAS_TEMPLATE.format(ideas="\n".join(s.strip() for s in ideas)) if ideas else ""
    return P_TRUE_TEMPLATE.format(question=question, ideas=listed, answer=answer.strip())


def p_true(
    bundle: Bundle,
    items: Sequence[tuple[int, str]],
    *,
    brainstorm: int = 0,
    true: str = " (A)",
    false: str = " (B)",
) -> np.ndarray:
    """P(True) of each (question index, answer); `brainstorm` > 0 lists that many of the question's samples first.

    Goes through `bundle.score`, so repeated (prompt, answer) pairs cost one model call for the whole run.
    """
    prompts = [
        bundle.wrap_prompt(
            p_true_prompt(
                bundle.questions[i], answer, bundle.sample_texts[i][:brainstorm] if brainstorm else None
            )
        )
        for i, answer in items
    ]
    return binary_choice_probability(bundle.score, prompts, true, false)


@register_estimator
class PTrue:
    """P(True) of the greedy answer; `brainstorm=5` lists five of the model's own samples in the prompt."""

    name = "p_true"

    def __init__(self, brainstorm: int = 0, true: str = " (A)", false: str = " (B)"):
        self.brainstorm, self.true, self.false = int(brainstorm), true, false
        self.name = "p_true_brainstorm" if self.brainstorm else "p_true"
        needs = {Need.GREEDY, Need.QUESTIONS}
        # plain P(True) may come from a generations file (bundle.given_p_true); the brainstorm form always scores
        self.needs = frozenset(
            needs | {Need.SAMPLES, Need.SCORE} if self.brainstorm else needs | {Need.P_TRUE}
        )

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        if bundle.given_p_true is not None and not self.brainstorm:
            p = np.asarray(bundle.given_p_true, dtype=np.float64)
            return EstimatorResult(confidence=p, raw=p, higher_raw_means="confident")
        items = list(enumerate(bundle.greedy_texts))
        p = p_true(bundle, items, brainstorm=self.brainstorm, true=self.true, false=self.false)
        return EstimatorResult(confidence=p, raw=p, higher_raw_means="confident")


@register_estimator
class PTrueBrainstorm(PTrue):
    name = "p_true_brainstorm"

    def __init__(self, brainstorm: int = 5, true: str = " (A)", false: str = " (B)"):
        super().__init__(brainstorm, true, false)


@register_estimator
class PTrueSampling:
    """p("True" | LM-Polygraph's brainstorm prompt) for the greedy answer, all K samples listed; confidence that
    probability, raw its log. Differs from `p_true_brainstorm` (Kadavath et al.'s form: five samples one per line,
    p(A) / (p(A) + p(B))). LM-Polygraph formats the prompt with the whole model input; here with the question."""

    name = "p_true_sampling"
    needs = frozenset({Need.GREEDY, Need.SAMPLES, Need.QUESTIONS, Need.SCORE})

    def __init__(self, true: str = "True"):
        self.true = true

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        prompts = [
            bundle.wrap_prompt(P_TRUE_SAMPLING_TEMPLATE.format(q=q, s=", ".join(samples), a=answer))
            for q, samples, answer in zip(bundle.questions, bundle.sample_texts, bundle.greedy_texts)
        ]
        log_p = np.array(
            [np.sum(lp) for lp in bundle.score(prompts, [self.true] * len(prompts))], dtype=np.float64
        )
        return EstimatorResult(
            confidence=np.clip(np.exp(log_p), 0.0, 1.0), raw=log_p, higher_raw_means="confident"
        )


@register_estimator
class VerbalizedConfidence:
    """Ask the model for its confidence in the greedy answer and parse the reply (numeric or linguistic)."""

    name = "verbalized"
    needs = frozenset({Need.GREEDY, Need.QUESTIONS, Need.GENERATE})

    def __init__(self, scale: str = "numeric", max_new_tokens: int = 12, template: str | None = None):
        if scale not in ("numeric", "linguistic"):
            raise CalibError(f"verbalized: scale {scale!r} is not 'numeric' or 'linguistic'")
        self.scale = scale
        self.name = "verbalized" if scale == "numeric" else "verbalized_linguistic"
        self.max_new_tokens = max_new_tokens
        self.template = template or (NUMERIC_TEMPLATE if scale == "numeric" else LINGUISTIC_TEMPLATE)

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        prompts = [
            bundle.wrap_prompt(self.template.format(question=q, answer=a.strip()))
            for q, a in zip(bundle.questions, bundle.greedy_texts)
        ]
        parse = parse_probability if self.scale == "numeric" else parse_linguistic
        value = np.array(
            [parse(text) for text in bundle.generate(prompts, self.max_new_tokens)], dtype=np.float64
        )
        return EstimatorResult(confidence=value, raw=value, higher_raw_means="confident")


@register_estimator
class VerbalizedLinguistic(VerbalizedConfidence):
    name = "verbalized_linguistic"

    def __init__(self, max_new_tokens: int = 12, template: str | None = None):
        super().__init__("linguistic", max_new_tokens, template)
