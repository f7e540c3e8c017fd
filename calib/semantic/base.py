"""What every semantic-equivalence backend returns, and the de-duplication they share.

A backend compares, for each question, a list of M answers (the runner passes the greedy answer followed by the K
samples) and returns a `Comparison`: a directional similarity a(s_i, s_j) in [0, 1] (row i is the premise, column j
the hypothesis for NLI) and a symmetric boolean equivalence. Identical strings are compared once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

ScoreFn = Callable[[list[str], list[str]], list[np.ndarray]]
"""Teacher-forced scoring: (prompts, continuations) -> per-token natural-log probabilities of each continuation."""


@dataclass(frozen=True)
class Comparison:
    """Pairwise judgement of M answers to one question."""

    similarity: np.ndarray  # float32 [M, M], a(s_i, s_j) in [0, 1], diagonal 1
    equivalent: np.ndarray  # bool [M, M], symmetric, diagonal True

    def __post_init__(self) -> None:
        m = self.similarity.shape[0]
        if self.similarity.shape != (m, m) or self.equivalent.shape != (m, m):
            raise ValueError(
                f"similarity {self.similarity.shape} and equivalent {self.equivalent.shape} must be [M, M]"
            )

    def subset(self, index: np.ndarray | slice) -> Comparison:
        """The comparison restricted to some answers (e.g. the samples without the greedy answer)."""
        idx = np.arange(self.similarity.shape[0])[index]
        return Comparison(self.similarity[np.ix_(idx, idx)], self.equivalent[np.ix_(idx, idx)])


@runtime_checkable
class SemanticBackend(Protocol):
    """Decides which answers mean the same thing; `pair_similarity` serves token/sentence relevance (SAR)."""

    name: str

    def compare(self, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[Comparison]: ...

    def pair_similarity(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray: ...


def unique_with_inverse(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct strings in order of first appearance and, for each input, the index of its distinct string."""
    position: dict[str, int] = {}
    inverse = np.empty(len(texts), dtype=np.int64)
    for n, text in enumerate(texts):
        inverse[n] = position.setdefault(text, len(position))
    return list(position), inverse


def expand(matrix: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """Blow a matrix over distinct strings back up to one over all answers."""
    return matrix[np.ix_(inverse, inverse)]


def finish(similarity: np.ndarray, equivalent: np.ndarray, inverse: np.ndarray) -> Comparison:
    """Expand distinct-string matrices, force the diagonal (an answer is itself) and symmetric equivalence."""
    similarity = np.clip(np.array(similarity, dtype=np.float32), 0.0, 1.0)
    equivalent = np.array(equivalent, dtype=bool)
    np.fill_diagonal(similarity, 1.0)  # identical strings are equivalent and fully similar
    np.fill_diagonal(equivalent, True)
    equivalent &= equivalent.T
    return Comparison(expand(similarity, inverse), expand(equivalent, inverse))
