"""The estimator contract: what an estimator needs, what it returns, and the check run before any expensive work.

An estimator is any object with a `name`, a frozenset `needs` of `Need` members, and `__call__(bundle)` returning an
`EstimatorResult`. Confidence convention: a number in [0, 1], higher = more confident the answer is correct; NaN marks
a missing value (e.g. an unparsable verbalized confidence), never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from calib.errors import CalibError

if TYPE_CHECKING:
    from calib.estimators.bundle import Bundle


class Need(Enum):
    """What an estimator reads from the bundle. value: (short name, what it is, how a run provides it)."""

    GREEDY = ("greedy", "the greedy answer text", "run greedy decoding")
    GREEDY_TOKENS = (
        "greedy_tokens",
        "token log-probs and entropies of the greedy answer",
        "give the bundle greedy Generations with token_logprobs (calib.decode.generate records them)",
    )
    SAMPLES = ("samples", "K >= 2 sampled answers per question", "set decoding.num_samples to 2 or more")
    SAMPLE_TOKENS = (
        "sample_tokens",
        "token log-probs of the sampled answers",
        "give the bundle sampled Generations with token_logprobs (calib.decode.generate records them)",
    )
    HIDDEN = (
        "hidden",
        "final hidden states of the answers",
        "give the bundle Generations with hidden states (calib.decode.generate records them)",
    )
    DISTRIBUTION = (
        "distribution",
        "whole-vocabulary statistics at each greedy-answer token (Rényi, Fisher–Rao, self-certainty, boosted prob.)",
        "load a model (the bundle scores the greedy answers teacher-forced, calib.decode.score_distribution)",
    )
    ATTENTION = (
        "attention",
        "attention weights over prompt + greedy answer (self-attention diagonal and last row, every layer and head)",
        "load a model (the bundle runs one teacher-forced pass per greedy answer)",
    )
    QUESTIONS = ("questions", "the task's question texts", "pass the task examples to the bundle")
    SEMANTIC = (
        "semantic",
        "similarity matrices and clusters of the samples",
        "sample K >= 2 answers and choose a semantic backend",
    )
    SCORE = ("score", "teacher-forced scoring calls to the model", "load a model (score_fn)")
    P_TRUE = (
        "p_true",
        "P(True) of the greedy answer",
        "load a model (score_fn), or give `p_true` for every question in the generations file",
    )
    GENERATE = ("generate", "extra generation calls to the model", "load a model (generate_fn)")
    DECODE = ("decode", "the tokenizer's decode of token ids", "load a model (decode_fn)")
    PASSES = ("passes", "two or more revise passes", "set revise passes to 2 or more")
    TRAINED = (
        "trained",
        "a trained probe or LoRA adapter (calib.tuning)",
        "train one with `calib experiment=calibration_tuning` and pass its folder as the estimator's path",
    )

    @property
    def label(self) -> str:
        return self.value[0]

    @property
    def description(self) -> str:
        return self.value[1]

    @property
    def fix(self) -> str:
        return self.value[2]


Direction = Literal["confident", "uncertain"]


@dataclass(frozen=True)
class EstimatorResult:
    """Per-question confidence in [0, 1] (NaN = missing) and the estimator's raw score in its own units."""

    confidence: np.ndarray  # float [N]
    raw: np.ndarray  # float [N]
    higher_raw_means: Direction

    def __post_init__(self) -> None:
        confidence = np.asarray(self.confidence, dtype=np.float64)
        raw = np.asarray(self.raw, dtype=np.float64)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "raw", raw)
        if confidence.ndim != 1 or raw.shape != confidence.shape:
            raise ValueError(f"confidence {confidence.shape} and raw {raw.shape} must both be [N]")
        finite = confidence[~np.isnan(confidence)]
        if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
            raise ValueError(f"confidence outside [0, 1]: min {finite.min()}, max {finite.max()}")
        if self.higher_raw_means not in ("confident", "uncertain"):
            raise ValueError(f"higher_raw_means {self.higher_raw_means!r} is not 'confident' or 'uncertain'")


@runtime_checkable
class Estimator(Protocol):
    """Anything with a name, declared needs and a call from bundle to result."""

    name: str
    needs: frozenset[Need]

    def __call__(self, bundle: Bundle) -> EstimatorResult: ...


# Documented monotone maps from an uncertainty to a confidence in [0, 1].
def confidence_from_entropy(entropy: np.ndarray) -> np.ndarray:
    """exp(-H) for an entropy H in nats: 1 / (effective number of alternatives). One certain option -> 1,
    C equally likely options -> 1/C."""
    return np.exp(-np.maximum(np.asarray(entropy, dtype=np.float64), 0.0))


def confidence_from_count(count: np.ndarray) -> np.ndarray:
    """1 / U for a count-like uncertainty U >= 1 (number of semantic sets, EigV): one set -> 1, C sets -> 1/C."""
    return 1.0 / np.maximum(np.asarray(count, dtype=np.float64), 1.0)


def confidence_from_neg_log(score: np.ndarray) -> np.ndarray:
    """sigmoid(-E) for E = -log x with x >= 0 unbounded (SAR): x / (1 + x)."""
    return 1.0 / (1.0 + np.exp(np.asarray(score, dtype=np.float64)))


def available_needs(
    *,
    num_samples: int,
    has_model: bool,
    has_questions: bool = True,
    has_token_stats: bool = True,
    has_hidden: bool = False,
    num_passes: int = 1,
) -> frozenset[Need]:
    """The needs a run will be able to satisfy, known from its configuration before anything is generated."""
    needs = {Need.GREEDY}
    if has_token_stats:
        needs.add(Need.GREEDY_TOKENS)
    if num_samples >= 2:
        needs |= {Need.SAMPLES, Need.SEMANTIC}
        if has_token_stats:
            needs.add(Need.SAMPLE_TOKENS)
    if has_hidden:
        needs.add(Need.HIDDEN)
    if has_questions:
        needs.add(Need.QUESTIONS)
    if has_model:
        needs |= {Need.SCORE, Need.GENERATE, Need.DECODE, Need.DISTRIBUTION, Need.ATTENTION, Need.P_TRUE}
    if num_passes >= 2:
        needs.add(Need.PASSES)
    return frozenset(needs)


def check_needs(estimators: Iterable[Estimator], available: Iterable[Need]) -> None:
    """Raise one CalibError listing every (estimator, need) pair the run cannot satisfy; call before generating."""
    have = set(available)
    problems = []
    for estimator in estimators:
        for need in sorted(set(estimator.needs) - have, key=lambda n: n.label):
            problems.append(
                f"estimator {estimator.name!r} needs {need.label} ({need.description}), which this run does not "
                f"provide: {need.fix}, or drop the estimator"
            )
    if problems:
        raise CalibError("; ".join(problems))
