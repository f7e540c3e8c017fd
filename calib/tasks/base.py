"""Task and Example types, deterministic splits, and the task registry (built-ins plus `calib.tasks` plugins).

A Task is an immutable, ordered list of Examples. Every derived view (split, limit, shuffle) is a new Task, so a
run can record exactly which questions it saw by their stable ids.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any

from calib.errors import CalibError

ENTRY_POINT_GROUP = "calib.tasks"
SPLITS = ("calibration", "test")


@dataclass(frozen=True)
class Example:
    """One question with every valid answer.

    answers: for a closed question, the aliases of its one correct entity; for an open-ended question (open_ended=True)
    every valid answer of every valid entity. metadata["answer_groups"] keeps the aliases grouped per entity;
    metadata["grader"] names the grading method when it is not the default ("numeric", "choice", "f1", ...).
    context: a passage the question is about (reading comprehension), empty for closed-book questions.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    open_ended: bool = False
    category: str = ""
    context: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id.strip():
            raise CalibError(f"example {self.id!r}: empty id; give every example a unique non-empty id")
        if not isinstance(self.question, str) or not self.question.strip():
            raise CalibError(f"example {self.id!r}: empty question; every example needs question text")
        answers = (self.answers,) if isinstance(self.answers, str) else tuple(self.answers)
        answers = tuple(dict.fromkeys(str(a).strip() for a in answers if a is not None and str(a).strip()))
        if not answers:
            raise CalibError(f"example {self.id!r}: no answers; give at least one valid answer")
        object.__setattr__(self, "answers", answers)

    @property
    def answer_groups(self) -> tuple[tuple[str, ...], ...]:
        """Aliases grouped by entity: one group for a closed question, one per valid answer for an open-ended one."""
        groups = self.metadata.get("answer_groups")
        if groups:
            return tuple(tuple(g) for g in groups)
        if self.open_ended:
            return tuple((a,) for a in self.answers)
        return (self.answers,)


def _order_key(seed: int, example_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\x00{example_id}".encode()).digest()


@dataclass(frozen=True)
class Task:
    """An ordered, immutable collection of examples with deterministic derived views."""

    name: str
    examples: tuple[Example, ...]
    description: str = ""

    def __post_init__(self) -> None:
        examples = tuple(self.examples)
        seen: set[str] = set()
        for ex in examples:
            if not isinstance(ex, Example):
                raise CalibError(f"task {self.name!r}: got {type(ex).__name__}, expected calib.tasks.Example")
            if ex.id in seen:
                raise CalibError(f"task {self.name!r}: duplicate example id {ex.id!r}; ids must be unique")
            seen.add(ex.id)
        object.__setattr__(self, "examples", examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> Example:
        return self.examples[index]

    @property
    def ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    @property
    def categories(self) -> list[str]:
        """Distinct categories in order of first appearance."""
        return list(dict.fromkeys(ex.category for ex in self.examples))

    def _derive(self, examples: Iterable[Example], suffix: str) -> Task:
        return replace(self, name=f"{self.name}{suffix}", examples=tuple(examples))

    def limit(self, n: int | None) -> Task:
        """The first n examples (all when n is None)."""
        if n is None:
            return self
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CalibError(f"task {self.name!r}: limit must be a non-negative integer, got {n!r}")
        return self._derive(self.examples[:n], "")

    def shuffle(self, seed: int = 0) -> Task:
        """The same examples in a seeded order that depends only on (seed, id), not on the current order."""
        return self._derive(sorted(self.examples, key=lambda ex: _order_key(seed, ex.id)), "")

    def filter(self, predicate: Callable[[Example], bool]) -> Task:
        return self._derive((ex for ex in self.examples if predicate(ex)), "")

    def select(self, categories: str | Sequence[str]) -> Task:
        """Only the examples of the given categories; an unknown category is an error that lists the known ones."""
        wanted = [categories] if isinstance(categories, str) else list(categories)
        unknown = [c for c in wanted if c not in self.categories]
        if unknown:
            raise CalibError(
                f"task {self.name!r} has no category {unknown[0]!r}; categories: {', '.join(self.categories)}"
            )
        return self.filter(lambda ex: ex.category in wanted)

    def split(self, name: str, seed: int = 0, fraction: float = 0.5) -> Task:
        """Deterministic calibration/test split: the first round(fraction * n) examples by a seeded hash of their id
        form 'calibration', the rest 'test'; both keep the task's order, and they never overlap."""
        if name not in SPLITS:
            raise CalibError(f"unknown split {name!r} for task {self.name!r}; splits: {', '.join(SPLITS)}")
        if not 0.0 < float(fraction) < 1.0:
            raise CalibError(f"split fraction must be strictly between 0 and 1, got {fraction!r}")
        ranked = sorted(range(len(self.examples)), key=lambda i: _order_key(seed, self.examples[i].id))
        n_cal = round(float(fraction) * len(self.examples))
        chosen = set(ranked[:n_cal]) if name == "calibration" else set(ranked[n_cal:])
        return self._derive((ex for i, ex in enumerate(self.examples) if i in chosen), f"[{name}]")


# ------------------------------------------------------------------------------------------------------ registry

TaskBuilder = Callable[..., "Task | Iterable[Example]"]
_REGISTRY: dict[str, tuple[TaskBuilder, str]] = {}


def register_task(
    name: str, builder: TaskBuilder | None = None, *, description: str = "", overwrite: bool = False
) -> Any:
    """Register a builder (callable returning a Task or Examples) under a name; usable as a decorator."""

    def add(fn: TaskBuilder) -> TaskBuilder:
        if not overwrite and name in _REGISTRY and _REGISTRY[name][0] is not fn:
            raise CalibError(f"task {name!r} is already registered; pass overwrite=True to replace it")
        doc = description or (inspect.getdoc(fn) or "").split("\n")[0]
        _REGISTRY[name] = (fn, doc)
        return fn

    return add if builder is None else add(builder)


def _plugin_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_tasks() -> list[str]:
    """Names of every registered task: built-in ones and those outside packages add via entry points."""
    return sorted(set(_REGISTRY) | set(_plugin_entry_points()))


def describe_tasks() -> dict[str, str]:
    """Name -> one-line description of every built-in task (plugins are described by their package)."""
    return {name: doc for name, (_, doc) in sorted(_REGISTRY.items())}


def _resolve(name: str) -> TaskBuilder:
    if name in _REGISTRY:
        return _REGISTRY[name][0]
    plugins = _plugin_entry_points()
    if name in plugins:
        try:
            return plugins[name].load()
        except Exception as err:  # a broken plugin must not look like a calib bug
            raise CalibError(f"task plugin {name!r} ({plugins[name].value}) failed to load: {err}") from err
    raise CalibError(
        f"unknown task {name!r}; available: {', '.join(list_tasks())} "
        f"(outside packages add tasks through the {ENTRY_POINT_GROUP!r} entry-point group)"
    )


def _call_builder(name: str, builder: TaskBuilder, seed: int, options: dict[str, Any]) -> Any:
    if isinstance(builder, Task):
        if options:
            raise CalibError(f"task {name!r} takes no options; got {', '.join(options)}")
        return builder
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = [k for k in options if k not in params]
        if unknown:
            accepted = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            raise CalibError(
                f"task {name!r} has no option {unknown[0]!r}; options: {', '.join(accepted) or '(none)'}"
            )
    if takes_any or "seed" in params:
        options = {"seed": seed, **options}
    return builder(**options)


def load_task(
    name: str, *, limit: int | None = None, seed: int = 0, shuffle: bool = True, **options: Any
) -> Task:
    """Build a task by name. The seed drives generated questions and the example order (shuffle=True), so the same
    seed always gives the same questions in the same order; limit then keeps the first `limit` examples."""
    result = _call_builder(name, _resolve(name), seed, options)
    task = result if isinstance(result, Task) else Task(name=name, examples=tuple(result))
    if not task.examples:
        raise CalibError(f"task {name!r} has no examples; check its options and data")
    if shuffle:
        task = task.shuffle(seed)
    return task.limit(limit)
