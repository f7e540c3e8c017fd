"""Text and number normalisation shared by graders and data loaders.

SQuAD normalisation (lower case, drop punctuation and articles, squeeze spaces) is the field's standard for exact
match and token F1; accent folding is added so "Brasília" and "Brasilia" compare equal.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "…", "·"}


def fold_accents(text: str) -> str:
    """'Brasília' -> 'Brasilia': drop combining marks after Unicode decomposition."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_answer(text: str) -> str:
    """SQuAD normalisation plus accent folding: 'The Washington, D.C.!' -> 'washington dc'."""
    text = fold_accents(str(text)).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def compact(text: str) -> str:
    """Normalised text without spaces, so 'Port au Prince' matches 'Port-au-Prince' ('portauprince')."""
    return normalize_answer(text).replace(" ", "")


def tokens(text: str) -> list[str]:
    """SQuAD tokens: whitespace split of the normalised text."""
    return normalize_answer(text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two strings (1.0 when both normalise to nothing)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_tokens(haystack: str, needle: str) -> bool:
    """True when the needle's normalised tokens appear contiguously in the haystack's ('Canberra, Australia')."""
    hay, nee = tokens(haystack), tokens(needle)
    if not nee or len(nee) > len(hay):
        return False
    return any(hay[i : i + len(nee)] == nee for i in range(len(hay) - len(nee) + 1))


# ---------------------------------------------------------------------------------------------------- numbers

_UNITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]  # fmt: skip
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | _TENS
_NUMBER = re.compile(
    r"(?<![\w.])(?:(?P<sign>[-−+])(?=[$€£]?\d))?[$€£]?\s?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?P<exp>[eE][-+]?\d+\b)?"
    r"(?:\s?/\s?(?P<den>\d+))?"
    r"(?![\d])"
)
_TENS_RE, _DIGIT_RE, _ANY_RE = "|".join(_TENS), "|".join(_UNITS[1:10]), "|".join(_WORD_VALUES)
_WORD_NUMBER = re.compile(rf"\b(?:({_TENS_RE})[\s-]({_DIGIT_RE})|({_ANY_RE}))\b")
_FINAL = re.compile(r"(?:####|answer is|answer:|=)\s*(?P<rest>[^\n=]*)", re.IGNORECASE)


def _parse_match(m: re.Match) -> float:
    value = float(m.group("num").replace(",", "") + (m.group("exp") or ""))
    if m.group("den"):
        den = float(m.group("den"))
        value = value / den if den else math.nan
    return -value if m.group("sign") in ("-", "−") else value


def find_numbers(text: str) -> list[float]:
    """Every number in the text, in order: '1,000' -> 1000, '-3.5', '$12', '3/4' -> 0.75, '1e3' -> 1000.

    Number words ('twenty-one' -> 21) are read only when the text has no digits, so 'one of them is 5' gives 5.
    """
    found = [_parse_match(m) for m in _NUMBER.finditer(str(text))]
    if not found:
        for m in _WORD_NUMBER.finditer(str(text).lower()):
            if m.group(3):
                found.append(float(_WORD_VALUES[m.group(3)]))
            else:
                found.append(float(_TENS[m.group(1)] + _UNITS.index(m.group(2))))
    return [v for v in found if not math.isnan(v)]


def parse_number(text: str, pick: str = "first") -> float | None:
    """The answer's number: after '####' / 'answer is' when present, else the first (or last) number in the text."""
    text = str(text)
    marked = list(_FINAL.finditer(text))
    if marked:
        numbers = find_numbers(marked[-1].group("rest"))
        if numbers:
            return numbers[0]
    numbers = find_numbers(text)
    if not numbers:
        return None
    return numbers[-1] if pick == "last" else numbers[0]


def format_number(value: float) -> str:
    """12.0 -> '12', 0.5 -> '0.5': the canonical string form of a numeric answer."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
