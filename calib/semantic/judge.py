"""LLM-judge equivalence: the loaded model itself is asked whether two answers mean the same, in both orders.

Every model call goes through an injected `score_fn(prompts, continuations)` (teacher-forced per-token log-probs),
so the judge runs on any model the runner loads and unit tests use a fake with known outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from calib.semantic.base import Comparison, ScoreFn, finish, unique_with_inverse

JUDGE_TEMPLATE = (
    "Question: {question}\n"
    "Answer 1: {first}\n"
    "Answer 2: {second}\n"
    "Do Answer 1 and Answer 2 mean the same thing as answers to the question? Reply Yes or No.\n"
    "Reply:"
)


def binary_choice_probability(
    score_fn: ScoreFn, prompts: Sequence[str], yes: str, no: str, batch_size: int = 256
) -> np.ndarray:
    """p(yes) / (p(yes) + p(no)) per prompt, from the summed token log-probs of the two continuations.

    Computed as sigmoid(log p(yes) - log p(no)), which is the same ratio without underflow.
    Each prompt's two continuations are adjacent in the call, so a scorer that works through it in chunks (the
    runner scores 256 pairs at a time) still encodes the prompt once for both.
    """
    prompts = list(prompts)
    out = np.empty(len(prompts), dtype=np.float64)
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        scores = score_fn([p for p in chunk for _ in (0, 1)], [yes, no] * len(chunk))
        log_yes = np.array([float(np.sum(s)) for s in scores[0::2]])
        log_no = np.array([float(np.sum(s)) for s in scores[1::2]])
        out[start : start + len(chunk)] = 1.0 / (1.0 + np.exp(log_no - log_yes))
    return out


class LLMJudge:
    """a(s_i, s_j) = p(Yes) asked with s_i first; equivalent iff p(Yes) >= threshold in both orders."""

    name = "judge"

    def __init__(
        self,
        score_fn: ScoreFn,
        *,
        template: str = JUDGE_TEMPLATE,
        yes: str = " Yes",
        no: str = " No",
        threshold: float = 0.5,
        wrap_prompt: Callable[[str], str] | None = None,
    ):
        self.score_fn = score_fn
        self.template = template
        self.yes, self.no = yes, no
        self.threshold = threshold
        self.wrap_prompt = wrap_prompt or (lambda prompt: prompt)

    def _prompt(self, question: str, first: str, second: str) -> str:
        return self.wrap_prompt(self.template.format(question=question, first=first, second=second))

    def compare(self, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[Comparison]:
        plans, prompts = [], []
        for question, group in zip(questions, answers):
            distinct, inverse = unique_with_inverse(list(group))
            pairs = [(i, j) for i in range(len(distinct)) for j in range(len(distinct)) if i != j]
            plans.append((len(distinct), inverse, pairs, len(prompts)))
            prompts += [self._prompt(question, distinct[i], distinct[j]) for i, j in pairs]
        p_same = binary_choice_probability(self.score_fn, prompts, self.yes, self.no)
        out = []
        for m, inverse, pairs, start in plans:
            sim = np.eye(m, dtype=np.float64)
            for n, (i, j) in enumerate(pairs):
                sim[i, j] = p_same[start + n]
            same = sim >= self.threshold
            out.append(finish(sim, same & same.T, inverse))
        return out

    def pair_similarity(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        """Mean p(Yes) of the two orders, asked without a question."""
        prompts = [self._prompt("(none)", a, b) for a, b in zip(first, second)]
        prompts += [self._prompt("(none)", b, a) for a, b in zip(first, second)]
        p = binary_choice_probability(self.score_fn, prompts, self.yes, self.no)
        return (0.5 * (p[: len(first)] + p[len(first) :])).astype(np.float32)
