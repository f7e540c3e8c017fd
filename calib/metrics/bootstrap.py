"""Bootstrap confidence intervals for any metric, resampling questions (rows) with replacement.

Resamples run in a few jitted batches: per-resample PRNG keys give index rows, and the metric is vectorised over
them with `vmap`; memory stays bounded by batch_size * n. Every metric in calib.metrics
accepts traced arrays, so `bootstrap_ci(ece, ...)` and `bootstrap_ci(partial(ece, n_bins=10), ...)` work as
they are. A metric that only handles concrete numpy arrays falls back to a Python loop over the same resamples.
The interval is the percentile interval [q(alpha/2), q(1 - alpha/2)] of the resampled values.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib.errors import CalibError
from calib.metrics import validate
from calib.metrics.selective import UNDEFINED

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


def _device_array(x: Any, name: str) -> np.ndarray:
    """float32 or int32 rows, converted on the host (an eager jnp conversion is one more program per shape)."""
    arr = np.asarray(x)
    if arr.ndim == 0 or arr.shape[0] == 0:
        raise CalibError(f"{name}: is empty or a scalar; pass one row per question")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int32)
    raise CalibError(f"{name}: has dtype {arr.dtype}; pass numbers")


def _settings(n_resamples: Any, alpha: Any, seed: Any) -> None:
    validate.positive_int(n_resamples, "n_resamples", minimum=2)
    if not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise CalibError(
            f"alpha: got {alpha!r}; pass the two-sided error rate in (0, 1), e.g. 0.05 for a 95% CI"
        )
    validate.positive_int(seed, "seed", minimum=0)


@functools.partial(jax.jit, static_argnums=1)
def _indices(keys: jax.Array, n: int) -> jax.Array:
    """Row indices [len(keys), n] of the resamples, one PRNG key each.

    Compiled once per (batch, n) and shared by every metric: threefry takes seconds to compile on CPU.
    """
    return jax.vmap(lambda k: jax.random.randint(k, (n,), 0, n))(keys)


def _index_batches(
    seed: int, n_resamples: int, n: int, batch_size: int | None
) -> Iterator[tuple[jax.Array, int]]:
    """(indices [batch, n], number of real resamples in it); the last batch is padded to the same shape."""
    most = batch_size or max(1, BATCH_ELEMENTS // n)
    validate.positive_int(most, "batch_size")
    n_batches = -(-n_resamples // most)
    batch = -(-n_resamples // n_batches)  # equal batches, so one compiled shape
    keys = jax.random.split(jax.random.key(seed), n_resamples)
    keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], n_batches * batch - n_resamples, axis=0)])
    for start in range(0, n_resamples, batch):
        yield _indices(keys[start : start + batch], n), min(batch, n_resamples - start)


@functools.lru_cache(maxsize=32)
def _program(stat: Callable) -> Callable:
    """Jitted (indices [B, n], *arrays) -> [B] values of stat on each resample, vectorised with vmap."""

    @jax.jit
    def run(idx: jax.Array, *arrays: jax.Array) -> jax.Array:
        return jax.vmap(lambda i: jnp.asarray(stat(*(a[i] for a in arrays)), jnp.float32))(idx)

    return run


def _resample(
    stat: Callable, arrays: tuple[np.ndarray, ...], n_resamples: int, seed: int, batch_size: int | None
) -> np.ndarray:
    n = arrays[0].shape[0]
    batches = list(_index_batches(seed, n_resamples, n, batch_size))
    try:
        out = [np.asarray(_program(stat)(idx, *arrays))[:valid] for idx, valid in batches]
    except _NOT_TRACEABLE:
        warnings.warn(
            "bootstrap: metric_fn cannot be traced by JAX; resampling in a slow Python loop instead",
            RuntimeWarning,
            stacklevel=3,
        )
        host = [np.asarray(a) for a in arrays]
        out = [
            np.array([float(stat(*(a[i] for a in host))) for i in np.asarray(idx)[:valid]])
            for idx, valid in batches
        ]
    return np.concatenate(out).astype(np.float64)


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
def _fused(stats: tuple[Callable, ...], n_resamples: int, batch: int) -> Callable:
    """Jitted (seed, start, c, y, point_c, point_y) -> (point [M], values [batch, M]) for M metrics at once.

    The resample keys and indices are those of `_index_batches` (same threefry bits, derived inside the program),
    so every metric sees the resamples bootstrap_ci draws; one program per sample size serves all M metrics.
    """

    def values_of(c: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.stack([jnp.asarray(stat(c, y), jnp.float32) for stat in stats])

    @jax.jit
    def run(seed, start, c, y, point_c, point_y):
        n = c.shape[0]
        keys = jax.random.split(jax.random.key(seed), n_resamples)
        pad = -(-n_resamples // batch) * batch - n_resamples
        keys = jnp.concatenate([keys, jnp.repeat(keys[-1:], pad, axis=0)])
        idx = _indices(jax.lax.dynamic_slice_in_dim(keys, start, batch), n)
        return values_of(point_c, point_y), jax.vmap(lambda i: values_of(c[i], y[i]))(idx)

    return run


def bootstrap_metrics(
    metric_fns: Mapping[str, Callable],
    confidence: Any,
    correct: Any,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, BootstrapResult]:
    """bootstrap_ci of several metrics of one (confidence [n] in [0, 1], correct [n] in [0, 1]) pair, in one
    compiled program per sample size instead of two per metric (the evaluate stage's 14 metrics: ~30 programs
    per sample size before). Same resamples, so the same intervals as bootstrap_ci metric by metric.

    The inputs are validated once as the binary metrics do (`validate.pair`, soft labels allowed), not by each
    metric; a metric that is NaN on the full data warns as calling it would. Every metric must be traceable.
    """
    _settings(n_resamples, alpha, seed)
    names = list(metric_fns)
    if seed >= 1 << 32:  # the program takes a uint32 seed; key(seed) of a larger one differs from that
        return {
            name: bootstrap_ci(fn, confidence, correct, n_resamples, alpha, seed, batch_size)
            for name, fn in metric_fns.items()
        }
    if not names:
        return {}
    point_c, point_y = validate.pair(confidence, correct, soft=True)
    arrays = (_device_array(confidence, "confidence"), _device_array(correct, "correct"))
    n = arrays[0].shape[0]
    most = validate.positive_int(batch_size or max(1, BATCH_ELEMENTS // n), "batch_size")
    n_batches = -(-n_resamples // most)
    batch = -(-n_resamples // n_batches)
    program = _fused(tuple(metric_fns[name] for name in names), n_resamples, batch)
    seed_arr = np.asarray(seed, np.uint32)
    points, values = None, []
    for start in range(0, n_resamples, batch):
        point, vals = program(seed_arr, np.asarray(start, np.int32), *arrays, point_c, point_y)
        points = np.asarray(point, np.float64) if points is None else points
        values.append(np.asarray(vals, np.float64)[: min(batch, n_resamples - start)])
    values = np.concatenate(values)
    out = {}
    for m, name in enumerate(names):
        point = float(points[m])
        if np.isnan(point):
            why = UNDEFINED.get(name, "undefined on these data")
            warnings.warn(f"{name}: {why}; returning NaN", RuntimeWarning, stacklevel=2)
        out[name] = _interval(point, values[:, m], alpha)
    return out


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
