"""Full-ECE: dense and accumulated paths agree with a brute-force numpy computation."""

import jax.numpy as jnp
import numpy as np
import pytest

from calib.errors import CalibError
from calib.metrics import full_ece, full_ece_accumulate, full_ece_from_bins


def brute_force(probs, labels, n_bins):
    """Liu et al. (2024) eq.: (1/n) sum_m |sum_{(i,k) in bin m} (1[y_i = k] - p_ik)|, bins by float64 loops."""
    n, v = probs.shape
    residual = np.zeros(n_bins)
    edges = (np.arange(n_bins + 1) / n_bins).astype(np.float32)
    for i in range(n):
        for k in range(v):
            p = np.float32(probs[i, k])
            b = min(int(np.searchsorted(edges, p, side="right")) - 1, n_bins - 1)
            residual[b] += float(labels[i] == k) - float(p)
    return np.abs(residual).sum() / n


@pytest.fixture(scope="module")
def tokens():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(60, 12)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(12, p=row) for row in probs])
    labels[:20] = probs[:20].argmin(axis=1)  # some surprising tokens
    return probs.astype(np.float32), labels


@pytest.mark.parametrize("n_bins", [5, 15])
def test_full_ece_matches_brute_force(tokens, n_bins):
    probs, labels = tokens
    assert full_ece(probs, labels, n_bins=n_bins) == pytest.approx(
        brute_force(probs, labels, n_bins), abs=1e-5
    )


def test_accumulated_bins_equal_dense_and_batch_additively(tokens):
    probs, labels = tokens
    dense = full_ece(probs, labels, n_bins=15)
    parts = [
        full_ece_accumulate(jnp.asarray(probs[s]), jnp.asarray(labels[s]), 15)
        for s in (slice(0, 25), slice(25, 60))
    ]
    count, sum_prob, sum_hit = (np.asarray(a) + np.asarray(b) for a, b in zip(*parts))
    assert count.sum() == probs.size
    assert sum_hit.sum() == len(labels)
    assert sum_prob.sum() == pytest.approx(len(labels), rel=1e-5)
    assert full_ece_from_bins(count, sum_prob, sum_hit, len(labels)) == pytest.approx(dense, abs=1e-6)


def test_mask_drops_padded_positions(tokens):
    probs, labels = tokens
    mask = np.r_[np.ones(40), np.zeros(20)]
    count, sp, sh = full_ece_accumulate(jnp.asarray(probs), jnp.asarray(labels), 15, jnp.asarray(mask))
    assert full_ece_from_bins(count, sp, sh, 40) == pytest.approx(full_ece(probs[:40], labels[:40]), abs=1e-6)


def test_one_hot_predictions_have_zero_full_ece():
    labels = np.array([0, 3, 2, 1])
    assert full_ece(np.eye(4)[labels], labels) == 0.0
    # certain and always wrong: each position puts its 1.0 on a wrong token and 0 on the right one
    assert full_ece(np.eye(4)[(labels + 1) % 4], labels) == pytest.approx(2.0)


def test_from_bins_rejects_bad_accumulators():
    with pytest.raises(CalibError, match="mismatched"):
        full_ece_from_bins([1, 2], [0.5], [1, 0], 2)
    with pytest.raises(CalibError, match="n_positions"):
        full_ece_from_bins([4, 4], [1, 1], [1, 1], 0)
    with pytest.raises(CalibError, match="negative"):
        full_ece_from_bins([4, 4], [-1, 1], [1, 1], 2)
    with pytest.raises(CalibError, match="NaN"):
        full_ece_from_bins([4, 4], [np.nan, 1], [1, 1], 2)
    with pytest.raises(CalibError, match="exceed count"):
        full_ece_from_bins([1, 1], [5, 1], [1, 1], 2)
    with pytest.raises(CalibError, match="one label"):
        full_ece_from_bins([8, 8], [1, 1], [3, 3], 2)


def test_dense_input_is_validated():
    with pytest.raises(CalibError, match="sums to"):
        full_ece([[0.5, 0.2], [0.5, 0.5]], [0, 1])
    with pytest.raises(CalibError, match=r"outside 0\.\.1"):
        full_ece([[0.5, 0.5], [0.5, 0.5]], [0, 2])
