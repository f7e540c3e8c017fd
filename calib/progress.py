"""Progress bars with rate and ETA (tqdm), off when not asked for or when output is not a terminal."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_bar(
    items: Iterable[T], description: str, enabled: bool = True, unit: str = "it", total: int | None = None
) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar (stderr) when enabled."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=description, unit=unit, total=total, dynamic_ncols=True, leave=False)
