"""Built-in open-ended questions with complete answer sets: many answers are right, and we know all of them.

Each example's answers hold every alias of every valid entity; metadata["answer_groups"] keeps them per entity.
A question is skipped when its answer set would be empty, a single entity, or untrustworthy (see countries.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from calib.tasks.base import Example
from calib.tasks.countries import (
    MIN_PROVINCE_AREA_KM2,
    Country,
    border_issues,
    load_countries,
    province_aliases,
    province_issues,
)
from calib.tasks.elements import DISPUTED_GROUPS, load_elements
from calib.tasks.normalize import normalize_answer

MIN_PROVINCES, MAX_PROVINCES = (
    3,
    40,
)  # longer lists in countryinfo are municipalities or districts, not provinces


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", normalize_answer(text)).strip("-")


def open_example(
    category: str, key: str, question: str, groups: Sequence[Sequence[str]], **meta: object
) -> Example | None:
    """An open-ended Example, or None when fewer than two distinct entities are valid."""
    groups = [tuple(g) for g in groups if g]
    distinct = {normalize_answer(g[0]) for g in groups}
    if len(distinct) < 2:
        return None
    answers = tuple(dict.fromkeys(a for g in groups for a in g))
    return Example(
        id=f"{category}/{key}",
        question=question,
        answers=answers,
        open_ended=True,
        category=category,
        metadata={"answer_groups": tuple(groups), "num_valid": len(groups), **meta},
    )


def _keep(examples: Iterable[Example | None]) -> list[Example]:
    return [ex for ex in examples if ex is not None]


def borders() -> list[Example]:
    """Name a country that borders X. Countries with a one-sided or unknown border in the data are skipped."""
    table = load_countries()
    skip = border_issues(table)
    return _keep(
        open_example(
            "borders",
            c.code,
            f"Name a country that borders {c.name_in_sentence}.",
            [table[b].aliases for b in c.borders],
            entity=c.code,
            source="countryinfo",
        )
        for c in table.values()
        if c.code not in skip
    )


def provinces() -> list[Example]:
    """Name a province or state of X: countries of >= 20,000 km2 whose list has 3-40 entries and passes the
    checks in countries.province_issues (longer lists are municipalities, not provinces)."""
    table = load_countries()
    skip = province_issues(table)
    return _keep(
        open_example(
            "provinces",
            c.code,
            f"Name a province or state of {c.name_in_sentence}.",
            list({normalize_answer(p): province_aliases(p) for p in c.provinces}.values()),
            entity=c.code,
            source="countryinfo",
        )
        for c in table.values()
        if c.code not in skip
        and c.area_km2 >= MIN_PROVINCE_AREA_KM2
        and MIN_PROVINCES <= len({normalize_answer(p) for p in c.provinces}) <= MAX_PROVINCES
    )


def subregions() -> list[Example]:
    """Name a country or territory in sub-region R (UN sub-regions and intermediate regions, from countryinfo)."""
    members: dict[str, list[Country]] = {}
    names: dict[str, str] = {}
    for c in load_countries().values():
        for region in (c.subregion, c.intermediate_region):
            if region:
                key = _slug(region)
                names.setdefault(key, region)
                members.setdefault(key, []).append(c)
    return _keep(
        open_example(
            "subregion_countries",
            key,
            f"Name a country or territory in {names[key]}.",
            [c.aliases for c in countries],
            region=names[key],
            source="countryinfo",
        )
        for key, countries in sorted(members.items())
    )


def element_groups() -> list[Example]:
    """Name an element in group G of the periodic table (group 3 skipped: its membership is disputed)."""
    elements = load_elements()
    groups = sorted({e.group for e in elements if e.group is not None and e.group not in DISPUTED_GROUPS})
    return _keep(
        open_example(
            "element_group",
            str(g),
            f"Name a chemical element in group {g} of the periodic table.",
            [e.answer_aliases for e in elements if e.group == g],
            source="periodictable",
        )
        for g in groups
    )


def element_periods() -> list[Example]:
    """Name an element in period P of the periodic table."""
    elements = load_elements()
    return _keep(
        open_example(
            "element_period",
            str(p),
            f"Name a chemical element in period {p} of the periodic table.",
            [e.answer_aliases for e in elements if e.period == p],
            source="periodictable",
        )
        for p in sorted({e.period for e in elements})
    )


OPEN_BUILDERS = {
    "borders": borders,
    "provinces": provinces,
    "subregion_countries": subregions,
    "element_group": element_groups,
    "element_period": element_periods,
}
