"""Graders: is a model's answer one of the example's valid answers?

Every grader returns `Grade(correct, score, matched)`: correct in {0, 1}, a soft score in [0, 1] (token F1, or the
judge's probability), and the canonical valid answer it matched (the entity's first alias) or None.

Methods: "exact" (SQuAD-normalised exact match against any alias, the closed-question default), "set" (the same
against every valid answer of an open-ended question, its default), "f1" (token F1 >= threshold), "numeric"
(number equality with tolerance, thousands separators understood), "choice" (multiple-choice letter or text),
"judge" (an NLI or LLM judge for free-form answers). `containment=True` also accepts answers that contain a valid
answer ("Canberra, Australia").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example
from calib.tasks.normalize import compact, contains_tokens, normalize_answer, parse_number, token_f1

METHODS = ("exact", "set", "f1", "numeric", "choice", "judge")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_EXPLANATION = re.compile(
    r"\s+(?:is|are|was|were|because|since|which|who|as it|as this)\b|\s[-–—]\s|\s*\(|;\s|:\s", re.IGNORECASE
)
_TAIL = re.compile(r"\b(?:is|are|was|answer:)\s+(?P<tail>[^.]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class Grade:
    correct: float  # 0.0 or 1.0
    score: float  # soft score in [0, 1]
    matched: str | None  # canonical valid answer that matched, if any
    method: str = "exact"


def answer_candidates(answer: str) -> list[str]:
    """Readings of an answer to try, most literal first: the whole text, its first line, first sentence, the part
    before an explanation ('Canberra, because ...'), and the tail of 'The capital is Canberra'."""
    text = str(answer).strip()
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    sentence = _SENTENCE_END.split(first_line)[0].strip()
    head = _EXPLANATION.split(sentence)[0].strip()
    tail = _TAIL.search(sentence.rstrip(".!?"))
    found = [text, first_line, sentence, head, tail.group("tail") if tail else ""]
    return [c for c in dict.fromkeys(found) if normalize_answer(c)]


def _same(candidate: str, alias: str) -> bool:
    norm_c, norm_a = normalize_answer(candidate), normalize_answer(alias)
    return bool(norm_a) and (norm_c == norm_a or compact(candidate) == compact(alias))


def _match_text(
    answer: str, groups: Iterable[tuple[str, ...]], containment: bool
) -> tuple[str | None, float]:
    """(canonical answer of the first matching group or None, best token F1 over all aliases)."""
    groups = list(groups)
    candidates = answer_candidates(answer)
    best_f1 = max((token_f1(c, a) for c in candidates for g in groups for a in g), default=0.0)
    for candidate in candidates:
        for group in groups:
            if any(_same(candidate, alias) for alias in group):
                return group[0], 1.0
    if containment:
        for group in groups:
            if any(contains_tokens(answer, alias) for alias in group):
                return group[0], 1.0
    return None, best_f1


def _numeric(answer: str, ex: Example, pick: str, rel_tol: float, abs_tol: float) -> Grade:
    value = parse_number(answer, pick=pick)
    if value is None:
        return Grade(0.0, 0.0, None, "numeric")
    for group in ex.answer_groups:
        for alias in group:
            ref = parse_number(alias)
            if ref is not None and math.isclose(value, ref, rel_tol=rel_tol, abs_tol=abs_tol):
                return Grade(1.0, 1.0, group[0], "numeric")
    return Grade(0.0, 0.0, None, "numeric")


_LETTER = re.compile(r"^\s*\(?([A-Z])\)?(?:[.):\s]|$)|answer is:?\s*\(?([A-Z])\b\)?", re.IGNORECASE)


def _choice(answer: str, ex: Example) -> Grade:
    """Multiple choice: answers[0] is the correct letter; metadata['choices'] holds the option texts."""
    choices = list(ex.metadata.get("choices") or [])
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    correct_letter = ex.answers[0].strip().upper()
    correct_text = choices[letters.index(correct_letter)] if correct_letter in letters else None
    m = _LETTER.search(str(answer))
    if m and (m.group(1) or m.group(2)).upper() in letters:
        picked = (m.group(1) or m.group(2)).upper()
        ok = float(picked == correct_letter)
        return Grade(ok, ok, correct_letter if ok else None, "choice")
    for letter, text in zip(letters, choices):
        if any(_same(c, text) for c in answer_candidates(answer)):
            ok = float(letter == correct_letter)
            return Grade(ok, ok, correct_letter if ok else None, "choice")
    soft = (
        max((token_f1(c, correct_text) for c in answer_candidates(answer)), default=0.0)
        if correct_text
        else 0.0
    )
    return Grade(0.0, soft, None, "choice")


def default_method(ex: Example) -> str:
    """The example's own grader (metadata['grader']) or exact match / set membership by question kind."""
    return str(ex.metadata.get("grader") or ("set" if ex.open_ended else "exact"))


def grade_detail(
    ex: Example,
    answer: str,
    *,
    method: str | None = None,
    containment: bool = False,
    f1_threshold: float = 0.5,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
    numeric_pick: str | None = None,
    judge: Any = None,
    judge_threshold: float = 0.5,
) -> Grade:
    """Grade one answer to one example; see the module docstring for the methods."""
    method = method or default_method(ex)
    answer = "" if answer is None else str(answer)
    if method in ("exact", "set"):
        matched, f1 = _match_text(answer, ex.answer_groups, containment)
        return Grade(1.0 if matched else 0.0, 1.0 if matched else f1, matched, method)
    if method == "f1":
        best, best_group = 0.0, None
        for group in ex.answer_groups:
            for alias in group:
                f1 = max((token_f1(c, alias) for c in answer_candidates(answer)), default=0.0)
                if f1 > best:
                    best, best_group = f1, group[0]
        ok = best >= f1_threshold
        return Grade(float(ok), best, best_group if ok else None, "f1")
    if method == "numeric":
        pick = numeric_pick or str(ex.metadata.get("numeric_pick", "first"))
        return _numeric(answer, ex, pick, rel_tol, abs_tol)
    if method == "choice":
        return _choice(answer, ex)
    if method == "judge":
        if judge is None:
            raise CalibError(
                "grading method 'judge' needs judge=...; use calib.tasks.judge.NLIJudge or LLMJudge"
            )
        score = float(judge(ex.question, answer, ex.answers))
        if not 0.0 <= score <= 1.0:
            raise CalibError(f"judge returned {score!r}; a judge must return a probability in [0, 1]")
        ok = score >= judge_threshold
        return Grade(float(ok), score, ex.answer_groups[0][0] if ok and not ex.open_ended else None, "judge")
    raise CalibError(f"unknown grading method {method!r}; methods: {', '.join(METHODS)}")


def grade(ex: Example, answer: str, **options: Any) -> float:
    """1.0 when the answer is a valid answer of the example, else 0.0 (see grade_detail for options)."""
    return grade_detail(ex, answer, **options).correct
