"""Bootstrap intervals: the vmapped resampling equals a plain loop over the same resamples, and is seedable."""

from functools import partial

import jax
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from calib.errors import CalibError
from calib.metrics import auroc, bootstrap_ci, bootstrap_metrics, brier, ece, paired_bootstrap

N, R = 400, 200


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    c = rng.random(N)
    y = (rng.random(N) < c).astype(np.int64)
    noise = rng.random(N)
    return c, y, noise


def loop_indices(seed, n_resamples, n):
    """The resamples bootstrap_ci draws: one PRNG key per resample, indices uniform over rows."""
    keys = jax.random.split(jax.random.key(seed), n_resamples)
    return list(np.asarray(jax.vmap(lambda k: jax.random.randint(k, (n,), 0, n))(keys)))


def percentile(values, alpha=0.05):
    return np.quantile(values, [alpha / 2, 1 - alpha / 2])


def test_interval_equals_sklearn_loop_over_the_same_resamples(data):
    c, y, _ = data
    point, low, high = bootstrap_ci(auroc, c, y, n_resamples=R, seed=3)
    ref = [roc_auc_score(y[i], c[i]) for i in loop_indices(3, R, N)]
    assert point == pytest.approx(roc_auc_score(y, c), abs=1e-6)
    np.testing.assert_allclose([low, high], percentile(ref), atol=1e-6)
    assert low < point < high


def test_partial_metric_with_settings(data):
    c, y, _ = data
    result = bootstrap_ci(partial(ece, n_bins=10, binning="quantile"), c, y, n_resamples=R, seed=1)
    ref = [ece(c[i], y[i], n_bins=10, binning="quantile") for i in loop_indices(1, R, N)]
    np.testing.assert_allclose([result.low, result.high], percentile(ref), atol=1e-6)
    assert result.point == ece(c, y, n_bins=10, binning="quantile")


def test_seeded_and_reproducible(data):
    c, y, _ = data
    a = bootstrap_ci(brier, c, y, n_resamples=R, seed=0)
    assert bootstrap_ci(brier, c, y, n_resamples=R, seed=0) == a
    assert bootstrap_ci(brier, c, y, n_resamples=R, seed=1) != a
    assert bootstrap_ci(brier, c, y, n_resamples=R, seed=0, batch_size=7) == pytest.approx(a, abs=1e-7)


def test_interval_narrows_with_more_questions():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        c = rng.random(n)
        y = rng.random(n) < c
        _, low, high = bootstrap_ci(brier, c, y, n_resamples=R)
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~ 1 / sqrt(n): 4x narrower for 16x the data


def test_untraceable_metric_falls_back_to_a_loop_with_the_same_resamples(data):
    c, y, _ = data

    def sk_auroc(conf, correct):
        return roc_auc_score(np.asarray(correct), np.asarray(conf))

    with pytest.warns(RuntimeWarning, match="cannot be traced"):
        slow = bootstrap_ci(sk_auroc, c, y, n_resamples=50, seed=5)
    fast = bootstrap_ci(auroc, c, y, n_resamples=50, seed=5)
    assert slow == pytest.approx(fast, abs=1e-6)


def test_paired_difference(data):
    c, y, noise = data
    diff, low, high = paired_bootstrap(auroc, c, noise, y, n_resamples=R, seed=2)
    assert diff == pytest.approx(auroc(c, y) - auroc(noise, y), abs=1e-6)
    assert low > 0  # informative confidence beats noise on every plausible resample
    ref = [roc_auc_score(y[i], c[i]) - roc_auc_score(y[i], noise[i]) for i in loop_indices(2, R, N)]
    np.testing.assert_allclose([low, high], percentile(ref), atol=1e-6)
    same = paired_bootstrap(auroc, c, c, y, n_resamples=R)
    assert same == (0.0, 0.0, 0.0)


def test_multiclass_metric_resamples_rows():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, 200)
    point, low, high = bootstrap_ci(brier, p, labels, n_resamples=100)
    assert point == brier(p, labels)
    assert low < point < high


def test_nan_resamples_are_dropped_with_a_warning():
    c = np.linspace(0.1, 0.9, 30)
    y = np.zeros(30, dtype=int)
    y[0] = 1  # one positive: about a third of resamples miss it
    with pytest.warns(RuntimeWarning, match="gave NaN"):
        _point, low, high = bootstrap_ci(auroc, c, y, n_resamples=100)
    assert np.isfinite([low, high]).all()


def test_bad_settings_and_inputs(data):
    c, y, _ = data
    with pytest.raises(CalibError, match="alpha"):
        bootstrap_ci(ece, c, y, alpha=1.5)
    with pytest.raises(CalibError, match="n_resamples"):
        bootstrap_ci(ece, c, y, n_resamples=1)
    with pytest.raises(CalibError, match="mismatched"):
        bootstrap_ci(ece, c, y[:-1])
    with pytest.raises(CalibError, match="mismatched"):
        paired_bootstrap(ece, c, c[:-1], y)


def test_all_metrics_in_one_program_equal_bootstrap_ci_metric_by_metric():
    """bootstrap_metrics (the evaluate stage's path) gives each metric's bootstrap_ci, point and interval, with one
    program for the 14 metrics at a new sample size; the AUROC interval is also a sklearn loop's."""
    from calib.pipeline import programs
    from calib.pipeline.config import MetricsConfig
    from calib.pipeline.evaluate import metric_functions

    rng = np.random.default_rng(4)
    n = 137  # a sample size no other test uses, so its program is new here
    c = np.round(rng.random(n), 2)  # ties, as verbalized confidences have
    y = (rng.random(n) < c).astype(float)
    fns = metric_functions(MetricsConfig())
    programs.install()
    before = programs.snapshot()
    together = bootstrap_metrics(fns, c, y, n_resamples=R, seed=7)
    assert programs.snapshot().since(before).programs == 1
    assert list(together) == list(fns) and len(fns) == 14
    for name, fn in fns.items():
        alone = bootstrap_ci(fn, c, y, n_resamples=R, seed=7)
        np.testing.assert_allclose(together[name], alone, atol=1e-6, err_msg=name)
    ref = [roc_auc_score(y[i], c[i]) for i in loop_indices(7, R, n)]
    np.testing.assert_allclose(together["auroc"][1:], percentile(ref), atol=1e-6)
    assert together["auroc"].point == pytest.approx(roc_auc_score(y, c), abs=1e-6)
    small = bootstrap_metrics(fns, c, y, n_resamples=R, seed=7, batch_size=9)  # several batches, same draws
    for name in fns:
        np.testing.assert_allclose(small[name], together[name], atol=1e-6, err_msg=name)


def test_all_metrics_warn_and_fail_as_each_metric_does():
    from calib.metrics.selective import UNDEFINED

    c = np.linspace(0.1, 0.9, 12)
    with pytest.warns(RuntimeWarning, match=UNDEFINED["auroc"]):
        out = bootstrap_metrics({"auroc": auroc, "brier": brier}, c, np.zeros(12), n_resamples=20)
    assert np.isnan(out["auroc"].point) and out["brier"].point == pytest.approx(np.mean(c**2), abs=1e-6)
    with pytest.raises(CalibError, match="outside"):
        bootstrap_metrics({"brier": brier}, c + 1, np.zeros(12), n_resamples=20)
    with pytest.raises(CalibError, match="mismatched"):
        bootstrap_metrics({"brier": brier}, c, np.zeros(11), n_resamples=20)
