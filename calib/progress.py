"""Progress bars with rate and ETA (tqdm), off when not asked for; sparse when stderr is a file or a pipe."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_bar(
    items: Iterable[T], description: str, enabled: bool = True, unit: str = "it", total: int | None = None
) -> Iterator[T]:
    """Wrap an iterable in a tqdm bar (stderr) when enabled; into a log file it writes a line every 30 s at most."""
    if not enabled:
        yield from items
        return
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    yield from tqdm(
        items,
        desc=description,
        unit=unit,
        total=total,
        dynamic_ncols=True,
        leave=not interactive,  # a log keeps the final count and time
        mininterval=0.1 if interactive else 30.0,
    )
