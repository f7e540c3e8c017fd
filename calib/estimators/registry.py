"""Estimator registry: built-ins register themselves; outside packages add theirs through the `calib.estimators`
entry-point group (``[project.entry-points."calib.estimators"] my_name = "my_pkg.module:MyEstimator"``)."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from calib.errors import CalibError

ENTRY_POINT_GROUP = "calib.estimators"
F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_estimator(target: Any = None, /, *, name: str | None = None, replace: bool = False) -> Any:
    """Register an estimator class or factory under `name` (default: its `name` attribute).

    Usable as ``@register_estimator``, ``@register_estimator("my_name")`` or ``register_estimator(cls, name=...)``.
    """
    if isinstance(target, str):
        name, target = target, None

    def add(factory: F) -> F:
        key = name or getattr(factory, "name", None)
        if not isinstance(key, str) or not key:
            raise CalibError(f"register_estimator: {factory!r} has no name; pass name='my_estimator'")
        existing = _REGISTRY.get(key)
        if existing is not None and existing is not factory and not replace:
            raise CalibError(
                f"estimator name {key!r} is already registered by {_describe(existing)}; choose another name "
                "or pass replace=True"
            )
        _REGISTRY[key] = factory
        return factory

    return add if target is None else add(target)


def _describe(factory: Any) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def list_estimators() -> list[str]:
    """Names of every estimator: built-in, registered at run time, and installed plugins."""
    return sorted(set(_REGISTRY) | set(_entry_points()))


def get_estimator(name: str, **params: Any) -> Any:
    """A ready estimator instance: `get_estimator("semantic_entropy", weighted=False)`."""
    factory = _REGISTRY.get(name)
    if factory is None:
        ep = _entry_points().get(name)
        if ep is None:
            raise CalibError(f"unknown estimator {name!r}; known estimators: {', '.join(list_estimators())}")
        try:
            factory = ep.load()
        except Exception as err:  # a broken plugin must name itself, whatever it raised
            raise CalibError(f"estimator plugin {name!r} ({ep.value}) failed to import: {err}") from err
        _REGISTRY.setdefault(name, factory)
    try:
        estimator = factory(**params)
    except TypeError as err:
        raise CalibError(f"estimator {name!r} rejected parameters {sorted(params)}: {err}") from err
    for attribute in ("name", "needs"):
        if not hasattr(estimator, attribute):
            raise CalibError(f"estimator {name!r} ({_describe(factory)}) has no `{attribute}` attribute")
    if not callable(estimator):
        raise CalibError(f"estimator {name!r} ({_describe(factory)}) is not callable on a bundle")
    return estimator
