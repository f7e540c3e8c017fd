"""Split discipline: calibrators are fitted on calibration rows only and never see a test label."""

import numpy as np
import pytest
from scipy.special import expit, logit

from calib.errors import CalibError
from calib.metrics import brier, ece
from calib.recalibrate import (
    IsotonicCalibrator,
    Split,
    fit_on_split,
    make_calibrator,
    recalibrate,
    split_by_ids,
    split_indices,
)
from calib.recalibrate.base import Calibrator

KINDS = ["platt", "beta", "isotonic", "histogram", "online_histogram"]


def data(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    return expit(2 * logit(np.clip(p, 1e-3, 1 - 1e-3))), (rng.random(n) < p).astype(float)


class SpyCalibrator(IsotonicCalibrator):
    """Records exactly what fit receives."""

    kind = ""  # not registered

    def _fit(self, confidence, correct):
        self.seen = (confidence.copy(), correct.copy())
        super()._fit(confidence, correct)


def test_split_indices_are_disjoint_and_cover_all_rows():
    s = split_indices(101, 0.3, seed=4)
    assert len(s.calibration) == 30 and len(s.test) == 71
    assert np.array_equal(np.sort(np.concatenate([s.calibration, s.test])), np.arange(101))
    assert np.array_equal(split_indices(101, 0.3, seed=4).test, s.test)


def test_split_by_ids_is_stable_and_keeps_repeated_ids_together():
    ids = [f"q{i}" for i in range(500)] + ["q7", "q7"]
    s = split_by_ids(ids, 0.4)
    side = {i: ("cal" if i in set(s.calibration) else "test") for i in range(len(ids))}
    assert side[7] == side[500] == side[501]
    assert 150 < len(s.calibration) < 250
    # adding examples never moves the old ones
    s2 = split_by_ids([*ids[:500], "new1", "new2"], 0.4)
    assert set(s.calibration[s.calibration < 500]) == set(s2.calibration[s2.calibration < 500])


def test_overlapping_or_empty_splits_raise():
    with pytest.raises(CalibError, match="both the calibration and the test split") as err:
        Split(np.array([0, 1, 2]), np.array([2, 3]))
    assert "\n" not in str(err.value)
    with pytest.raises(CalibError, match="calibration split is empty"):
        Split(np.array([], int), np.array([0, 1]))
    with pytest.raises(CalibError, match="strictly between"):
        split_indices(10, 1.0)
    with pytest.raises(CalibError, match="outside"):
        fit_on_split("isotonic", [0.1, 0.2], [0, 1], Split(np.array([0, 5]), np.array([1])))


@pytest.mark.parametrize("kind", KINDS)
def test_test_labels_are_never_read_when_fitting(kind):
    c, y = data()
    split = split_indices(len(c), 0.5, seed=2)
    # sentinel: the test labels are invalid values; if the calibrator read them it would raise
    poisoned = y.copy()
    poisoned[split.test] = 7.0
    fitted = fit_on_split(kind, c, poisoned, split)
    # and flipping every test label leaves the fitted state bit-identical
    flipped = y.copy()
    flipped[split.test] = 1 - flipped[split.test]
    assert fitted == fit_on_split(kind, c, flipped, split) == fit_on_split(kind, c, y, split)


def test_spy_sees_exactly_the_calibration_rows():
    c, y = data()
    split = split_indices(len(c), 0.25, seed=9)
    spy = SpyCalibrator()
    assert isinstance(spy, Calibrator)
    recalibrate(spy, c, y, split)
    seen_c, seen_y = spy.seen
    assert np.array_equal(seen_c, c[split.calibration]) and np.array_equal(seen_y, y[split.calibration])


def test_recalibrate_reports_test_metrics_only():
    c, y = data(3000, seed=5)
    split = split_indices(len(c), 0.5, seed=1)
    r = recalibrate(make_calibrator("platt"), c, y, split)
    t = split.test
    assert r.metrics_before["ece"] == pytest.approx(ece(c[t], y[t]))
    assert r.metrics_after["ece"] == pytest.approx(ece(r.test_after, y[t]))
    assert r.metrics_after["brier"] == pytest.approx(brier(r.test_after, y[t]))
    assert np.mean((r.test_after - y[t]) ** 2) == pytest.approx(r.metrics_after["brier"], abs=1e-6)
    assert r.metrics_after["ece"] < r.metrics_before["ece"]
    assert "| ece |" in r.table()


def test_empty_test_split_and_mismatched_rows_raise():
    c, y = data(10)
    with pytest.raises(CalibError, match="test split is empty"):
        recalibrate("isotonic", c, y, Split(np.arange(10), np.array([], int)))
    with pytest.raises(CalibError, match="one label per row"):
        recalibrate("isotonic", c, y[:5], split_indices(10))
