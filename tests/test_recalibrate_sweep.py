"""Temperature sweep table and post-hoc re-tempering of stored top-k log-probs (synthetic data)."""

import numpy as np
import pytest
from scipy.special import log_softmax

from calib.errors import CalibError
from calib.metrics import auroc, brier, ece
from calib.recalibrate import (
    SweepPoint,
    temper_logprobs,
    temper_token_logprobs,
    temperature_sweep,
)


def synthetic_points():
    rng = np.random.default_rng(0)
    out = {}
    for t in (0.7, 1.0, 1.3):
        c = rng.random(300)
        out[t] = SweepPoint(c, (rng.random(300) < c**t).astype(float), full_ece=0.1 * t)
    return out


def test_sweep_table_values_match_the_metrics():
    points = synthetic_points()
    table = temperature_sweep(points, mode="posthoc", n_bins=10, n_resamples=200)
    assert [r.temperature for r in table.rows] == [0.7, 1.0, 1.3]
    for r in table.rows:
        c, y = points[r.temperature].confidence, points[r.temperature].correct
        assert r.accuracy[0] == pytest.approx(y.mean(), abs=1e-6)
        assert r.ece[0] == pytest.approx(ece(c, y, n_bins=10), abs=1e-6)
        assert r.brier[0] == pytest.approx(np.mean((c - y) ** 2), abs=1e-6)
        assert r.brier[0] == pytest.approx(brier(c, y), abs=1e-6)
        assert r.auroc[0] == pytest.approx(auroc(c, y), abs=1e-6)
        for metric in (r.accuracy, r.ece, r.brier, r.auroc):
            assert metric[1] <= metric[0] <= metric[2] and metric[1] < metric[2]
        assert r.full_ece == pytest.approx(0.1 * r.temperature)
    md = table.to_markdown()
    assert md.count("\n| ") == 4 and "95% bootstrap interval" in md and "posthoc temperature" in md
    assert table.best("ece").ece[0] == min(r.ece[0] for r in table.rows)
    assert table.best("full_ece").temperature == 0.7


def test_sweep_plot_is_written(tmp_path):
    table = temperature_sweep(synthetic_points(), n_resamples=50)
    table.plot(tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_sweep_bad_input_is_one_line_error():
    with pytest.raises(CalibError, match="no results"):
        temperature_sweep({})
    with pytest.raises(CalibError, match="temperature"):
        temperature_sweep({0.0: SweepPoint([0.5], [1])}, n_resamples=10)
    with pytest.raises(CalibError, match="not 0 or 1") as err:
        temperature_sweep({1.0: SweepPoint([0.5, 0.2], [1, 3])}, n_resamples=10)
    assert "\n" not in str(err.value)
    with pytest.raises(CalibError, match=r"sweep point at T=1\.0 is empty"):
        temperature_sweep({1.0: SweepPoint([], [])}, n_resamples=10)
    one_class = temperature_sweep({1.0: SweepPoint([0.5, 0.7], [1, 1])}, n_resamples=10)
    assert "n/a" in one_class.to_markdown()  # AUROC undefined with one class, not a crash


def topk_case(seed=1, v=60, k=6, n=40):
    rng = np.random.default_rng(seed)
    lp = log_softmax(rng.normal(size=(n, v)) * 3, axis=1)
    order = np.argsort(-lp, axis=1)
    chosen = np.where(
        np.arange(n) % 2 == 0, order[:, 0], order[:, k + 5]
    )  # half inside the top-k, half outside
    return lp, np.take_along_axis(lp, order[:, :k], 1), chosen


@pytest.mark.parametrize("t", [0.6, 0.9, 1.0, 1.4])
def test_retempered_logprobs_bracket_the_exact_value(t):
    lp, top, chosen = topk_case()
    rows = np.arange(len(chosen))
    exact = temper_logprobs(lp, t)[rows, chosen]
    uniform = temper_token_logprobs(lp[rows, chosen], top, t, vocab_size=lp.shape[1])
    single = temper_token_logprobs(lp[rows, chosen], top, t, vocab_size=lp.shape[1], tail="single")
    lo, hi = np.minimum(uniform, single), np.maximum(uniform, single)
    assert np.all((exact >= lo - 1e-9) & (exact <= hi + 1e-9))
    if t == 1.0:
        np.testing.assert_allclose(uniform, lp[rows, chosen], atol=1e-12)
    # the full distribution as "top-k" is exact
    full = temper_token_logprobs(lp[rows, chosen], lp, t, vocab_size=lp.shape[1])
    np.testing.assert_allclose(full, exact, atol=1e-9)


def test_retemper_bad_input():
    with pytest.raises(CalibError, match="temperature"):
        temper_token_logprobs([-1.0], [[-0.5]], -2, vocab_size=10)
    with pytest.raises(CalibError, match="do not match"):
        temper_token_logprobs([-1.0, -2.0], [[-0.5]], 1.0, vocab_size=10)
    with pytest.raises(CalibError, match="tail"):
        temper_token_logprobs([-1.0], [[-0.5]], 1.0, vocab_size=10, tail="fat")
