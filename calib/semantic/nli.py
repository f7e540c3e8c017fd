"""NLI equivalence with any sentence-transformers `CrossEncoder` NLI model: bidirectional entailment.

Two answers are equivalent (Kuhn et al. 2023; Farquhar et al. 2024) when, judged in both directions,
- strict: both directions are entailment;
- non-strict (default, as in the reference implementation): neither direction is a contradiction and not both are
  neutral.
The directional similarity a(s_i, s_j) is the entailment probability of hypothesis s_j given premise s_i ("entail"),
or 1 - its contradiction probability ("contra"), the two affinities of Lin et al. (2023).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from calib.errors import CalibError
from calib.semantic.base import Comparison, finish, unique_with_inverse
from calib.semantic.device import check_device, resolve_device

LABELS = ("contradiction", "entailment", "neutral")
DEFAULT_LABEL_ORDER = ("contradiction", "entailment", "neutral")  # cross-encoder/nli-deberta-v3-*


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class NLIEquivalence:
    """Bidirectional-entailment equivalence from a cross-encoder with three labels."""

    name = "nli"

    def __init__(
        self,
        model: str | None = None,
        *,
        strict: bool = False,
        affinity: Literal["entail", "contra"] = "entail",
        label_order: Sequence[str] | None = DEFAULT_LABEL_ORDER,
        with_question: bool = False,
        device: str = "auto",
        batch_size: int = 64,
        cross_encoder: Any = None,
    ):
        if model is None and cross_encoder is None:
            raise CalibError(
                "nli backend: no model given; pass model=<CrossEncoder NLI name or folder>, "
                "e.g. cross-encoder/nli-deberta-v3-base"
            )
        if affinity not in ("entail", "contra"):
            raise CalibError(f"nli backend: affinity {affinity!r} is not 'entail' or 'contra'")
        self.model = model
        self.strict = strict
        self.affinity = affinity
        self.with_question = with_question
        self.device = check_device(device, "nli")  # "auto": CUDA when torch sees a GPU (device.py)
        self.batch_size = batch_size
        self._cross_encoder = cross_encoder
        self._label_order = None if label_order is None else self._check_labels(label_order)

    @staticmethod
    def _check_labels(order: Sequence[str]) -> tuple[str, ...]:
        order = tuple(str(x).lower() for x in order)
        if sorted(order) != sorted(LABELS):
            raise CalibError(f"nli backend: label_order {order} must name each of {LABELS} once")
        return order

    def check(self) -> None:
        """Load the cross-encoder now: a run checks its NLI model before it generates anything."""
        _ = self.cross_encoder

    @property
    def cross_encoder(self) -> Any:
        if self._cross_encoder is None:
            from sentence_transformers import CrossEncoder

            try:
                self._cross_encoder = CrossEncoder(self.model, device=resolve_device(self.device))
            except OSError as err:
                raise CalibError(f"nli backend: cannot load CrossEncoder {self.model!r}: {err}") from err
        return self._cross_encoder

    @property
    def label_order(self) -> tuple[str, ...]:
        """Output order of the model's three logits; read from its config's id2label when not given."""
        if self._label_order is None:
            config = getattr(self.cross_encoder, "config", None) or self.cross_encoder.model.config
            id2label = {int(k): v for k, v in config.id2label.items()}
            self._label_order = self._check_labels([id2label[i] for i in range(len(id2label))])
        return self._label_order

    def probabilities(self, premises: Sequence[str], hypotheses: Sequence[str]) -> np.ndarray:
        """[n, 3] probabilities in the order (contradiction, entailment, neutral)."""
        if not premises:
            return np.zeros((0, 3), dtype=np.float32)
        import torch

        logits = self.cross_encoder.predict(
            list(zip(premises, hypotheses)),
            batch_size=self.batch_size,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        logits = np.asarray(logits, dtype=np.float64).reshape(len(premises), -1)
        if logits.shape[1] != 3:
            raise CalibError(
                f"nli backend: model {self.model!r} has {logits.shape[1]} labels; an NLI model has 3"
            )
        order = [self.label_order.index(name) for name in LABELS]
        return _softmax(logits)[:, order].astype(np.float32)

    def _text(self, question: str, answer: str) -> str:
        return f"{question} {answer}" if self.with_question else answer

    def compare(self, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[Comparison]:
        plans, premises, hypotheses = [], [], []
        for question, group in zip(questions, answers):
            distinct, inverse = unique_with_inverse(list(group))
            pairs = [(i, j) for i in range(len(distinct)) for j in range(len(distinct)) if i != j]
            plans.append((len(distinct), inverse, pairs, len(premises)))
            premises += [self._text(question, distinct[i]) for i, _ in pairs]
            hypotheses += [self._text(question, distinct[j]) for _, j in pairs]
        probs = self.probabilities(premises, hypotheses)  # one batched call for every question
        out = []
        for m, inverse, pairs, start in plans:
            p = np.zeros((m, m, 3), dtype=np.float32)
            p[:, :, 1] = 1.0  # an answer entails itself
            for n, (i, j) in enumerate(pairs):
                p[i, j] = probs[start + n]
            out.append(finish(self._affinity(p), self._equivalent(p), inverse))
        return out

    def _affinity(self, p: np.ndarray) -> np.ndarray:
        return p[..., 1] if self.affinity == "entail" else 1.0 - p[..., 0]

    def _equivalent(self, p: np.ndarray) -> np.ndarray:
        label = p.argmax(axis=-1)  # 0 contradiction, 1 entailment, 2 neutral
        forward, backward = label, label.T
        if self.strict:
            return (forward == 1) & (backward == 1)
        no_contradiction = (forward != 0) & (backward != 0)
        return no_contradiction & ~((forward == 2) & (backward == 2))

    def pair_similarity(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """Mean affinity of the two directions."""
        both = self.probabilities(list(first) + list(second), list(second) + list(first))
        n = len(first)
        return 0.5 * (self._affinity(both[:n]) + self._affinity(both[n:]))
