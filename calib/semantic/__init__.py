"""Semantic equivalence of answers (exact, embedding, NLI, LLM judge) and jitted clustering."""

from __future__ import annotations

from typing import Any

from calib.errors import CalibError
from calib.semantic.base import Comparison, ScoreFn, SemanticBackend, unique_with_inverse
from calib.semantic.clustering import cluster, cluster_batch, pad_stack, representatives
from calib.semantic.embedding import EmbeddingSimilarity
from calib.semantic.exact import ExactMatch, normalize_answer
from calib.semantic.judge import LLMJudge, binary_choice_probability
from calib.semantic.nli import NLIEquivalence

BACKENDS = {"exact": ExactMatch, "embedding": EmbeddingSimilarity, "nli": NLIEquivalence, "judge": LLMJudge}


def get_backend(name: str, **options: Any) -> SemanticBackend:
    """A backend by name ("exact", "embedding", "nli", "judge") with its options (e.g. model=, threshold=)."""
    if name not in BACKENDS:
        raise CalibError(f"unknown semantic backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](**options)


__all__ = [
    "BACKENDS",
    "Comparison",
    "EmbeddingSimilarity",
    "ExactMatch",
    "LLMJudge",
    "NLIEquivalence",
    "ScoreFn",
    "SemanticBackend",
    "binary_choice_probability",
    "cluster",
    "cluster_batch",
    "get_backend",
    "normalize_answer",
    "pad_stack",
    "representatives",
    "unique_with_inverse",
]
