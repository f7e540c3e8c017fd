"""Bad input fails with a one-line CalibError naming the problem; near-misses from float rounding are accepted."""

import re

import jax.numpy as jnp
import numpy as np
import pytest

from calib.errors import CalibError
from calib.metrics import (
    ace,
    auroc,
    brier,
    ece,
    nll,
    prr,
    selective_accuracy,
    smece,
    spearman,
)

GOOD_C = [0.2, 0.6, 0.9]
GOOD_Y = [0, 1, 1]

BAD_PAIRS = {
    "nan": ([0.2, np.nan, 0.9], GOOD_Y, "NaN"),
    "inf": ([0.2, np.inf, 0.9], GOOD_Y, "NaN or infinite"),
    "above one": ([0.2, 1.2, 0.9], GOOD_Y, "outside"),
    "negative": ([0.2, -0.1, 0.9], GOOD_Y, "outside"),
    "lengths": (GOOD_C, [0, 1], "mismatched lengths"),
    "empty": ([], [], "empty"),
    "2-D confidence": ([[0.2, 0.3]], [1], "shape|sums to"),  # brier/nll read 2-D as class probabilities
    "strings": (["a", "b", "c"], GOOD_Y, "dtype"),
    "nan label": (GOOD_C, [0, np.nan, 1], "NaN"),
}


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message
    return message


@pytest.mark.parametrize("metric", [ece, auroc, brier, nll, smece, prr, selective_accuracy])
@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_bad_pairs_raise_one_line_errors(metric, case):
    c, y, expected = BAD_PAIRS[case]
    with pytest.raises(CalibError) as err:
        metric(c, y)
    assert re.search(expected, one_line(err))


def test_labels_must_be_binary_where_classes_are_meant():
    with pytest.raises(CalibError, match="not 0 or 1"):
        auroc(GOOD_C, [0, 0.5, 1])
    assert ece(GOOD_C, [0, 0.5, 1]) >= 0  # calibration metrics accept soft correctness


def test_rounding_overshoot_is_clipped_not_rejected():
    assert ece([1.0000001, 0.5], [1, 0]) == pytest.approx(0.25, abs=1e-6)
    assert ece([-1e-8, 0.5], [0, 0]) == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(CalibError, match="outside"):
        ece([1.001, 0.5], [1, 0])


def test_settings_are_validated():
    with pytest.raises(CalibError, match="n_bins"):
        ece(GOOD_C, GOOD_Y, n_bins=0)
    with pytest.raises(CalibError, match="n_bins"):
        ece(GOOD_C, GOOD_Y, n_bins=2.5)
    with pytest.raises(CalibError, match="binning"):
        ece(GOOD_C, GOOD_Y, binning="equal")
    with pytest.raises(CalibError, match="norm"):
        ece(GOOD_C, GOOD_Y, norm="l3")
    with pytest.raises(CalibError, match="max_rejection"):
        prr(GOOD_C, GOOD_Y, max_rejection=1.5)
    with pytest.raises(CalibError, match="coverage"):
        selective_accuracy(GOOD_C, GOOD_Y, coverage=0)


def test_multiclass_inputs_are_validated():
    p = [[0.7, 0.3], [0.4, 0.6]]
    assert ace(p, [0, 1]) >= 0
    with pytest.raises(CalibError, match="sums to"):
        brier([[0.7, 0.7], [0.4, 0.6]], [0, 1])
    with pytest.raises(CalibError, match=r"outside 0\.\.1"):
        nll(p, [0, 2])
    with pytest.raises(CalibError, match="non-integer"):
        nll(p, [0, 0.5])
    with pytest.raises(CalibError, match="mismatched"):
        brier(p, [0, 1, 1])
    with pytest.raises(CalibError, match="class column"):
        brier([[1.0], [1.0]], [0, 0])


def test_spearman_quality_may_be_any_finite_number():
    assert spearman(GOOD_C, [-3.0, 10.0, 11.0]) == pytest.approx(1.0)
    with pytest.raises(CalibError, match="quality"):
        spearman(GOOD_C, [1.0, np.inf, 2.0])


def test_numpy_jax_list_and_bool_inputs_agree():
    rng = np.random.default_rng(0)
    c = rng.random(50)
    y = rng.random(50) < c
    ref = ece(c, y)
    assert ece(jnp.asarray(c), jnp.asarray(y)) == pytest.approx(ref, abs=1e-7)
    assert ece(c.tolist(), y.astype(int).tolist()) == pytest.approx(ref, abs=1e-7)
    assert ece(c.astype(np.float32), y.astype(np.float64)) == pytest.approx(ref, abs=1e-7)
    assert isinstance(ref, float)
