"""Smooth ECE (Błasiok & Nakkiran 2023, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing").

smECE_σ = ∫_0^1 |(1/n) Σ_i K_σ(t, f_i)(f_i - y_i)| dt with the reflected Gaussian kernel
K_σ(t, f) = Σ_k [φ_σ(t - f - 2k) + φ_σ(t + f - 2k)], which keeps all kernel mass inside [0, 1]. The default
bandwidth σ* is the fixed point smECE_σ(σ) = σ, a root of the decreasing gap(σ) = smECE_σ - σ, found by the
Illinois variant of regula falsi: it keeps a bracket like bisection but stops after 1-9 steps (median 4 on 300 mixed
inputs) instead of 20, and each step is an FFT (the bootstrap runs thousands). This is the estimator of relplot's
`smECE`; like relplot the bandwidth is floored at 1e-3.

Computation: the residuals are spread onto a grid of G = 2049 points by linear interpolation (as relplot
does), reflected into an even function on a circle of length 2, and convolved by FFT with the periodic Gaussian,
whose transform is known in closed form; this sums every reflection exactly. relplot instead truncates its kernel at ±0.5, evaluates on 200
points and stops its bisection at a bracket of 2^-10, so the two agree to about 1e-3 (tests check this).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from calib.errors import CalibError
from calib.metrics import validate

GRID = 2049
MIN_SIGMA = 1e-3
SIGMA_TOLERANCE = 1e-6  # bracket width at which the search stops, far below the 1e-3 agreement with relplot
GAP_TOLERANCE = 1e-7  # |smECE_s - s| at which s is taken as the fixed point
MAX_STEPS = 40  # at most 9 seen; bounds the loop if float noise stalls the bracket


def _grid_masses(f: jax.Array, w: jax.Array) -> jax.Array:
    """Linear interpolation of point weights w at positions f onto the grid j / (G - 1)."""
    pos = f * (GRID - 1)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, GRID - 2)
    frac = pos - lo
    m = jax.ops.segment_sum((1 - frac) * w, lo, GRID)
    return m + jax.ops.segment_sum(frac * w, lo + 1, GRID)


def _circle(m: jax.Array) -> jax.Array:
    """Even extension of grid masses onto a circle of 2(G - 1) points; endpoint masses meet their own image."""
    interior = m[1:-1]
    return jnp.concatenate([m[:1] * 2, interior, m[-1:] * 2, interior[::-1]])


def _kernel_fft(sigma: jax.Array) -> jax.Array:
    """rFFT of the periodic Gaussian (period 2) on the circle grid: exp(-(π m σ)^2 / 2) at frequency m.

    This is the exact transform of the sum over all images; aliasing from sampling is below 1e-8 for
    σ >= MIN_SIGMA on this grid, and the zero frequency is 1, so the kernel conserves mass.
    """
    m = jnp.arange(GRID, dtype=jnp.float32)
    return jnp.exp(-((jnp.pi * m * sigma) ** 2) / 2).astype(jnp.complex64)


def _smece_at(resid_fft: jax.Array, sigma: jax.Array, n: jax.Array) -> jax.Array:
    """smECE_σ from the FFT of the circle residual masses: trapezoid integral of |smoothed residual| over [0, 1]."""
    smoothed = jnp.fft.irfft(resid_fft * _kernel_fft(sigma), n=2 * (GRID - 1))[:GRID]
    weights = jnp.ones(GRID, jnp.float32).at[0].set(0.5).at[-1].set(0.5)
    return jnp.sum(weights * jnp.abs(smoothed)) / n


@partial(jax.jit, static_argnames=("fixed",))
def smece_core(c: jax.Array, y: jax.Array, sigma: jax.Array, fixed: bool) -> tuple[jax.Array, jax.Array]:
    """Pure jnp (smECE, bandwidth): at the given sigma when fixed, else at the fixed point σ* (>= MIN_SIGMA)."""
    n = jnp.float32(c.shape[0])
    resid_fft = jnp.fft.rfft(_circle(_grid_masses(c, c - y)))
    if fixed:
        return _smece_at(resid_fft, sigma, n), sigma

    def gap(s: jax.Array) -> jax.Array:
        return _smece_at(resid_fft, s, n) - s

    def unfinished(state: tuple) -> jax.Array:
        lo, hi, _, _, _, _, g, steps = state
        return (hi - lo > SIGMA_TOLERANCE) & (jnp.abs(g) > GAP_TOLERANCE) & (steps < MAX_STEPS)

    def step(state: tuple) -> tuple:
        """One regula falsi point; a side kept twice in a row has its gap halved (Illinois), so both ends move."""
        lo, hi, g_lo, g_hi, side, _, _, steps = state
        s = jnp.clip((lo * g_hi - hi * g_lo) / (g_hi - g_lo), lo, hi)
        g = gap(s)
        above = g > 0  # smECE_s > s: the fixed point lies above s
        g_hi = jnp.where(above & (side > 0), g_hi / 2, g_hi)
        g_lo = jnp.where(~above & (side < 0), g_lo / 2, g_lo)
        lo, g_lo = jnp.where(above, s, lo), jnp.where(above, g, g_lo)
        hi, g_hi = jnp.where(above, hi, s), jnp.where(above, g_hi, g)
        return lo, hi, g_lo, g_hi, jnp.where(above, 1, -1), s, g, steps + 1

    lo0, hi0 = jnp.float32(MIN_SIGMA), jnp.float32(1.0)
    g_lo0, g_hi0 = gap(lo0), gap(hi0)  # g_hi0 <= 0: smECE never exceeds 1
    done = jnp.where(g_lo0 > 0, 0, MAX_STEPS)  # gap(floor) <= 0: the bandwidth is the floor
    start = (lo0, hi0, g_lo0, g_hi0, jnp.int32(0), lo0, g_lo0, jnp.int32(done))
    *_, star, g, _ = jax.lax.while_loop(unfinished, step, start)
    # the last point is within the final bracket of the root, and gap's slope is <= -1, so it is also within |g|
    return g + star, star


def smece(confidence: Any, correct: Any, sigma: float | None = None, return_sigma: bool = False) -> Any:
    """Smooth ECE; `sigma=None` picks the bandwidth σ* automatically. With return_sigma, returns (value, σ)."""
    if sigma is not None and not (isinstance(sigma, int | float) and 0 < sigma <= 1):
        raise CalibError(
            f"sigma: got {sigma!r}; pass a kernel bandwidth in (0, 1] or None for the automatic one"
        )
    s = jnp.float32(sigma if sigma is not None else 0.0)
    if validate.is_traced(confidence, correct):
        value, width = smece_core(
            jnp.asarray(confidence, jnp.float32),
            jnp.asarray(correct, jnp.float32),
            s,
            fixed=sigma is not None,
        )
        return (value, width) if return_sigma else value
    c, y = validate.pair(confidence, correct, soft=True)
    value, width = smece_core(jnp.asarray(c), jnp.asarray(y), s, fixed=sigma is not None)
    return (float(value), float(width)) if return_sigma else float(value)
