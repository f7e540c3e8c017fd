"""Degenerate post-hoc fits warn in one line and are marked in the temperature study's table; its headline
"lowest ECE" never names a temperature at which no answer is right."""

import warnings

import numpy as np
import pandas as pd
import pytest

from calib.recalibrate.posthoc import BetaCalibrator, IsotonicCalibrator, PlattCalibrator
from calib.studies import temperature_report


def test_platt_on_seven_separable_points_warns_in_one_line():
    conf = np.array([0.1, 0.2, 0.3, 0.45, 0.55, 0.7, 0.9])
    correct = np.array([0, 0, 0, 0, 1, 1, 1])
    with pytest.warns(RuntimeWarning) as caught:
        cal = PlattCalibrator().fit(conf, correct)
    (message,) = [str(w.message) for w in caught if "degenerate" in str(w.message)]
    assert "\n" not in message and message.startswith("platt fit on 7 rows is degenerate: |a| = ")
    assert abs(cal.a) > 50 and "3 correct / 4 wrong rows (< 20 per class)" in message
    assert cal.degenerate == message


@pytest.mark.parametrize("kind", [PlattCalibrator, BetaCalibrator, IsotonicCalibrator])
def test_a_healthy_fit_is_silent(kind):
    rng = np.random.default_rng(0)
    conf = rng.random(400)
    correct = (rng.random(400) < conf**2).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        cal = kind().fit(conf, correct)
    assert cal.degenerate is None


def test_calibrator_table_marks_a_degenerate_fit():
    from calib.pipeline import RunConfig
    from calib.recalibrate import split_by_ids

    rng = np.random.default_rng(0)
    conf = rng.random(40)
    correct = (conf > 0.5).astype(float)  # separable: the Platt slope runs away
    split = split_by_ids([f"q{i}" for i in range(40)], 0.5)
    with pytest.warns(RuntimeWarning, match="degenerate"):
        cal = PlattCalibrator().fit(conf[split.calibration], correct[split.calibration])
    metrics = RunConfig().metrics
    metrics.n_resamples = 20
    table = temperature_report.calibrator_table({"platt": cal}, conf, correct, split, metrics)
    assert "(DEGENERATE: |a| = " in table.set_index("method").loc["platt", "fitted"]


def test_lowest_ece_skips_temperatures_with_zero_accuracy():
    frame = pd.DataFrame({"T": [0.5, 1.0, 2.0], "accuracy": [0.4, 0.3, 0.0], "ece": [0.2, 0.1, 0.0]})
    assert temperature_report._best(frame, "ece") == "T = 1 (accuracy 0.300, 1 T with accuracy 0 excluded)"
    assert temperature_report._best(frame.assign(accuracy=0.0), "ece") == "none (accuracy 0 at every T)"
    assert temperature_report._best(frame.assign(ece=np.nan), "ece") == "undefined (no value at any T)"
