"""Graders: is a model's answer one of the example's valid answers?

Every grader returns `Grade(correct, score, matched, method, entity)`: correct in {0, 1}, a soft score in [0, 1]
(token F1, or the judge's probability), the valid answer (alias) that matched or None, and that entity's canonical
name (its first alias).

Methods: "exact" (SQuAD-normalised exact match against any alias, the closed-question default), "set" (the same
against every valid answer of an open-ended question, its default), "f1" (token F1 >= threshold), "numeric"
(number equality with tolerance, thousands separators understood), "choice" (multiple-choice letter or text),
"judge" (an NLI or LLM judge for free-form answers). `containment=True` also accepts answers that contain a valid
answer ("Canberra, Australia").

An answer is what the model answered, not any phrase near "is": "The answer is: Canberra", "It's Canberra" and
"The capital is Canberra" read as Canberra; "Canberra is wrong", "Sydney. Canberra is a common mistake", "Sydney or
Canberra" and "Canberra (or Sydney)" are not Canberra. Numbers match across digits and words ("1" = "one").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example
from calib.tasks.normalize import (
    compact,
    contains_tokens,
    normalize_answer,
    number_value,
    parse_number,
    token_f1,
    tokens,
)

METHODS = ("exact", "set", "f1", "numeric", "choice", "judge")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# where an explanation starts after a bare answer: 'Canberra, because ...', 'Canberra (since 1913)', 'X - chosen'
_EXPLANATION = re.compile(
    r"\s+(?:because|since|which|who|as it|as this)\b|\s[-–—]\s|\s*\(|;\s|:\s|,\s+(?=(?:and|but|so|as|not)\b)",
    re.IGNORECASE,
)
_COPULA = re.compile(r"\s+(?:is|are|was|were|would be|will be)\s+", re.IGNORECASE)
# 'The answer is: X', 'Answer: X', 'My final answer is X', 'I think it's X', 'It is X'
_LEAD_IN = re.compile(
    r"^(?:(?:so|well|ok|okay)[,\s]+)?(?:(?:i\s+(?:think|believe|guess|would say)|probably|perhaps)[,\s]+)?"
    r"(?:(?:(?:the|my|our)\s+)?(?:(?:final|correct|right|short|best)\s+)*(?:answer|guess)"
    r"(?:\s*(?:is|would be|=)\s*:?|\s*:)|a\s*:"
    r"|(?:it|that|this)(?:\s+(?:is|was|would be|must be)|[’']s)(?:\s+(?:called|known\s+as|named))?)\s*",
    re.IGNORECASE,
)
# the answer is disowned: 'Canberra is wrong', 'Canberra is a common mistake', 'Canberra (incorrect)'
_NEGATION = re.compile(
    r"\b(?:not|no|never|wrong|incorrect|false|untrue|inaccurate|mistakes?|mistaken|misconceptions?|myths?|"
    r"errors?|erroneous)\b|n[’']t\b",
    re.IGNORECASE,
)
# several candidates offered: 'Sydney or Canberra', 'Canberra (or Sydney)', 'Canberra. Maybe Sydney.'
_HEDGE = re.compile(r"\b(?:or|either|nor|maybe|perhaps|possibly|alternatively)\b|/", re.IGNORECASE)
_RETRACTION = re.compile(
    r"^\W*(?:or|either|nor|maybe|perhaps|possibly|alternatively|no|wait|actually|sorry|oops|just kidding|"
    r"(?:that|this|it)(?:\s+is|[’']s)\s+(?:not|wrong|incorrect|false|a\s+(?:common\s+)?mistake))\b",
    re.IGNORECASE,
)
# words that affirm the subject is the answer: 'Canberra is correct', 'Canberra is the answer'
_AFFIRMATION = {
    "correct",
    "right",
    "answer",
    "true",
    "one",
    "it",
    "my",
    "final",
    "guess",
    "best",
    "i",
    "think",
}
# a subject that names no answer of its own: 'It is Canberra', 'The answer was Canberra'
_PRONOUNS = {"it", "that", "this", "he", "she", "they", "answer", "correct", "right", "final", "my", "one"}
_STOPWORDS = {
    "what", "which", "who", "whom", "whose", "where", "when", "why", "how", "is", "are", "was", "were", "be",
    "of", "in", "on", "at", "to", "for", "by", "with", "from", "and", "does", "do", "did", "name", "called",
    "known", "as", "its", "their", "his", "her", "this", "that", "there", "has", "have", "had", "s",
}  # fmt: skip


@dataclass(frozen=True)
class Grade:
    correct: float  # 0.0 or 1.0
    score: float  # soft score in [0, 1]
    matched: str | None  # the valid answer (alias) that matched, if any
    method: str = "exact"
    entity: str | None = None  # the matched entity's canonical name (its first alias): which entity, for sets


def _content(text: str) -> set[str]:
    return {t for t in tokens(text) if t not in _STOPWORDS}


def _restates(phrase: str, question: str | None, extra: set[str]) -> bool:
    """The phrase names no answer of its own: a pronoun or 'the answer', or words taken from the question
    ('The capital of Australia', 'the capital'), possibly with affirmations ('correct')."""
    words = _content(phrase)
    if not words:
        return True
    if words <= extra:
        return True
    return (
        bool(question) and bool(words & _content(question)) and len(words - _content(question) - extra) <= 1
    )


def _readings(sentence: str, question: str | None) -> list[str]:
    """Readings of one sentence, literal first; a reading is dropped when the words after it disown it or offer
    another candidate ('Canberra is wrong', 'Canberra (or Sydney)')."""
    found = [sentence]
    lead = _LEAD_IN.match(sentence)
    if lead and lead.end() < len(sentence):
        sentence = sentence[lead.end() :].strip()
        found.append(sentence)
    colon = re.match(r"^([^:]{1,60}):\s*(\S.*)$", sentence)
    if colon and _restates(colon.group(1), question, _PRONOUNS):
        found.extend(_readings(colon.group(2).strip(), question))  # 'Capital of Australia: Canberra'
    parts = _EXPLANATION.split(sentence, maxsplit=1)
    if len(parts) == 2:
        if _RETRACTION.match(parts[1]) or _negates(parts[1]):
            return found
        sentence = parts[0].strip()
        found.append(sentence)
    place = re.match(r"^([^,]+),\s*([^,]+)$", sentence)
    if place and question and _content(place.group(2)) and _content(place.group(2)) <= _content(question):
        found.append(place.group(1).strip())  # 'Canberra, Australia': the rest only repeats the question
    copula = _COPULA.search(sentence)
    if copula:
        subject, predicate = sentence[: copula.start()].strip(), sentence[copula.end() :].strip()
        clause = re.split(r",", predicate, maxsplit=1)[0]
        if not (_NEGATION.search(clause) or _HEDGE.search(clause)) and _restates(
            clause, question, _AFFIRMATION
        ):
            found.append(subject)  # 'Canberra is the capital (of Australia)'
        if _restates(subject, question, _PRONOUNS) and not _NEGATION.match(predicate):
            found.extend(_readings(predicate, question))  # 'The capital is Canberra'
    return found


def _negates(rest: str) -> bool:
    """'(wrong)', '- incorrect', ': a common mistake': an explanation that disowns the answer before it."""
    words = tokens(rest)
    return (
        bool(words)
        and bool(_NEGATION.match(" ".join(words)))
        and not (
            words[0] == "not" and len(words) > 1 and words[1] not in ("correct", "right", "sure", "it", "the")
        )
    )


def _sentence_readings(answer: str, question: str | None) -> list[str]:
    """Readings of the answer's first sentence; none when the next sentence takes it back ('Canberra. Or
    Sydney.', 'Canberra. No, wait, Sydney.')."""
    first_line = next((line.strip() for line in str(answer).splitlines() if line.strip()), "")
    pieces = _SENTENCE_END.split(first_line, maxsplit=1)
    if len(pieces) == 2 and _RETRACTION.match(pieces[1]):
        return []
    return _readings(pieces[0].strip().rstrip(".!?").strip(), question)


def answer_candidates(answer: str, question: str | None = None) -> list[str]:
    """Readings of an answer to try, most literal first: the whole text, its first line, its first sentence read
    through a lead-in ('The answer is: X', 'It's X'), the part before an explanation ('Canberra, because ...'),
    and the side of 'X is Y' that is not the question restated ('The capital is X', 'X is the capital').

    A reading is left out when the text disowns it ('Canberra is wrong', 'Sydney. Canberra is a common mistake')
    or offers another candidate next to it ('Canberra (or Sydney)', 'Canberra. Maybe Sydney.')."""
    text = str(answer).strip()
    first_line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    found = [text, first_line, *_sentence_readings(text, question)]
    return [c for c in dict.fromkeys(c.strip() for c in found) if normalize_answer(c)]


def _same(candidate: str, alias: str) -> bool:
    """Equal after SQuAD normalisation, also without spaces ('Port au Prince'), or the same number in digits or
    words ('1' and 'one', '3rd' and 'third')."""
    norm_c, norm_a = normalize_answer(candidate), normalize_answer(alias)
    if not norm_a:
        return False
    if norm_c == norm_a or compact(candidate) == compact(alias):
        return True
    number = number_value(candidate)
    return number is not None and number == number_value(alias)


def _contains(reading: str, alias: str) -> bool:
    """The reading holds the alias as whole words, and nothing beside it disowns it or names another candidate
    ('Canberra, Australia' yes; 'Sydney or Canberra', 'not Canberra', 'Spain and France' no)."""
    if not contains_tokens(reading, alias):
        return False
    alias_words = tokens(alias)
    words = tokens(reading)
    for i in range(len(words) - len(alias_words) + 1):
        if words[i : i + len(alias_words)] == alias_words:
            rest = " ".join(words[:i] + words[i + len(alias_words) :])
            break
    return not (_NEGATION.search(rest) or _HEDGE.search(rest) or re.search(r"\band\b", rest))


def _match_text(
    answer: str, groups: Iterable[tuple[str, ...]], containment: bool, question: str | None = None
) -> tuple[str | None, str | None, float]:
    """(alias that matched or None, its entity's canonical name or None, best token F1 over all aliases)."""
    groups = list(groups)
    candidates = answer_candidates(answer, question)
    best_f1 = max((token_f1(c, a) for c in candidates for g in groups for a in g), default=0.0)
    for candidate in candidates:
        for group in groups:
            for alias in group:
                if _same(candidate, alias):
                    return alias, group[0], 1.0
    if containment:
        for candidate in _sentence_readings(answer, question):  # the answer's own sentence, not what follows
            for group in groups:
                for alias in group:
                    if _contains(candidate, alias):
                        return alias, group[0], 1.0
    return None, None, best_f1


def _numeric(answer: str, ex: Example, pick: str, rel_tol: float, abs_tol: float) -> Grade:
    value = parse_number(answer, pick=pick)
    if value is None:
        return Grade(0.0, 0.0, None, "numeric")
    for group in ex.answer_groups:
        for alias in group:
            ref = parse_number(alias)
            if ref is not None and math.isclose(value, ref, rel_tol=rel_tol, abs_tol=abs_tol):
                return Grade(1.0, 1.0, alias, "numeric", group[0])
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
        if any(_same(c, text) for c in answer_candidates(answer, ex.question)):
            ok = float(letter == correct_letter)
            return Grade(ok, ok, correct_letter if ok else None, "choice")
    soft = (
        max((token_f1(c, correct_text) for c in answer_candidates(answer, ex.question)), default=0.0)
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
        matched, entity, f1 = _match_text(answer, ex.answer_groups, containment, ex.question)
        return Grade(1.0 if matched else 0.0, 1.0 if matched else f1, matched, method, entity)
    if method == "f1":
        best, best_alias, best_group = 0.0, None, None
        candidates = answer_candidates(answer, ex.question)
        for group in ex.answer_groups:
            for alias in group:
                f1 = max((token_f1(c, alias) for c in candidates), default=0.0)
                if f1 > best:
                    best, best_alias, best_group = f1, alias, group[0]
        ok = best >= f1_threshold
        return Grade(float(ok), best, best_alias if ok else None, "f1", best_group if ok else None)
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
        canonical = ex.answer_groups[0][0] if ok and not ex.open_ended else None
        return Grade(float(ok), score, canonical, "judge", canonical)
    raise CalibError(f"unknown grading method {method!r}; methods: {', '.join(METHODS)}")


def grade(ex: Example, answer: str, **options: Any) -> float:
    """1.0 when the answer is a valid answer of the example, else 0.0 (see grade_detail for options)."""
    return grade_detail(ex, answer, **options).correct
