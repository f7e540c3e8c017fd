"""Registers the built-in offline tasks: one per category, plus the 'closed', 'open_ended' and 'mixed' suites."""

from __future__ import annotations

from collections.abc import Callable

from calib.errors import CalibError
from calib.tasks.arithmetic import multiples_in_range, primes_in_range, word_problems
from calib.tasks.base import Example, Task, _order_key, register_task
from calib.tasks.closed import CLOSED_BUILDERS
from calib.tasks.open_ended import OPEN_BUILDERS


def _register_fixed(name: str, build: Callable[[], list[Example]]) -> None:
    def builder() -> Task:
        return Task(name=name, examples=tuple(build()), description=build.__doc__ or "")

    register_task(name, builder, description=(build.__doc__ or "").strip().split("\n")[0])


for _name, _build in {**CLOSED_BUILDERS, **OPEN_BUILDERS}.items():
    _register_fixed(_name, _build)


@register_task("arithmetic")
def arithmetic(n: int = 100, seed: int = 0) -> Task:
    """Multi-step arithmetic word problems with numeric answers, generated from the seed."""
    return Task("arithmetic", tuple(word_problems(n, seed)))


@register_task("primes")
def primes(n: int = 60, seed: int = 0) -> Task:
    """Name a prime between a and b: open-ended, every prime in the range is valid."""
    return Task("primes", tuple(primes_in_range(n, seed)))


@register_task("multiples")
def multiples(n: int = 60, seed: int = 0) -> Task:
    """Name a multiple of k between a and b: open-ended, every multiple in the range is valid."""
    return Task("multiples", tuple(multiples_in_range(n, seed)))


def _closed_examples(seed: int, arithmetic_n: int) -> list[list[Example]]:
    return [build() for build in CLOSED_BUILDERS.values()] + [word_problems(arithmetic_n, seed)]


def _open_examples(seed: int, generated_n: int) -> list[list[Example]]:
    fixed = [build() for build in OPEN_BUILDERS.values()]
    return [*fixed, primes_in_range(generated_n, seed), multiples_in_range(generated_n, seed)]


@register_task("closed")
def closed(seed: int = 0, arithmetic_n: int = 100) -> Task:
    """Every built-in closed question (capitals, continents, elements, arithmetic)."""
    return Task("closed", tuple(ex for group in _closed_examples(seed, arithmetic_n) for ex in group))


@register_task("open_ended")
def open_ended(seed: int = 0, generated_n: int = 60) -> Task:
    """Every built-in open-ended question (borders, provinces, sub-regions, element groups/periods, numbers)."""
    return Task("open_ended", tuple(ex for group in _open_examples(seed, generated_n) for ex in group))


@register_task("mixed")
def mixed(seed: int = 0, per_category: int | None = 60) -> Task:
    """The default suite: up to `per_category` seeded picks from every built-in category, closed and open-ended."""
    if per_category is not None and (not isinstance(per_category, int) or per_category < 1):
        raise CalibError(f"mixed: per_category must be a positive integer or None, got {per_category!r}")
    n = per_category or 100
    groups = _closed_examples(seed, n) + _open_examples(seed, n)
    examples: list[Example] = []
    for group in groups:
        if per_category is not None and len(group) > per_category:
            keep = {ex.id for ex in sorted(group, key=lambda ex: _order_key(seed, ex.id))[:per_category]}
            group = [ex for ex in group if ex.id in keep]
        examples.extend(group)
    return Task("mixed", tuple(examples), description="built-in closed and open-ended questions")


# Calibration-tuning (issue 22): a training pool and an evaluation split that never overlap (calib.tasks.tuning).
def _register_tuning() -> None:
    from calib.tasks import tuning

    register_task("tuning_train", tuning.tuning_train)
    register_task("tuning_eval", tuning.tuning_eval)


_register_tuning()
