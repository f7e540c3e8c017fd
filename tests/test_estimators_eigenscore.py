"""EigenScore on small embeddings, cross-checked with a log-determinant."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, Need, get_estimator
from calib.estimators.synthetic import generations_from


def _bundle(embeddings):
    n, k = len(embeddings), len(embeddings[0])
    greedy = generations_from([["g"]] * n)
    greedy = dataclasses.replace(greedy, hidden=[np.zeros((1, 3), np.float32)] * n)
    samples = generations_from([[f"s{j}" for j in range(k)]] * n)
    return Bundle(
        greedy, dataclasses.replace(samples, hidden=[np.asarray(e, np.float32) for e in embeddings])
    )


def test_eigenscore_is_the_mean_log_eigenvalue_of_the_regularised_gram_matrix():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(4, 5))
    same = np.tile(rng.normal(size=(1, 5)), (4, 1))
    bundle = _bundle([spread, same])
    assert Need.HIDDEN in bundle.available()
    result = get_estimator("eigenscore")(bundle)
    expected = []
    for z in (spread, same):
        z = z.astype(np.float32).astype(np.float64)
        centred = z - z.mean(axis=1, keepdims=True)  # Z J_d: each embedding minus its mean feature
        sign, logdet = np.linalg.slogdet(centred @ centred.T + 1e-3 * np.eye(4))
        assert sign > 0
        expected.append(logdet / 4)  # (1/K) Σ log λ = (1/K) log det
    np.testing.assert_allclose(result.raw, expected, rtol=1e-9)
    # identical answers: Gram matrix ‖z_c‖² 11ᵀ of rank one, eigenvalues α (three times) and α + K ‖z_c‖²
    z = same[0].astype(np.float32).astype(np.float64)
    norm2 = np.sum((z - z.mean()) ** 2)
    np.testing.assert_allclose(result.raw[1], (3 * np.log(1e-3) + np.log(1e-3 + 4 * norm2)) / 4, rtol=1e-9)
    assert result.confidence[1] > result.confidence[0]
    np.testing.assert_allclose(result.confidence, 1 / (1 + np.exp(result.raw)))


def test_eigenscore_without_the_samples_hidden_states_names_the_fix():
    greedy = dataclasses.replace(generations_from([["g"]]), hidden=[np.zeros((1, 3), np.float32)])
    bundle = Bundle(greedy, generations_from([["a", "b"]]))
    with pytest.raises(CalibError, match="hidden states"):
        get_estimator("eigenscore")(bundle)
