"""Probes: a logistic probe on a synthetic separable set reaches the known accuracy, matches sklearn's direction,
and a saved probe loads back (safetensors + JSON) giving the same probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from calib.errors import CalibError
from calib.tuning.probe import Probe, ProbeConfig, fit_probe, fit_probe_search, validation_split


def _separable(n: int, d: int, seed: int, margin: float = 0.5):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    x = rng.normal(size=(n, d)).astype(np.float32)
    s = x @ w
    keep = np.abs(s) > margin  # a margin around the true hyperplane: perfectly separable
    return x[keep], (s[keep] > 0).astype(np.float32), w


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_probe_reaches_known_accuracy_on_separable_data(kind):
    x, y, w = _separable(1200, 16, 0)
    rng = np.random.default_rng(1)  # fresh test points from the same hyperplane
    xt = rng.normal(size=(800, 16)).astype(np.float32)
    xt = xt[np.abs(xt @ w) > 0.5]
    yt = (xt @ w > 0).astype(np.float32)
    probe = fit_probe(x, y, ProbeConfig(kind=kind, learning_rate=0.05, max_epochs=400))
    accuracy = np.mean((probe.predict_proba(xt) > 0.5) == yt)
    assert accuracy >= 0.97  # the Bayes accuracy is 1.0 (separable with a margin)
    assert probe.info["best_epoch"] > 0 and probe.info["val_size"] == round(0.2 * len(y))


def test_logistic_probe_matches_sklearn_and_early_stopping_helps():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    logits = x @ np.linspace(-1, 1, 8) + 0.3
    y = (rng.random(2000) < 1 / (1 + np.exp(-logits))).astype(np.float32)  # noisy: a unique optimum
    probe = fit_probe(x, y, ProbeConfig(learning_rate=0.01, weight_decay=0.0, max_epochs=800, patience=800))
    train, val = validation_split(len(y), 0.2, 0)  # the rows the probe is fitted on / stopped on
    ref = LogisticRegression(C=1e6, max_iter=2000).fit(x[train], y[train])
    ours = probe.params["w"] / probe.scale
    cos = ours @ ref.coef_[0] / np.linalg.norm(ours) / np.linalg.norm(ref.coef_[0])
    assert cos > 0.95  # the same direction as the maximum-likelihood fit
    # the kept epoch has the lowest validation loss seen, so it is no worse there than the converged fit
    ref_val = log_loss(y[val], ref.predict_proba(x[val])[:, 1])
    assert probe.info["val_loss"] <= ref_val + 1e-4
    ours_val = log_loss(y[val], probe.predict_proba(x[val]))
    assert abs(ours_val - probe.info["val_loss"]) < 1e-4


def test_search_picks_the_informative_layer_and_roundtrips(tmp_path):
    x, y, _ = _separable(800, 12, 5)
    noise = np.random.default_rng(9).normal(size=x.shape).astype(np.float32)
    states = np.stack([np.stack([noise, noise], 1), np.stack([noise, x], 1)], 1)  # [N, layers, tokens, D]
    probe = fit_probe_search(states, y, layers=[3, 7], cfg=ProbeConfig(learning_rate=0.05))
    assert (probe.info["layer"], probe.info["token"]) == (7, "last")
    probe.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl"))
    again = Probe.load(tmp_path)
    np.testing.assert_array_equal(again.predict_proba(x), probe.predict_proba(x))
    assert again.info["layer"] == 7


def test_bad_input():
    with pytest.raises(CalibError, match="labels must be 0 or 1"):
        fit_probe(np.zeros((4, 2)), np.array([0, 1, 2, 0]))
    with pytest.raises(CalibError, match=r"probe\.kind"):
        ProbeConfig(kind="forest")
    with pytest.raises(CalibError, match=r"no probe\.json"):
        Probe.load("/nonexistent")
