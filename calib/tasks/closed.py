"""Built-in closed questions (exactly one correct entity, with its aliases) from countryinfo and periodictable.

Every question asks for a short answer: a city, a continent, an element name, a symbol or a number.
"""

from __future__ import annotations

from calib.tasks.base import Example
from calib.tasks.countries import load_countries
from calib.tasks.elements import load_elements


def _closed(category: str, key: str, question: str, aliases: tuple[str, ...], **meta: object) -> Example:
    return Example(
        id=f"{category}/{key}",
        question=question,
        answers=aliases,
        open_ended=False,
        category=category,
        metadata={"answer_groups": (tuple(aliases),), **meta},
    )


def capitals() -> list[Example]:
    """What is the capital of X? (countryinfo; disputed or split capitals are skipped)."""
    return [
        _closed(
            "capitals",
            c.code,
            f"What is the capital of {c.name_in_sentence}?",
            c.capital_aliases,
            entity=c.code,
            source="countryinfo",
        )
        for c in load_countries().values()
        if c.capital
    ]


def continents() -> list[Example]:
    """Which continent is X in? (countryinfo regions; transcontinental countries are skipped)."""
    return [
        _closed(
            "continents",
            c.code,
            f"On which continent is {c.name_in_sentence}?",
            c.continent,
            entity=c.code,
            source="countryinfo",
        )
        for c in load_countries().values()
        if c.continent
    ]


def element_names() -> list[Example]:
    """Which element has the symbol S? (periodictable)."""
    return [
        _closed(
            "element_name",
            str(e.number),
            f"Which chemical element has the symbol {e.symbol}?",
            e.aliases,
            entity=e.symbol,
            source="periodictable",
        )
        for e in load_elements()
    ]


def element_symbols() -> list[Example]:
    """What is the chemical symbol of element E? (periodictable)."""
    return [
        _closed(
            "element_symbol",
            str(e.number),
            f"What is the chemical symbol for {e.name.lower()}?",
            (e.symbol,),
            entity=e.symbol,
            source="periodictable",
        )
        for e in load_elements()
    ]


def elements_from_number() -> list[Example]:
    """Which element has atomic number Z? (periodictable)."""
    return [
        _closed(
            "element_from_number",
            str(e.number),
            f"Which chemical element has atomic number {e.number}?",
            e.aliases,
            entity=e.symbol,
            source="periodictable",
        )
        for e in load_elements()
    ]


def atomic_numbers() -> list[Example]:
    """What is the atomic number of element E? (periodictable; graded numerically)."""
    return [
        _closed(
            "atomic_number",
            str(e.number),
            f"What is the atomic number of {e.name.lower()}?",
            (str(e.number),),
            entity=e.symbol,
            source="periodictable",
            grader="numeric",
        )
        for e in load_elements()
    ]


CLOSED_BUILDERS = {
    "capitals": capitals,
    "continents": continents,
    "element_name": element_names,
    "element_symbol": element_symbols,
    "element_from_number": elements_from_number,
    "atomic_number": atomic_numbers,
}
