"""Post-hoc calibrators: identities on calibrated data, sklearn cross-checks, monotonicity, online = batch, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from calib.errors import CalibError
from calib.metrics import ece
from calib.recalibrate import (
    BetaCalibrator,
    HistogramCalibrator,
    IsotonicCalibrator,
    OnlineHistogramCalibrator,
    PlattCalibrator,
    make_calibrator,
    recalibrate,
    split_indices,
)

KINDS = ["platt", "beta", "isotonic", "histogram", "online_histogram"]


def calibrated(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.beta(2, 2, n)
    return c, (rng.random(n) < c).astype(float)


def overconfident(n=8000, seed=1):
    """True probability p, reported confidence sigmoid(2.5 logit p): far too extreme."""
    rng = np.random.default_rng(seed)
    p = rng.beta(2, 2, n)
    return expit(2.5 * logit(p)), (rng.random(n) < p).astype(float)


def test_platt_on_calibrated_data_is_near_identity():
    c, y = calibrated()
    cal = PlattCalibrator().fit(c, y)
    assert cal.a == pytest.approx(1.0, abs=0.08) and cal.b == pytest.approx(0.0, abs=0.05)
    grid = np.linspace(0.02, 0.98, 49)
    assert np.max(np.abs(cal.transform(grid) - grid)) < 0.02


def test_platt_matches_sklearn_unpenalised_logistic_regression():
    c, y = overconfident(3000)
    cal = PlattCalibrator().fit(c, y)
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(logit(c)[:, None], y)
    assert cal.a == pytest.approx(ref.coef_[0, 0], rel=1e-4)
    assert cal.b == pytest.approx(ref.intercept_[0], abs=1e-4)
    assert cal.a == pytest.approx(1 / 2.5, abs=0.05)  # undoes the 2.5x sharpening


def test_platt_smoothed_targets_shrink_the_slope():
    c, y = overconfident(300, seed=4)
    assert PlattCalibrator(smooth_targets=True).fit(c, y).a < PlattCalibrator().fit(c, y).a


def test_beta_identity_and_sklearn_cross_check():
    c, y = calibrated()
    cal = BetaCalibrator().fit(c, y)
    assert (cal.a, cal.b, cal.m) == pytest.approx((1.0, 1.0, 0.0), abs=0.15)  # m is the noisiest of the three
    grid = np.linspace(0.02, 0.98, 49)
    assert np.max(np.abs(cal.transform(grid) - grid)) < 0.02
    c2, y2 = overconfident(3000)
    cal2 = BetaCalibrator().fit(c2, y2)
    feats = np.column_stack([np.log(c2), -np.log1p(-c2)])
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(feats, y2)
    assert min(ref.coef_[0]) > 0  # unconstrained optimum is inside the a, b >= 0 box, so both must agree
    assert [cal2.a, cal2.b] == pytest.approx(ref.coef_[0], rel=1e-3)
    assert cal2.m == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_beta_keeps_its_parameters_non_negative():
    rng = np.random.default_rng(2)
    c = rng.random(2000)
    y = (rng.random(2000) < 1 - c).astype(float)  # anti-correlated: the free fit wants negative slopes
    cal = BetaCalibrator().fit(c, y)
    assert cal.a >= 0 and cal.b >= 0
    assert np.all(np.diff(cal.transform(np.linspace(0, 1, 101))) >= -1e-12)


def test_isotonic_matches_sklearn_and_is_monotone():
    c, y = overconfident(2000)
    cal = IsotonicCalibrator().fit(c, y)
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(c, y)
    grid = np.concatenate([[0.0, 1.0], np.random.default_rng(0).random(500)])
    np.testing.assert_allclose(cal.transform(grid), ref.predict(grid), atol=1e-12)
    out = cal.transform(np.sort(grid))
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=60),
    st.lists(st.floats(0, 1), min_size=2, max_size=30),
)
def test_isotonic_and_online_outputs_are_monotone(rows, queries):
    c = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows], float)
    q = np.sort(queries)
    for cal in (IsotonicCalibrator(), OnlineHistogramCalibrator(n_bins=7)):
        out = cal.fit(c, y).transform(q)
        assert np.all(np.diff(out) >= -1e-12)


def test_histogram_bins_hold_the_mean_label_with_calib_edge_convention():
    c = np.array([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.99, 1.0])
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1], float)
    cal = HistogramCalibrator(n_bins=4, binning="uniform").fit(c, y)
    # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]: an edge value goes to the bin above, 1.0 to the last bin
    np.testing.assert_allclose(cal.values, [0.0, 1.0, 0.5, 1.0])
    np.testing.assert_allclose(cal.transform([0.2499, 0.25, 0.5, 0.7499, 0.75, 1.0]), [0, 1, 0.5, 0.5, 1, 1])
    empty = HistogramCalibrator(n_bins=4, binning="uniform").fit([0.1, 0.9], [0, 1])
    assert empty.transform([0.3])[0] == pytest.approx(0.375)  # an empty bin keeps its midpoint


def test_quantile_histogram_matches_numpy_bin_means():
    c, y = overconfident(1000)
    cal = HistogramCalibrator(n_bins=10).fit(c, y)
    idx = np.searchsorted(cal.edges[1:-1], c, side="right")
    assert np.bincount(idx).min() >= 90  # equal mass
    for b in range(len(cal.values)):
        assert cal.values[b] == pytest.approx(y[idx == b].mean())


def test_online_histogram_incremental_updates_equal_batch_fit_exactly():
    c, y = overconfident(5000)
    batch = OnlineHistogramCalibrator(n_bins=25).fit(c, y)
    online = OnlineHistogramCalibrator(n_bins=25)
    order = np.random.default_rng(3).permutation(len(c))
    for chunk in np.array_split(order, 37):
        online.partial_fit(c[chunk], y[chunk])
    assert online == batch
    grid = np.linspace(0, 1, 1001)
    assert np.array_equal(online.transform(grid), batch.transform(grid))
    halves = OnlineHistogramCalibrator(n_bins=25).fit(c[:2000], y[:2000])
    halves.merge(OnlineHistogramCalibrator(n_bins=25).fit(c[2000:], y[2000:]))
    assert halves == batch


def test_online_histogram_without_rows_is_identity_at_bin_midpoints():
    cal = OnlineHistogramCalibrator(n_bins=10)
    mids = (np.arange(10) + 0.5) / 10
    np.testing.assert_allclose(cal.transform(mids), mids)


@pytest.mark.parametrize("kind", KINDS)
def test_every_calibrator_reduces_test_ece_on_overconfident_scores(kind):
    c, y = overconfident(6000, seed=7)
    result = recalibrate(kind, c, y, split_indices(len(c), 0.5, seed=0))
    assert result.metrics_after["ece"] < 0.5 * result.metrics_before["ece"]
    assert result.metrics_before["ece"] == pytest.approx(ece(c[result.split.test], y[result.split.test]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("conf", "correct", "match"),
    [
        ([0.2, 0.8], [0, 2], "not 0 or 1"),
        ([0.2, 0.8], [0, 0.5], "not 0 or 1"),
        ([0.2, 0.8], [1, float("nan")], "not 0 or 1"),
        ([], [], "calibration split is empty"),
        ([0.2, 0.8, 0.5], [0, 1], "one label per row"),
        ([0.2, 1.3], [0, 1], "outside \\[0, 1\\]"),
        ([[0.2, 0.3]], [[0, 1]], "shape"),
    ],
)
def test_bad_input_is_a_one_line_error(kind, conf, correct, match):
    with pytest.raises(CalibError, match=match) as err:
        make_calibrator(kind).fit(conf, correct)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["platt", "beta"])
def test_logistic_calibrators_need_both_classes(kind):
    with pytest.raises(CalibError, match="both correct and wrong"):
        make_calibrator(kind).fit([0.2, 0.7, 0.9], [1, 1, 1])


def test_unfitted_and_unknown_calibrators_are_errors():
    with pytest.raises(CalibError, match="not fitted"):
        PlattCalibrator().transform([0.5])
    with pytest.raises(CalibError, match="unknown calibrator kind"):
        make_calibrator("magic")
    with pytest.raises(CalibError, match="not a confidence calibrator"):
        make_calibrator("temperature")
    with pytest.raises(CalibError, match="n_bins"):
        HistogramCalibrator(n_bins=0)
    with pytest.raises(CalibError, match="prior_strength"):
        OnlineHistogramCalibrator(prior_strength=0)
