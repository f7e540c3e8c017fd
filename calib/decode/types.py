"""What decoding takes and returns: the sampling settings, and ragged per-prompt, per-sample answers with their
token statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens in one decode pass: the one type for the sampling settings. Its fields are generate()'s and
    revise()'s keyword arguments of the same names (they build one from them); the generate stage keeps one in its
    DecodingSpec (calib.pipeline.generation), built from the `decoding` config. The decode loop compiles only what
    changes its program (session.SamplingSpec.of); the rest becomes per-row arrays and stop criteria."""

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: tuple[str, ...] = ("\n",)
    top_logprobs: int = 5


# The fields of Generations that hold one entry per (prompt, sample): [i][k].
SAMPLE_FIELDS = (
    "texts",
    "token_ids",
    "token_logprobs",
    "sample_logprobs",
    "token_entropies",
    "top_ids",
    "top_logprobs",
    "stop_reasons",
)


@dataclass
class Generations:
    """Answers for N prompts x K samples. Every per-token array of sample (i, k) has length `lengths[i][k]`.

    Log-probs are natural-log; `token_logprobs` are under the untempered model distribution (what estimators use),
    `sample_logprobs` under the distribution actually sampled from (temperature / top-k / top-p applied).
    """

    prompts: list[str]
    texts: list[list[str]]  # [i][k] decoded answer text (stop string removed)
    token_ids: list[list[np.ndarray]]  # [i][k] int32 [T]
    token_logprobs: list[list[np.ndarray]]  # [i][k] float32 [T]
    sample_logprobs: list[list[np.ndarray]]  # [i][k] float32 [T]
    token_entropies: list[
        list[np.ndarray]
    ]  # [i][k] float32 [T], entropy (nats) of the full untempered distribution
    top_ids: list[list[np.ndarray]]  # [i][k] int32 [T, top_k]
    top_logprobs: list[list[np.ndarray]]  # [i][k] float32 [T, top_k]
    stop_reasons: list[list[str]]  # [i][k] "stop" (a stop string), "eos", or "length"
    hidden: list[np.ndarray] = field(
        default_factory=list
    )  # [i] float32 [K, D]: final hidden state after each answer
    meta: dict = field(default_factory=dict)  # decoding settings, timings, token counts

    @property
    def num_prompts(self) -> int:
        return len(self.texts)

    @property
    def num_samples(self) -> int:
        return len(self.texts[0]) if self.texts else 0

    @property
    def lengths(self) -> list[list[int]]:
        return [[len(t) for t in row] for row in self.token_ids]

    def num_generated_tokens(self) -> int:
        return int(sum(sum(row) for row in self.lengths))

    def select(self, samples: slice) -> Generations:
        """The same prompts with only some of the samples (e.g. the first K of a larger K)."""
        return Generations(
            prompts=list(self.prompts),
            **{name: [row[samples] for row in getattr(self, name)] for name in SAMPLE_FIELDS},
            hidden=[h[samples] for h in self.hidden],
            meta=dict(self.meta),
        )

    def reorder(self, order: Sequence[int]) -> Generations:
        """The prompts in another order: prompt j of the result is prompt order[j] of this one."""
        return Generations(
            prompts=[self.prompts[i] for i in order],
            **{name: [getattr(self, name)[i] for i in order] for name in SAMPLE_FIELDS},
            hidden=[self.hidden[i] for i in order] if self.hidden else [],
            meta=dict(self.meta),
        )

    def split_greedy(self) -> tuple[Generations, Generations]:
        """(greedy answers, samples) of a generate(..., include_greedy=True) result."""
        if not self.meta.get("include_greedy"):
            raise ValueError(
                "these generations have no greedy answer: call generate(..., include_greedy=True)"
            )
        return self.select(slice(0, 1)), self.select(slice(1, None))
