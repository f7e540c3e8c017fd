"""Chemical elements from the `periodictable` package, with period and group derived from the atomic number.

Periods and groups follow from the shell-filling layout of the table (period lengths 2, 8, 8, 18, 18, 32, 32), so
no element list is typed by hand. Group 3 is left out on purpose: whether lanthanum/actinium or lutetium/lawrencium
belong there is still disputed, and the f-block (La-Yb, Ac-No) has no group number.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

_PERIOD_ENDS = (2, 10, 18, 36, 54, 86, 118)  # atomic number of each period's noble gas
BRITISH_SPELLINGS = {"aluminum": "aluminium", "cesium": "caesium", "sulfur": "sulphur"}
DISPUTED_GROUPS = {3: "membership disputed (La/Ac vs Lu/Lr)"}


@dataclass(frozen=True)
class Element:
    number: int
    symbol: str
    name: str  # capitalised English name
    aliases: tuple[str, ...]  # name, other spellings (not the symbol)
    period: int
    group: int | None  # None for the f-block

    @property
    def answer_aliases(self) -> tuple[str, ...]:
        """Accepted answers when the element itself is the answer: its names and its symbol."""
        return (*self.aliases, self.symbol)


def period_of(number: int) -> int:
    """Period (row) of an element from its atomic number."""
    for period, end in enumerate(_PERIOD_ENDS, start=1):
        if number <= end:
            return period
    raise ValueError(f"no element with atomic number {number}")


def group_of(number: int) -> int | None:
    """IUPAC group (1-18) from the atomic number; None for the 14 f-block elements of periods 6 and 7."""
    period = period_of(number)
    start = _PERIOD_ENDS[period - 2] + 1 if period > 1 else 1
    pos = number - start + 1  # 1-based position in the period
    length = _PERIOD_ENDS[period - 1] - start + 1
    if length == 2:
        return 1 if pos == 1 else 18
    if length == 8:
        return pos if pos <= 2 else pos + 10
    if length == 18:
        return pos
    # 32-long periods: s-block (2), f-block (14: La-Yb / Ac-No), then Lu/Lr in group 3 and groups 4-18
    if pos <= 2:
        return pos
    if pos <= 16:
        return None
    return pos - 14


@functools.cache
def load_elements() -> tuple[Element, ...]:
    """All 118 elements in atomic-number order. Cached."""
    import periodictable  # imported here so importing calib.tasks stays cheap

    elements = []
    for el in periodictable.elements:
        if el.number < 1:
            continue  # the package's neutron pseudo-element
        name = el.name.capitalize()
        aliases = (name, BRITISH_SPELLINGS[el.name].capitalize()) if el.name in BRITISH_SPELLINGS else (name,)
        elements.append(
            Element(el.number, el.symbol, name, aliases, period_of(el.number), group_of(el.number))
        )
    return tuple(elements)
