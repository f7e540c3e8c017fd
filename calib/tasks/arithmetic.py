"""Generated number questions: multi-step word problems (closed, numeric) and primes / multiples in a range
(open-ended with complete answer sets). Everything is drawn from `random.Random(seed)`, so a seed fixes the task.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from calib.errors import CalibError
from calib.tasks.base import Example
from calib.tasks.open_ended import open_example

_NAMES = (
    "Ana",
    "Ben",
    "Chen",
    "Dara",
    "Eli",
    "Fatima",
    "Goran",
    "Hana",
    "Ivan",
    "Jonas",
    "Kemi",
    "Lena",
    "Mateo",
)
_ITEMS = (
    "apples",
    "marbles",
    "stickers",
    "pencils",
    "books",
    "cookies",
    "stamps",
    "shells",
    "cards",
    "coins",
)


def _sum_then_share(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    groups, each = rng.randint(2, 6), rng.randint(2, 12)
    total = groups * each
    have = rng.randint(3, total - 1)
    text = (
        f"{name} has {have} {item} and finds {total - have} more. {name} then puts all of them into "
        f"{groups} equal piles. How many {item} are in each pile?"
    )
    return text, each, f"({have} + {total - have}) / {groups}"


def _buy_and_change(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    price, count = rng.randint(2, 15), rng.randint(2, 9)
    note = next(n for n in (20, 50, 100, 200) if n > price * count)
    text = (
        f"{item.capitalize()} cost {price} dollars each. {name} buys {count} of them and pays with a "
        f"{note}-dollar note. How many dollars of change does {name} get?"
    )
    return text, note - price * count, f"{note} - {price} * {count}"


def _boxes_minus(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    per_box, boxes = rng.randint(3, 25), rng.randint(2, 9)
    lost = rng.randint(1, per_box * boxes - 1)
    text = (
        f"A box holds {per_box} {item}. {name} fills {boxes} boxes and then gives away {lost} {item}. "
        f"How many {item} does {name} have left?"
    )
    return text, per_box * boxes - lost, f"{per_box} * {boxes} - {lost}"


def _daily_plus(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    per_day, days, extra = rng.randint(2, 20), rng.randint(2, 7), rng.randint(1, 30)
    used = rng.randint(1, per_day * days + extra - 1)
    text = (
        f"{name} collects {per_day} {item} a day for {days} days, gets {extra} more as a gift, and then "
        f"uses {used} of them. How many {item} does {name} have now?"
    )
    return text, per_day * days + extra - used, f"{per_day} * {days} + {extra} - {used}"


def _double_then_add(rng: random.Random, name: str, item: str) -> tuple[str, int, str]:
    start, factor, add = rng.randint(2, 30), rng.randint(2, 5), rng.randint(1, 40)
    other = _NAMES[(_NAMES.index(name) + 1) % len(_NAMES)]
    text = (
        f"{name} has {start} {item}. {other} has {factor} times as many as {name}, plus {add}. "
        f"How many {item} do they have together?"
    )
    return text, start + start * factor + add, f"{start} + {start} * {factor} + {add}"


_TEMPLATES: tuple[Callable[[random.Random, str, str], tuple[str, int, str]], ...] = (
    _sum_then_share,
    _buy_and_change,
    _boxes_minus,
    _daily_plus,
    _double_then_add,
)


def _check_count(n: int, what: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CalibError(f"{what}: n must be a positive integer, got {n!r}")


def word_problems(n: int = 100, seed: int = 0) -> list[Example]:
    """Multi-step arithmetic word problems with whole-number answers, generated from a seed."""
    _check_count(n, "arithmetic")
    rng = random.Random(f"arithmetic:{seed}")
    examples, seen = [], set()
    while len(examples) < n:
        template = rng.choice(_TEMPLATES)
        text, value, expression = template(rng, rng.choice(_NAMES), rng.choice(_ITEMS))
        if text in seen:
            continue
        seen.add(text)
        examples.append(
            Example(
                id=f"arithmetic/{seed}/{len(examples)}",
                question=text,
                answers=(str(value),),
                category="arithmetic",
                metadata={"answer_groups": ((str(value),),), "grader": "numeric", "expression": expression},
            )
        )
    return examples


def _is_prime(k: int) -> bool:
    return k >= 2 and all(k % d for d in range(2, int(k**0.5) + 1))


def primes_in_range(n: int = 60, seed: int = 0) -> list[Example]:
    """Name a prime between a and b (a, b composite, so 'between' is the same inclusive or exclusive)."""
    _check_count(n, "primes")
    rng = random.Random(f"primes:{seed}")
    examples: dict[str, Example] = {}
    while len(examples) < n:
        lo = rng.randint(10, 400)
        hi = lo + rng.randint(8, 40)
        if _is_prime(lo) or _is_prime(hi) or f"primes/{lo}-{hi}" in examples:
            continue
        primes = [str(k) for k in range(lo + 1, hi) if _is_prime(k)]
        ex = open_example(
            "primes", f"{lo}-{hi}", f"Name a prime number between {lo} and {hi}.", [(p,) for p in primes],
            grader="numeric",
        )  # fmt: skip
        if ex is not None:
            examples[ex.id] = ex
    return list(examples.values())


def multiples_in_range(n: int = 60, seed: int = 0) -> list[Example]:
    """Name a multiple of k between a and b (a, b not multiples of k; 2 to 12 valid answers)."""
    _check_count(n, "multiples")
    rng = random.Random(f"multiples:{seed}")
    examples: dict[str, Example] = {}
    while len(examples) < n:
        k = rng.randint(3, 19)
        lo = rng.randint(10, 500)
        hi = lo + rng.randint(2 * k + 1, 12 * k)
        key = f"{k}/{lo}-{hi}"
        if lo % k == 0 or hi % k == 0 or f"multiples/{key}" in examples:
            continue
        values = [str(v) for v in range(lo + 1, hi) if v % k == 0]
        ex = open_example(
            "multiples", key, f"Name a multiple of {k} between {lo} and {hi}.", [(v,) for v in values],
            grader="numeric",
        )  # fmt: skip
        if ex is not None:
            examples[ex.id] = ex
    return list(examples.values())
