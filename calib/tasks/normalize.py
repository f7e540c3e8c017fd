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
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_WORD_VALUES = {w: i for i, w in enumerate(_UNITS)} | _TENS
_IRREGULAR_ORDINALS = {"first": "one", "second": "two", "third": "three", "fifth": "five", "eighth": "eight",
                       "ninth": "nine", "twelfth": "twelve"}  # fmt: skip
_NUMBER = re.compile(
    r"(?<![\w.])(?:(?P<sign>[-−+])(?=[$€£]?\d))?[$€£]?\s?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)(?P<exp>[eE][-+]?\d+\b)?"
    r"(?:\s?/\s?(?P<den>\d+))?"
    r"(?![\d])"
)
_NUMBER_WORD = "|".join([*_WORD_VALUES, *_SCALES])
# a run of number words: 'one hundred and five', 'twenty-one', 'a thousand'
_WORD_NUMBER = re.compile(
    rf"\b(?:an?\s+(?=(?:{'|'.join(_SCALES)})\b))?(?:{_NUMBER_WORD})(?:(?:\s+and\s+|[\s-]+)(?:{_NUMBER_WORD}))*\b"
)
_ORDINAL_DIGITS = re.compile(r"^(\d+)(?:st|nd|rd|th)$")
_FINAL = re.compile(r"(?:####|answer is|answer:|=)\s*(?P<rest>[^\n=]*)", re.IGNORECASE)


def words_to_number(text: str) -> int | None:
    """'one hundred and twenty-three' -> 123, 'a thousand' -> 1000, 'twelve' -> 12; None unless every word is
    part of one number (a small English reader: word2number-like, without its dependency)."""
    words = re.sub(r"[-\s]+", " ", str(text).lower().replace(",", " ")).split()
    if words and words[0] in ("a", "an") and len(words) > 1 and words[1] in _SCALES:
        words[0] = "one"
    words = [w for w in words if w != "and"]
    if not words:
        return None
    total, current, last, previous_scale = (
        0,
        0,
        None,
        0,
    )  # last: the kind of the previous word, to refuse 'five five' or 'twenty ten'
    for word in words:
        if word in _WORD_VALUES:
            value = _WORD_VALUES[word]
            if last == "unit" or (last == "tens" and (value >= 10 or value == 0)):
                return None
            current += value
            last = "tens" if word in _TENS else "unit"
        elif word in _SCALES:
            scale = _SCALES[word]
            if last == "scale" and scale <= previous_scale:
                return None
            previous_scale = scale
            current = current or (1 if last is None else current)  # 'hundred' alone is 100
            if scale == 100:
                if current == 0 or current >= 100:
                    return None
                current *= 100
            else:
                total += (current or 1) * scale
                current = 0
            last = "scale"
        else:
            return None
    return total + current


def ordinal_value(text: str) -> int | None:
    """'third' -> 3, '21st' -> 21, 'twenty-first' -> 21, 'hundredth' -> 100; None when not an ordinal."""
    text = str(text).strip().lower()
    m = _ORDINAL_DIGITS.match(text)
    if m:
        return int(m.group(1))
    words = re.sub(r"[-\s]+", " ", text).split()
    if not words:
        return None
    last = words[-1]
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("ieth"):
        last = last[: -len("ieth")] + "y"
    elif last.endswith("th"):
        last = last[: -len("th")]
    else:
        return None
    return words_to_number(" ".join([*words[:-1], last]))


def number_value(text: str) -> tuple[float, bool] | None:
    """(value, is_ordinal) when the whole text is one number in digits or words ('1', 'one', '1,000', '3rd',
    'third'), else None; lets exact match compare '1' with 'one' and '3rd' with 'third'."""
    text = fold_accents(str(text)).strip().strip("\"'`*_ ").rstrip(".!?,;:").strip()
    m = _NUMBER.fullmatch(text)
    if m:
        return _parse_match(m), False
    words = words_to_number(text)
    if words is not None:
        return float(words), False
    ordinal = ordinal_value(text)
    return (float(ordinal), True) if ordinal is not None else None


def _parse_match(m: re.Match) -> float:
    value = float(m.group("num").replace(",", "") + (m.group("exp") or ""))
    if m.group("den"):
        den = float(m.group("den"))
        value = value / den if den else math.nan
    return -value if m.group("sign") in ("-", "−") else value


def find_numbers(text: str) -> list[float]:
    """Every number in the text, in order: '1,000' -> 1000, '-3.5', '$12', '3/4' -> 0.75, '1e3' -> 1000.

    Number words ('twenty-one' -> 21, 'one hundred and five' -> 105) are read only when the text has no digits,
    so 'one of them is 5' gives 5.
    """
    found = [_parse_match(m) for m in _NUMBER.finditer(str(text))]
    if not found:
        for m in _WORD_NUMBER.finditer(str(text).lower()):
            value = words_to_number(m.group(0))
            if value is not None:
                found.append(float(value))
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
