"""Bootstrap confidence intervals for any metric, resampling questions (rows) with replacement.

All resamples run as one jitted program: `jax.lax.map` over per-resample PRNG keys, vectorised in batches with
`vmap`, so memory stays bounded by batch_size * n while the work is batched. Every metric in calib.metrics
accepts traced arrays, so `bootstrap_ci(ece, ...)` and `bootstrap_ci(partial(ece, n_bins=10), ...)` work as
they are. A metric that only handles concrete numpy arrays falls back to a Python loop over the same resamples.
The interval is the percentile interval [q(alpha/2), q(1 - alpha/2)] of the resampled values.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib.errors import CalibError
from calib.metrics import validate

# Rows (resamples x predictions) handled by one vmapped batch; bounds the memory of the intermediate arrays.
BATCH_ELEMENTS = 1 << 22

_NOT_TRACEABLE = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


class BootstrapResult(NamedTuple):
    """Point estimate on the full data and the percentile interval; unpacks as (point, low, high)."""

    point: float
    low: float
    high: float


def _device_array(x: Any, name: str) -> jax.Array:
    arr = np.asarray(x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise CalibError(f"{name}: is empty or a scalar; pass one row per question")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.floating):
        return jnp.asarray(arr, jnp.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return jnp.asarray(arr, jnp.int32)
    raise CalibError(f"{name}: has dtype {arr.dtype}; pass numbers")


def _settings(n_resamples: Any, alpha: Any, seed: Any) -> None:
    validate.positive_int(n_resamples, "n_resamples", minimum=2)
    if not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise CalibError(
            f"alpha: got {alpha!r}; pass the two-sided error rate in (0, 1), e.g. 0.05 for a 95% CI"
        )
    validate.positive_int(seed, "seed", minimum=0)


@functools.lru_cache(maxsize=32)
def _program(stat: Callable, n_resamples: int, batch_size: int) -> Callable:
    """Jitted (key, *arrays) -> [n_resamples] resampled values of stat(*arrays)."""

    @jax.jit
    def run(key: jax.Array, *arrays: jax.Array) -> jax.Array:
        n = arrays[0].shape[0]

        def one(k: jax.Array) -> jax.Array:
            idx = jax.random.randint(k, (n,), 0, n)
            return jnp.asarray(stat(*(a[idx] for a in arrays)), jnp.float32)

        return jax.lax.map(one, jax.random.split(key, n_resamples), batch_size=batch_size)

    return run


def _loop(stat: Callable, key: jax.Array, n_resamples: int, arrays: tuple[jax.Array, ...]) -> np.ndarray:
    """The same resamples, one Python call each, for metrics that cannot be traced."""
    n = arrays[0].shape[0]
    host = [np.asarray(a) for a in arrays]
    out = np.empty(n_resamples)
    for i, k in enumerate(jax.random.split(key, n_resamples)):
        idx = np.asarray(jax.random.randint(k, (n,), 0, n))
        out[i] = float(stat(*(a[idx] for a in host)))
    return out


def _resample(
    stat: Callable, arrays: tuple[jax.Array, ...], n_resamples: int, seed: int, batch_size: int | None
) -> np.ndarray:
    n = arrays[0].shape[0]
    batch = batch_size or max(1, min(n_resamples, BATCH_ELEMENTS // n))
    validate.positive_int(batch, "batch_size")
    key = jax.random.key(seed)
    try:
        return np.asarray(_program(stat, n_resamples, batch)(key, *arrays), np.float64)
    except _NOT_TRACEABLE:
        warnings.warn(
            "bootstrap: metric_fn cannot be traced by JAX; resampling in a slow Python loop instead",
            RuntimeWarning,
            stacklevel=3,
        )
        return _loop(stat, key, n_resamples, arrays)


def _interval(point: float, values: np.ndarray, alpha: float) -> BootstrapResult:
    finite = values[np.isfinite(values)]
    if finite.size < values.size:
        warnings.warn(
            f"bootstrap: {values.size - finite.size} of {values.size} resamples gave NaN (e.g. a single "
            "class in the resample); the interval uses the others",
            RuntimeWarning,
            stacklevel=3,
        )
    if finite.size == 0:
        return BootstrapResult(point, float("nan"), float("nan"))
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return BootstrapResult(point, float(low), float(high))


def bootstrap_ci(
    metric_fn: Callable,
    confidence: Any,
    correct: Any,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    batch_size: int | None = None,
) -> BootstrapResult:
    """(point, low, high): metric_fn(confidence, correct) and its 1 - alpha percentile bootstrap interval.

    Rows (questions) are resampled with replacement, the same rows for both arrays; `confidence` may also be a
    [n, K] probability matrix for multi-class metrics. Same seed, same resamples, same interval.
    """
    _settings(n_resamples, alpha, seed)
    point = float(metric_fn(confidence, correct))  # validates the inputs with the metric's own checks
    arrays = (_device_array(confidence, "confidence"), _device_array(correct, "correct"))
    validate.same_length(("confidence", arrays[0]), ("correct", arrays[1]))
    values = _resample(metric_fn, arrays, n_resamples, seed, batch_size)
    return _interval(point, values, alpha)


@functools.lru_cache(maxsize=32)
def _difference(metric_fn: Callable) -> Callable:
    def diff(a: Any, b: Any, y: Any) -> Any:
        return metric_fn(a, y) - metric_fn(b, y)

    return diff


def paired_bootstrap(
    metric_fn: Callable,
    conf_a: Any,
    conf_b: Any,
    correct: Any,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    batch_size: int | None = None,
) -> BootstrapResult:
    """(difference, low, high) of metric_fn(conf_a) - metric_fn(conf_b) on the same resampled questions.

    Pairing removes the question-sampling noise the two estimators share, so the interval of the difference is
    much narrower than comparing two separate intervals; an interval excluding 0 means a significant difference.
    """
    _settings(n_resamples, alpha, seed)
    point = float(metric_fn(conf_a, correct)) - float(metric_fn(conf_b, correct))
    arrays = tuple(
        _device_array(x, name) for x, name in ((conf_a, "conf_a"), (conf_b, "conf_b"), (correct, "correct"))
    )
    validate.same_length(*zip(("conf_a", "conf_b", "correct"), arrays))
    values = _resample(_difference(metric_fn), arrays, n_resamples, seed, batch_size)
    return _interval(point, values, alpha)
