"""Binned calibration errors and scoring rules against torchmetrics, uncertainty-calibration and sklearn."""

import itertools

import calibration as uncal  # uncertainty-calibration (Kumar et al.), the library HELM uses for ECE
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import binary_calibration_error

from calib.metrics import (
    ace,
    average_bin_ce,
    brier,
    brier_skill,
    calibration,
    classwise_ece,
    debiased_l2_ce,
    ece,
    mce,
    nll,
    reliability_bins,
    rmsce,
)

N = 1500
uniform_bin_index = jax.jit(calibration.uniform_bin_index, static_argnums=1)
quantile_bin_index = jax.jit(calibration.quantile_bin_index, static_argnums=1)


@pytest.fixture(scope="module")
def binary_data():
    rng = np.random.default_rng(7)
    c = rng.random(N)
    y = (rng.random(N) < np.clip(c + 0.15 * np.sin(6 * c), 0, 1)).astype(np.int64)
    return c, y


@pytest.fixture(scope="module")
def multi_data():
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.full(4, 0.6), size=N)
    labels = np.array([rng.choice(4, p=row) for row in p])
    p = 0.7 * p + 0.3 * rng.dirichlet(np.ones(4), size=N)  # miscalibrate
    return p, labels


def test_torchmetrics_doctest_vectors():
    preds, target = [0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1]
    assert ece(preds, target, n_bins=2, norm="l1") == pytest.approx(0.2900, abs=5e-5)
    assert ece(preds, target, n_bins=2, norm="l2") == pytest.approx(0.2918, abs=5e-5)
    assert ece(preds, target, n_bins=2, norm="max") == pytest.approx(0.3167, abs=5e-5)
    assert rmsce(preds, target, n_bins=2) == ece(preds, target, n_bins=2, norm="l2")
    assert mce(preds, target, n_bins=2) == ece(preds, target, n_bins=2, norm="max")


@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
@pytest.mark.parametrize("n_bins", [2, 10, 15])
def test_ece_matches_torchmetrics_on_random_data(binary_data, norm, n_bins):
    c, y = binary_data
    ref = binary_calibration_error(
        torch.tensor(c, dtype=torch.float32), torch.tensor(y), n_bins=n_bins, norm=norm
    )
    assert ece(c, y, n_bins=n_bins, norm=norm) == pytest.approx(float(ref), abs=1e-6)


def test_ece_matches_uncertainty_calibration(binary_data):
    c, y = binary_data
    # Equal-width (Guo) and equal-mass (HELM's ece_10_bin) bins; random data never sits on an edge.
    assert ece(c, y, n_bins=15) == pytest.approx(uncal.get_ece(c, y, num_bins=15), abs=1e-6)
    assert ece(c, y, n_bins=10, binning="quantile") == pytest.approx(
        uncal.get_ece_em(c, y, num_bins=10), abs=1e-6
    )


def test_debiased_l2_matches_uncertainty_calibration(binary_data):
    c, y = binary_data
    ref = uncal.lower_bound_scaling_ce(c, y, p=2, debias=True, num_bins=15)
    assert debiased_l2_ce(c, y, n_bins=15) == pytest.approx(ref, abs=1e-6)
    ref_uniform = uncal.lower_bound_scaling_ce(
        c, y, p=2, debias=True, num_bins=15, binning_scheme=uncal.get_equal_prob_bins
    )
    assert debiased_l2_ce(c, y, n_bins=15, binning="uniform") == pytest.approx(ref_uniform, abs=1e-6)
    # The noise correction only ever lowers the plug-in estimate.
    assert debiased_l2_ce(c, y) < rmsce(c, y, binning="quantile")


def test_ace_and_classwise_match_uncertainty_calibration_marginal(multi_data):
    p, labels = multi_data
    ref_ace = uncal.lower_bound_scaling_ce(p, labels, p=1, debias=False, num_bins=15, mode="marginal")
    assert ace(p, labels, n_bins=15) == pytest.approx(ref_ace, abs=1e-6)
    for norm, power in (("l1", 1), ("l2", 2)):
        ref = uncal.lower_bound_scaling_ce(
            p,
            labels,
            p=power,
            debias=False,
            num_bins=15,
            binning_scheme=uncal.get_equal_prob_bins,
            mode="marginal",
        )
        assert classwise_ece(p, labels, n_bins=15, norm=norm) == pytest.approx(ref, abs=1e-6)


def test_ace_equals_nixon_formula_when_bins_split_evenly():
    rng = np.random.default_rng(3)
    n, k, r = 600, 3, 10  # 600 rows split into 10 ranges of 60 per class
    p = rng.dirichlet(np.ones(k), size=n)
    labels = rng.integers(0, k, n)
    total = 0.0
    for cls in range(k):
        order = np.argsort(p[:, cls])
        for chunk in np.split(order, r):
            total += abs(np.mean(labels[chunk] == cls) - np.mean(p[chunk, cls]))
    assert ace(p, labels, n_bins=r) == pytest.approx(total / (k * r), abs=1e-6)


def test_average_bin_ce_weights_bins_equally():
    c = [0.05, 0.05, 0.05, 0.95]
    y = [0, 0, 0, 0]
    # Two non-empty bins with gaps 0.05 and 0.95: equal weights give 0.5, mass weights give 0.275.
    assert average_bin_ce(c, y, n_bins=10) == pytest.approx(0.5, abs=1e-6)
    assert ece(c, y, n_bins=10) == pytest.approx(0.275, abs=1e-6)


@pytest.mark.parametrize("m", [2, 5, 10, 15, 20])
def test_uniform_bin_edges_put_edge_values_in_the_upper_bin(m):
    edges = np.arange(m + 1) / m  # float64 k/M, as users write 0.3 or 2/3
    idx = np.asarray(uniform_bin_index(jnp.asarray(edges, jnp.float32), m))
    np.testing.assert_array_equal(idx, np.minimum(np.arange(m + 1), m - 1))  # 0 -> bin 0, 1.0 -> last bin
    below = np.nextafter(edges[1:].astype(np.float32), np.float32(0))  # the float32 just under each edge
    idx_below = np.asarray(uniform_bin_index(jnp.asarray(below), m))
    np.testing.assert_array_equal(idx_below, np.arange(m))


def test_boundary_values_land_in_documented_bins_of_reliability_table():
    c = [0.0, 0.1, 0.2, 0.3, 0.7, 1.0]
    bins = reliability_bins(c, [1, 1, 1, 1, 1, 1], n_bins=10)
    expected = np.zeros(10)
    expected[[0, 1, 2, 3, 7, 9]] = 1
    np.testing.assert_array_equal(bins["count"], expected)
    np.testing.assert_allclose(bins["edges"], np.arange(11) / 10, atol=1e-7)
    assert bins["confidence"][9] == pytest.approx(1.0)


def test_quantile_bins_are_the_array_split_and_keep_ties_together():
    c = jnp.asarray([0.1, 0.2, 0.2, 0.2, 0.9, 0.95], jnp.float32)
    # array_split into 3 + 3 puts a 0.2 on each side; the midpoint edge is 0.2 and ties go to the lower bin.
    np.testing.assert_array_equal(np.asarray(quantile_bin_index(c, 2)), [0, 0, 0, 0, 1, 1])
    c7 = jnp.asarray(np.linspace(0.05, 0.95, 7), jnp.float32)
    np.testing.assert_array_equal(np.asarray(quantile_bin_index(c7, 3)), [0, 0, 0, 1, 1, 2, 2])
    # fewer rows than bins: one row per bin
    np.testing.assert_array_equal(np.asarray(quantile_bin_index(c7[:3], 15)), [0, 1, 2])


def test_ece_shrinks_to_zero_on_perfectly_calibrated_data():
    rng = np.random.default_rng(0)
    values = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        c = rng.random(n)
        y = rng.random(n) < c  # P(correct | c) = c exactly
        values.append(ece(c, y, n_bins=15))
    assert values[-1] < 0.004
    assert values[0] > values[-1] * 5
    # each tenfold increase in n shrinks the sampling noise (~ sqrt(M / n))
    assert all(a > b for a, b in itertools.pairwise(values))


def test_soft_correctness_is_accepted(binary_data):
    c, _ = binary_data
    assert ece(c, c) == pytest.approx(0.0, abs=1e-7)  # expected accuracy equals confidence
    assert brier(c, c) == pytest.approx(0.0, abs=1e-7)


def test_brier_and_nll_match_sklearn(binary_data, multi_data):
    c, y = binary_data
    assert brier(c, y) == pytest.approx(brier_score_loss(y, c), abs=1e-6)
    assert nll(c, y) == pytest.approx(log_loss(y, c), abs=1e-5)
    p, labels = multi_data
    assert nll(p, labels) == pytest.approx(log_loss(labels, p), abs=1e-5)
    onehot = np.eye(p.shape[1])[labels]
    assert brier(p, labels) == pytest.approx(np.mean(np.sum((p - onehot) ** 2, axis=1)), abs=1e-6)
    # sklearn's multi-class Brier halves the sum by default; scale_by_half=False gives the original definition
    assert brier(p, labels) == pytest.approx(brier_score_loss(labels, p, scale_by_half=False), abs=1e-6)


def test_brier_skill(binary_data):
    c, y = binary_data
    base = y.mean()
    assert brier_skill(np.full(N, base), y) == pytest.approx(0.0, abs=1e-6)
    assert brier_skill(y.astype(float), y) == pytest.approx(1.0, abs=1e-6)
    assert brier_skill(c, y) == pytest.approx(1 - brier_score_loss(y, c) / (base * (1 - base)), abs=1e-5)
    with pytest.warns(RuntimeWarning, match="same"):
        assert np.isnan(brier_skill([0.2, 0.9], [1, 1]))


def test_nll_clips_certain_mistakes():
    assert np.isfinite(nll([1.0, 0.0], [0, 1]))
    assert nll([1.0, 0.0], [0, 1]) == pytest.approx(-np.log(np.finfo(np.float32).eps), rel=1e-5)
