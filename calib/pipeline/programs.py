"""How many XLA programs a run compiled, and how many it loaded from the persistent compilation cache.

Every executable JAX builds passes `compile_or_get_cached`, which reports a `backend_compile_duration` event
(a fresh compile or a load) and, for a load, a `cache_hits` event. `install()` registers `jax.monitoring` listeners
that count both; it is the CLI's choice (a process-wide listener is global state, so library code never installs
it). `run()` then records the counts of its own span in the manifest when a counter is installed.

Program count matters off-CPU: a cold XLA:GPU compile of a 32-layer model takes tens of seconds, so the decode plan
(calib.decode.planning) aims at few programs per run; the manifest keeps the number honest.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


@dataclass
class ProgramCounts:
    """Programs built so far in this process: `programs` = compiled + loaded from the persistent cache."""

    programs: int = 0
    loaded: int = 0
    seconds: float = 0.0  # time spent compiling or loading
    by_function: Counter = field(default_factory=Counter)  # jit(name) -> programs

    @property
    def compiled(self) -> int:
        return self.programs - self.loaded

    def since(self, before: ProgramCounts) -> ProgramCounts:
        """The programs built after `before` (a snapshot of the same counter)."""
        by = Counter(self.by_function)
        by.subtract(before.by_function)
        return ProgramCounts(
            self.programs - before.programs,
            self.loaded - before.loaded,
            self.seconds - before.seconds,
            +by,  # drops zero counts
        )

    def record(self, top: int = 12) -> dict:
        """The manifest's `programs` entry: totals and the functions that built the most programs."""
        return {
            "programs": self.programs,
            "compiled": self.compiled,
            "loaded": self.loaded,
            "seconds": round(self.seconds, 3),
            "by_function": dict(self.by_function.most_common(top)),
        }


_lock = threading.Lock()
_counts: ProgramCounts | None = None


def _on_duration(event: str, duration: float, **kwargs) -> None:
    if event != COMPILE_EVENT or _counts is None:
        return
    with _lock:
        _counts.programs += 1
        _counts.seconds += duration
        _counts.by_function[str(kwargs.get("fun_name", "?"))] += 1


def _on_event(event: str, **kwargs) -> None:
    if event == CACHE_HIT_EVENT and _counts is not None:
        with _lock:
            _counts.loaded += 1


def install() -> None:
    """Start counting programs in this process (idempotent). For entry points (the CLI, benchmarks), not libraries."""
    global _counts
    with _lock:
        if _counts is not None:
            return
        import jax.monitoring

        _counts = ProgramCounts()
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        jax.monitoring.register_event_listener(_on_event)


def snapshot() -> ProgramCounts | None:
    """A copy of the counts so far, or None when no counter is installed."""
    with _lock:
        if _counts is None:
            return None
        return ProgramCounts(_counts.programs, _counts.loaded, _counts.seconds, Counter(_counts.by_function))
