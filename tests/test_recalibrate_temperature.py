"""Token temperature scaling: recovery of a known temperature, exact re-tempering, Full-ECE per T, bad input."""

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from calib.errors import CalibError
from calib.metrics import ece, full_ece
from calib.recalibrate import (
    TemperatureScaler,
    fit_temperature,
    full_ece_by_temperature,
    split_indices,
    temper_logits,
    temper_logprobs,
)


def numpy_ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    """Independent equal-width ECE (Guo et al. 2017): sum_b n_b/N |acc_b - conf_b|."""
    idx = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return total


def synthetic(true_t: float, n: int = 12000, v: int = 12, seed: int = 0):
    """Labels drawn from softmax(z); the model reports z * true_t, i.e. true_t times too sharp (T > 1 overconfident)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, v)) * 1.5
    p = softmax(z, axis=1)
    y = (p.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return (z * true_t).astype(np.float32), y


@pytest.mark.parametrize("true_t", [2.0, 1.5, 0.7])
def test_fitted_temperature_recovers_truth_and_reduces_ece(true_t):
    logits, y = synthetic(true_t)
    split = split_indices(len(y), 0.5, seed=1)
    scaler = TemperatureScaler().fit(logits[split.calibration], y[split.calibration])
    assert abs(scaler.temperature - true_t) / true_t < 0.05

    test_z, test_y = logits[split.test], y[split.test]
    before = softmax(test_z, axis=1)
    after = softmax(scaler.transform_logits(test_z), axis=1)
    assert np.array_equal(before.argmax(1), after.argmax(1))  # top-1 answers unchanged
    hit = (before.argmax(1) == test_y).astype(float)
    ece_before, ece_after = ece(before.max(1), hit), ece(after.max(1), hit)
    assert ece_after < ece_before
    if true_t != 1.0:
        assert ece_after < 0.5 * ece_before
    # the library ECE agrees with an independent numpy computation
    assert ece_after == pytest.approx(numpy_ece(after.max(1), hit), abs=1e-5)
    assert scaler.nll(test_z, test_y) < TemperatureScaler(1.0).nll(test_z, test_y)


def test_fit_matches_a_numpy_grid_search():
    logits, y = synthetic(1.8, n=3000, seed=3)
    grid = np.linspace(1.0, 3.0, 801)
    nll = [-np.mean(log_softmax(logits / t, axis=1)[np.arange(len(y)), y]) for t in grid]
    assert fit_temperature(logits, y) == pytest.approx(grid[int(np.argmin(nll))], abs=3e-3)


def test_calibrated_logits_give_temperature_near_one():
    logits, y = synthetic(1.0)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.03)


def test_temper_logprobs_is_exact_log_softmax():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5, 40)) * 3
    lp = log_softmax(z, axis=1)
    for t in (0.5, 1.0, 1.7):
        np.testing.assert_allclose(temper_logprobs(lp, t), log_softmax(z / t, axis=1), atol=1e-12)
        np.testing.assert_allclose(temper_logits(z, t), z / t, rtol=1e-6)


def test_full_ece_by_temperature_matches_dense_metric_and_numpy():
    logits, y = synthetic(2.0, n=400, v=8, seed=5)
    temps = [0.7, 1.0, 2.0]
    got = full_ece_by_temperature(logits, y, temps, n_bins=10, chunk=64)
    for t in temps:
        p = softmax(logits.astype(np.float64) / t, axis=1)
        assert got[t] == pytest.approx(full_ece(p, y, n_bins=10), abs=1e-5)
        # independent: (1/n) sum_m |sum_{(i,k) in m} (1[y_i = k] - p_ik)|
        hit = np.zeros_like(p)
        hit[np.arange(len(y)), y] = 1
        bins = np.minimum((p * 10).astype(int), 9)
        resid = np.bincount(bins.ravel(), (hit - p).ravel(), minlength=10)
        assert got[t] == pytest.approx(np.abs(resid).sum() / len(y), abs=1e-4)
    assert got[2.0] < got[1.0]  # the true temperature is better calibrated at token level too


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "warm", True])
def test_bad_temperature_is_one_line_error(bad):
    with pytest.raises(CalibError) as err:
        TemperatureScaler(bad)
    assert "\n" not in str(err.value) and "temperature" in str(err.value)
    with pytest.raises(CalibError):
        temper_logprobs(np.zeros((1, 3)), bad)


def test_empty_or_bad_calibration_split_is_one_line_error():
    with pytest.raises(CalibError, match="calibration split is empty") as err:
        fit_temperature(np.zeros((0, 5)), np.zeros(0, int))
    assert "\n" not in str(err.value)
    with pytest.raises(CalibError, match="token ids"):
        fit_temperature(np.zeros((2, 5)), np.array([0, 5]))
    with pytest.raises(CalibError, match="integer"):
        fit_temperature(np.zeros((2, 5)), np.array([0.5, 1.0]))
    with pytest.raises(CalibError, match="NaN"):
        fit_temperature(np.full((2, 5), np.nan), np.array([0, 1]))
