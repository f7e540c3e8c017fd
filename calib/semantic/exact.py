"""Exact-match equivalence: two answers mean the same when their normalised strings are equal (SQuAD-style)."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

from calib.semantic.base import Comparison, finish, unique_with_inverse

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and English articles, collapse whitespace (the SQuAD normalisation)."""
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


class ExactMatch:
    """Equivalent iff normalised strings are equal; similarity is that indicator (so graph measures count clusters)."""

    name = "exact"

    def compare(self, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[Comparison]:
        out = []
        for group in answers:
            keys, inverse = unique_with_inverse([normalize_answer(a) for a in group])
            same = np.eye(len(keys), dtype=bool)  # distinct normalised strings are never equal
            out.append(finish(same.astype(np.float32), same, inverse))
        return out

    def pair_similarity(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        return np.array(
            [normalize_answer(a) == normalize_answer(b) for a, b in zip(first, second)], dtype=np.float32
        )
