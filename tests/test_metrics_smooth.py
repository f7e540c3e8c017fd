"""smECE against a direct (grid-free) evaluation of its definition and against relplot, the authors' library."""

import numpy as np
import pytest
import relplot
from scipy.optimize import brentq

from calib.errors import CalibError
from calib.metrics import ece, smece


def direct_smece(f, y, sigma, points=8001):
    """(1/n) ∫_0^1 |Σ_i (f_i - y_i) K_σ(t, f_i)| dt with every reflection of the Gaussian summed explicitly."""
    t = np.linspace(0, 1, points)[:, None]
    shifts = 2.0 * np.arange(-2, 3)  # images beyond distance 3 weigh < exp(-50) for σ <= 0.3
    k = np.zeros((t.shape[0], len(f)))
    for s in shifts:
        k += np.exp(-((t - f - s) ** 2) / (2 * sigma**2)) + np.exp(-((t + f - s) ** 2) / (2 * sigma**2))
    k /= sigma * np.sqrt(2 * np.pi)
    smoothed = np.abs(k @ (f - y)) / len(f)
    return np.trapezoid(smoothed[:, 0] if smoothed.ndim > 1 else smoothed, t[:, 0])


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(9)
    f = rng.beta(2, 2, 300)
    y = (rng.random(300) < np.clip(f + 0.15 * np.cos(5 * f), 0, 1)).astype(float)
    return f, y


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.3])
def test_fixed_bandwidth_matches_direct_definition(data, sigma):
    f, y = data
    assert smece(f, y, sigma=sigma) == pytest.approx(direct_smece(f, y, sigma), abs=2e-4)


def test_automatic_bandwidth_is_the_fixed_point(data):
    f, y = data
    value, sigma = smece(f, y, return_sigma=True)
    star = brentq(lambda s: direct_smece(f, y, s, points=2001) - s, 1e-3, 0.5, xtol=1e-6)
    assert sigma == pytest.approx(star, abs=5e-4)
    assert value == pytest.approx(sigma, abs=1e-5)


@pytest.mark.parametrize(("n", "shift"), [(400, 0.0), (2000, 0.1), (2000, -0.25)])
def test_matches_relplot(n, shift):
    rng = np.random.default_rng(n)
    f = rng.random(n)
    y = (rng.random(n) < np.clip(f + shift, 0, 1)).astype(int)
    assert smece(f, y) == pytest.approx(relplot.smECE(f, y), abs=2e-3)
    assert smece(f, y, sigma=0.05) == pytest.approx(relplot.smECE_sigma(f, y, 0.05), abs=2e-3)


def test_one_signed_miscalibration_equals_mean_residual():
    # When the smoothed residual never changes sign, smECE equals |mean(f - y)| (the kernel keeps all mass).
    f = np.linspace(0.3, 0.7, 101)
    y = np.ones_like(f)
    assert smece(f, y) == pytest.approx(np.mean(1 - f), abs=1e-5)
    assert smece(f, y) == pytest.approx(ece(f, y), abs=1e-5)


def test_calibrated_data_has_small_smece_that_shrinks():
    rng = np.random.default_rng(0)
    small, large = (smece(f := rng.random(n), rng.random(n) < f) for n in (1000, 100_000))
    assert large < small
    assert large < 0.01


def test_bad_sigma():
    with pytest.raises(CalibError, match="sigma"):
        smece([0.2, 0.8], [0, 1], sigma=0)
