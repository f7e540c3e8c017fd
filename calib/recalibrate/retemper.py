"""Post-hoc temperature on stored generations: re-temper saved token log-probs without re-generating.

A generation stores, per position, the chosen token's log-prob ℓ_c and the top-k log-probs ℓ_1..ℓ_k, all under
the untempered distribution p. Under temperature T (β = 1/T) the chosen token's probability is
p_c^β / Σ_v p_v^β, and the normaliser needs the whole vocabulary. The top-k terms are exact; the tail (mass
R = 1 - Σ_top-k p_j spread over the other m = V - k tokens) is not stored, so it is approximated:
- tail="uniform" (default): R spread evenly over the m tokens, Σ_tail p^β ≈ m^(1-β) R^β (maximum entropy);
- tail="single": R on one token, Σ_tail p^β ≈ R^β.
Because x^β is concave for T > 1 and convex for T < 1, the exact value always lies between these two, and at
T = 1 both are exact. A chosen token outside the top-k is itself part of the tail and counted exactly.
The answers (and so accuracy) do not change; only their token log-probs and hence confidences do.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from calib.errors import CalibError
from calib.recalibrate import _checks

TAILS = ("uniform", "single")


def _log_tail(log_mass: np.ndarray, beta: float, n_tokens: np.ndarray, tail: str) -> np.ndarray:
    """log Σ_tail p^β for tail mass exp(log_mass) over n_tokens tokens (-inf when there is no tail)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (1.0 - beta) * np.log(np.maximum(n_tokens, 1)) if tail == "uniform" else 0.0
        out = beta * log_mass + spread
    return np.where((n_tokens > 0) & np.isfinite(log_mass), out, -np.inf)


def temper_token_logprobs(
    token_logprobs: Any, top_logprobs: Any, temperature: float, vocab_size: int, tail: str = "uniform"
) -> np.ndarray:
    """Tempered log-probs [T] of the chosen tokens, from their untempered log-probs [T] and the top-k [T, k]."""
    t = _checks.temperature(temperature)
    if tail not in TAILS:
        raise CalibError(f"tail: got {tail!r}; choose 'uniform' or 'single'")
    lc = np.asarray(token_logprobs, np.float64)
    top = np.asarray(top_logprobs, np.float64)
    if top.ndim == 1 and top.size == 0:
        top = top.reshape(len(lc), 0)
    if lc.ndim != 1 or top.ndim != 2 or top.shape[0] != lc.shape[0]:
        raise CalibError(
            f"token_logprobs {lc.shape} and top_logprobs {top.shape} do not match; pass [T] and [T, k] of one answer"
        )
    k = top.shape[1]
    if k > vocab_size:
        raise CalibError(
            f"vocab_size {vocab_size} is smaller than the {k} stored top log-probs; pass the model's"
        )
    if lc.size == 0:
        return lc
    beta = 1.0 / t
    # the chosen token is in the top-k unless it is below the smallest stored value (ties contribute the same)
    in_top = lc >= (top.min(axis=1) - 1e-6 if k else np.full(lc.shape, np.inf))
    top_mass = np.exp(top).sum(axis=1) if k else np.zeros_like(lc)
    tail_mass = np.maximum(1.0 - top_mass, 0.0)
    with np.errstate(divide="ignore"):
        other_tail = np.where(in_top, tail_mass, np.maximum(tail_mass - np.exp(lc), 0.0))
        n_other = (vocab_size - k) - np.where(in_top, 0, 1)
        terms = [
            beta * top if k else np.full((len(lc), 0), -np.inf),
            np.where(in_top, -np.inf, beta * lc)[:, None],
            _log_tail(np.log(other_tail), beta, n_other, tail)[:, None],
        ]
    log_z = np.logaddexp.reduce(np.concatenate(terms, axis=1), axis=1)
    return beta * lc - log_z


def temper_generations(gens: Any, temperature: float, vocab_size: int, tail: str = "uniform") -> Any:
    """A copy of calib.decode.Generations whose token_logprobs are re-tempered at T (texts unchanged).

    Feed the copy to any estimator (MSP, inverse perplexity, ...) to get post-hoc tempered confidences.
    Token entropies and top-k lists are left as generated; meta["posthoc_temperature"] records T.
    """
    if not gens.top_logprobs or not any(len(row) for row in gens.top_logprobs):
        raise CalibError(
            "these generations stored no top log-probs; call generate(..., top_logprobs=5) or more"
        )
    new_lp = [
        [
            temper_token_logprobs(lp, top, temperature, vocab_size, tail).astype(np.float32)
            for lp, top in zip(row_lp, row_top)
        ]
        for row_lp, row_top in zip(gens.token_logprobs, gens.top_logprobs)
    ]
    meta = dict(gens.meta, posthoc_temperature=float(temperature), posthoc_tail=tail)
    return dataclasses.replace(gens, token_logprobs=new_lp, meta=meta)
