"""Judges for free-form answers that string matching cannot grade (TruthfulQA, long answers).

A judge is any callable `judge(question, answer, references) -> float in [0, 1]`, the probability that the answer
is correct; `grade_detail(ex, answer, method="judge", judge=...)` thresholds it. Two are provided: an NLI judge
(bidirectional entailment with a reference, as in semantic-entropy work) and an LLM judge (asks a model yes/no).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from calib.errors import CalibError


class Judge(Protocol):
    def __call__(self, question: str, answer: str, references: Sequence[str]) -> float: ...


class NLIJudge:
    """P(correct) = max over references of the entailment probability between (question + reference) and
    (question + answer); with bidirectional=True both directions must hold (the minimum of the two)."""

    def __init__(self, model: str | Any, *, entailment_index: int | None = None, bidirectional: bool = True):
        if isinstance(model, str):
            try:
                from sentence_transformers import CrossEncoder
            except ImportError as err:  # pragma: no cover - sentence-transformers is a core dependency
                raise CalibError(
                    "NLIJudge needs sentence-transformers; pip install sentence-transformers"
                ) from err
            model = CrossEncoder(model, device="cpu")
        self.model = model
        self.bidirectional = bidirectional
        self.entailment_index = self._find_entailment(model) if entailment_index is None else entailment_index

    @staticmethod
    def _find_entailment(model: Any) -> int:
        config = getattr(model, "config", None) or getattr(getattr(model, "model", None), "config", None)
        labels = getattr(config, "id2label", None) or {}
        for index, label in labels.items():
            if "entail" in str(label).lower():
                return int(index)
        raise CalibError(
            f"NLI model labels {dict(labels)} have no 'entailment' label; pass entailment_index=... explicitly"
        )

    def _entail(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        probs = np.asarray(self.model.predict(pairs, apply_softmax=True), dtype=np.float64)
        return probs.reshape(len(pairs), -1)[:, self.entailment_index]

    def __call__(self, question: str, answer: str, references: Sequence[str]) -> float:
        if not references:
            return 0.0
        ans = f"{question} {answer}"
        refs = [f"{question} {r}" for r in references]
        forward = self._entail([(r, ans) for r in refs])
        if not self.bidirectional:
            return float(forward.max())
        backward = self._entail([(ans, r) for r in refs])
        return float(np.minimum(forward, backward).max())


LLM_JUDGE_TEMPLATE = (
    "Question: {question}\n"
    "Reference answers: {references}\n"
    "Proposed answer: {answer}\n"
    "Is the proposed answer correct, i.e. does it mean the same as one of the reference answers? "
    "Answer yes or no.\nAnswer:"
)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


class LLMJudge:
    """Asks a model (any `generate(prompt) -> str`) whether the answer matches a reference: 'yes' -> 1, 'no' -> 0.
    A `generate` that returns a float is taken as P(yes) directly (e.g. from the model's token probabilities)."""

    def __init__(self, generate: Callable[[str], Any], template: str = LLM_JUDGE_TEMPLATE):
        self.generate = generate
        self.template = template

    def prompt(self, question: str, answer: str, references: Sequence[str]) -> str:
        return self.template.format(question=question, answer=answer, references="; ".join(references))

    def __call__(self, question: str, answer: str, references: Sequence[str]) -> float:
        reply = self.generate(self.prompt(question, answer, references))
        if isinstance(reply, int | float):
            return float(reply)
        m = _YES_NO.search(str(reply))
        if m is None:
            raise CalibError(f"LLM judge replied {str(reply)[:60]!r}, not yes/no; adjust the judge template")
        return 1.0 if m.group(1).lower() == "yes" else 0.0
