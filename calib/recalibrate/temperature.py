"""Temperature scaling of token logits (Guo et al. 2017): one T > 0 fitted by NLL on a calibration split.

softmax(z / T) keeps the arg-max token (top-1 accuracy is unchanged) and only sharpens (T < 1) or flattens (T > 1)
the distribution. The fit runs optax's L-BFGS on log T, so T stays positive without constraints; the NLL is
unimodal in log T (it is convex in 1/T), so the optimum is the global one. Applying a fitted T to stored logits or
log-probs is "post-hoc rescaling" (answers unchanged); passing it to calib.decode.generate is a decoding
temperature (re-generation, which changes the answers and hence accuracy). Both sides go in one table with sweep.py.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import partial
from typing import Any, Self

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from calib.errors import CalibError
from calib.recalibrate import _checks
from calib.recalibrate.base import RecalibrationModel

# log T is kept inside [log 1e-2, log 1e2]: beyond that the calibration data are degenerate (e.g. all arg-max).
LOG_T_RANGE = (float(np.log(1e-2)), float(np.log(1e2)))


def _check_logits(logits: Any, labels: Any) -> tuple[jax.Array, jax.Array]:
    try:
        z = np.asarray(logits, dtype=np.float32)
        y = np.asarray(labels)
    except (TypeError, ValueError) as err:
        raise CalibError(
            f"logits/labels cannot be read as arrays ({err}); pass [n, V] floats and [n] ints"
        ) from err
    if z.ndim != 2:
        raise CalibError(
            f"logits: has shape {z.shape}; pass one row of vocabulary logits per position, [n, V]"
        )
    if z.shape[0] == 0:
        raise CalibError(
            "the calibration split is empty (0 token positions); give it at least one scored token"
        )
    if y.shape != (z.shape[0],) or not np.issubdtype(y.dtype, np.integer):
        raise CalibError(
            f"labels: need {z.shape[0]} integer token ids (one per logits row), got {y.dtype} {y.shape}"
        )
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise CalibError(f"labels: token ids must lie in [0, {z.shape[1]}) (the logits' vocabulary)")
    if not np.isfinite(z).all():
        raise CalibError("logits: has NaN or infinite values; check the model output")
    return jnp.asarray(z), jnp.asarray(y, jnp.int32)


def _nll(log_t: jax.Array, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the labels under softmax(logits / exp(log_t))."""
    scaled = logits * jnp.exp(-jnp.clip(log_t, *LOG_T_RANGE))
    picked = jnp.take_along_axis(scaled, labels[:, None], axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(scaled, axis=-1) - picked)


@partial(jax.jit, static_argnames=("max_iter",))
def _fit_log_t(
    logits: jax.Array, labels: jax.Array, max_iter: int, tol: float
) -> tuple[jax.Array, jax.Array]:
    """L-BFGS on log T, run as one compiled while_loop; returns (log T, iterations)."""

    def fun(log_t: jax.Array) -> jax.Array:
        return _nll(log_t, logits, labels)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def going(carry):
        _, state = carry
        count = otu.tree_get(state, "count")
        return (count == 0) | ((count < max_iter) & (otu.tree_norm(otu.tree_get(state, "grad")) >= tol))

    init = jnp.zeros((), jnp.float32)
    log_t, state = jax.lax.while_loop(going, step, (init, opt.init(init)))
    return jnp.clip(log_t, *LOG_T_RANGE), otu.tree_get(state, "count")


def fit_temperature(logits: Any, labels: Any, max_iter: int = 100, tol: float = 1e-6) -> float:
    """The T > 0 minimising the NLL of `labels` [n] under softmax(logits [n, V] / T): calibration rows only.

    T is kept in [0.01, 100]; reaching a bound (warned) means the logits carry almost no information about the
    labels (T -> inf: uniform predictions beat them) or the labels are always the arg-max (T -> 0).
    """
    z, y = _check_logits(logits, labels)
    log_t, _ = _fit_log_t(z, y, max_iter=_checks.positive_int(max_iter, "max_iter"), tol=float(tol))
    lo, hi = np.exp(LOG_T_RANGE)
    t = float(np.clip(np.exp(float(log_t)), lo, hi))
    if t <= lo * 1.001 or t >= hi * 0.999:
        warnings.warn(
            f"fitted temperature {t:g} reached the bound [{lo:g}, {hi:g}]: the logits barely inform the labels",
            RuntimeWarning,
            stacklevel=2,
        )
    return t


def temper_logits(logits: Any, temperature: float) -> np.ndarray:
    """logits / T (the arg-max is unchanged)."""
    t = _checks.temperature(temperature)
    return np.asarray(logits, np.float32) / np.float32(t)


def temper_logprobs(logprobs: Any, temperature: float, axis: int = -1) -> np.ndarray:
    """Exact log-probs of softmax(z / T) from full-vocabulary log-probs log softmax(z) (the shift cancels)."""
    t = _checks.temperature(temperature)
    lp = np.asarray(logprobs, np.float64) / t
    return lp - np.logaddexp.reduce(lp, axis=axis, keepdims=True)


class TemperatureScaler(RecalibrationModel):
    """A fitted token temperature: apply it to logits or full log-prob rows, or pass it to generate()."""

    kind = "temperature"

    def __init__(self, temperature: float = 1.0):
        self.temperature = _checks.temperature(temperature)

    def fit(self, logits: Any, labels: Any, max_iter: int = 100) -> Self:
        """Fit T on calibration-split token logits [n, V] and their observed next tokens [n]."""
        self.temperature = fit_temperature(logits, labels, max_iter=max_iter)
        return self

    def transform_logits(self, logits: Any) -> np.ndarray:
        return temper_logits(logits, self.temperature)

    def transform_logprobs(self, logprobs: Any, axis: int = -1) -> np.ndarray:
        return temper_logprobs(logprobs, self.temperature, axis)

    def nll(self, logits: Any, labels: Any) -> float:
        """Mean token NLL at this temperature (evaluate on the test split)."""
        z, y = _check_logits(logits, labels)
        return float(_nll(jnp.float32(np.log(self.temperature)), z, y))

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @classmethod
    def from_parts(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Self:
        _checks.field_keys(params, arrays, {"temperature"}, set())
        return cls(_checks.field_number(params, "temperature", minimum=0.0, above=True))


def token_logits(
    lm: Any, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced logits [n, V] at every continuation token and the tokens themselves [n].

    The prompt is encoded as calib.decode.score does (lm.encode), the continuation without special tokens. Rows
    are right-padded to a few bucketed lengths (causal attention: padding never changes earlier logits), so the
    forward pass compiles once per bucket. Memory: n * V * 4 bytes on the host.
    """
    from calib.decode.planning import bucket_length

    if len(prompts) != len(continuations) or not prompts:
        raise CalibError(
            f"token_logits needs as many continuations as prompts (>= 1), got {len(prompts)} and {len(continuations)}"
        )
    pairs = []
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        p_ids, c_ids = lm.encode(p), list(lm.tokenizer(c, add_special_tokens=False)["input_ids"])
        if not p_ids or not c_ids:
            raise CalibError(
                f"pair {i} has an empty prompt or continuation; drop it from the calibration split"
            )
        if len(p_ids) + len(c_ids) > lm.config.max_context:
            raise CalibError(
                f"pair {i} has {len(p_ids) + len(c_ids)} tokens, over the model's context; shorten it"
            )
        pairs.append((p_ids, c_ids))
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    order = sorted(range(len(pairs)), key=lambda i: sum(map(len, pairs[i])))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        length = min(bucket_length(max(sum(map(len, pairs[i])) for i in idx)), lm.config.max_context)
        ids = np.full((len(idx), length), lm.config.pad_id, np.int32)
        for j, i in enumerate(idx):
            seq = pairs[i][0] + pairs[i][1]
            ids[j, : len(seq)] = seq
        logits = lm.logits(ids)
        for j, i in enumerate(idx):
            p_ids, c_ids = pairs[i]
            first = len(p_ids) - 1  # the logits at position t predict token t + 1
            out[i] = (logits[j, first : first + len(c_ids)], np.asarray(c_ids, np.int32))
    rows = [out[i] for i in range(len(pairs))]
    return np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])


def full_ece_by_temperature(
    logits: Any, labels: Any, temperatures: Sequence[float], n_bins: int = 15, chunk: int = 256
) -> dict[float, float]:
    """Full-ECE of softmax(logits / T) for each T, from one set of teacher-forced logits (no re-generation)."""
    from calib.metrics import full_ece_accumulate, full_ece_from_bins

    z, y = _check_logits(logits, labels)
    result = {}
    for t in temperatures:
        inv = 1.0 / _checks.temperature(t)
        sums = [np.zeros(n_bins, np.float64) for _ in range(3)]
        for s in range(0, z.shape[0], chunk):
            parts = full_ece_accumulate(
                jax.nn.softmax(z[s : s + chunk] * inv, axis=-1), y[s : s + chunk], n_bins
            )
            for acc, part in zip(sums, parts):
                acc += np.asarray(part, np.float64)
        result[float(t)] = full_ece_from_bins(*sums, n_positions=z.shape[0])
    return result
