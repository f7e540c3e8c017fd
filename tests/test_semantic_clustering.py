"""Jitted clustering against plain-Python and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.csgraph import connected_components

from calib.errors import CalibError
from calib.semantic import cluster, cluster_batch, pad_stack, representatives


def _greedy_reference(eq):
    """Kuhn et al. Algorithm 1 in plain Python."""
    labels, reps = [], []
    for j in range(len(eq)):
        for c, r in enumerate(reps):
            if eq[r][j]:
                labels.append(c)
                break
        else:
            labels.append(len(reps))
            reps.append(j)
    return labels


def _first_appearance(labels):
    mapping = {}
    return [mapping.setdefault(x, len(mapping)) for x in labels]


def _random_equivalence(rng, m, p):
    upper = np.triu(rng.random((m, m)) < p, 1)
    return upper | upper.T | np.eye(m, dtype=bool)


def test_non_transitive_equivalence_separates_the_two_rules():
    eq = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)  # a~b, b~c, a!~c
    assert cluster([eq], "greedy")[0].tolist() == [0, 0, 1]  # c is not equivalent to a's representative
    assert cluster([eq], "components")[0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_greedy_and_components_match_references_on_ragged_batches(seed):
    rng = np.random.default_rng(seed)
    mats = [
        _random_equivalence(rng, int(rng.integers(1, 12)), p) for p in (0.05, 0.2, 0.5, 0.9) for _ in range(3)
    ]
    greedy = cluster(mats, "greedy")
    components = cluster(mats, "components")
    for eq, g, c in zip(mats, greedy, components):
        assert g.tolist() == _greedy_reference(eq)
        _, scipy_labels = connected_components(eq.astype(int), directed=False)
        assert c.tolist() == _first_appearance(scipy_labels.tolist())


def test_padding_is_labelled_minus_one_and_ignored():
    eq = np.ones((2, 4, 4), dtype=bool)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    for method in ("greedy", "components"):
        labels = cluster_batch(eq, mask, method)
        assert labels.tolist() == [[0, 0, -1, -1], [0, 0, 0, 0]]


def test_pad_stack_and_representatives():
    stacked, mask = pad_stack([np.ones((2, 2), bool), np.ones((3, 3), bool)], fill=False)
    assert stacked.shape == (2, 3, 3) and mask.sum() == 5 and not stacked[0, 2].any()
    assert representatives(np.array([0, 1, 0, 2, 1])).tolist() == [0, 1, 3]


def test_bad_method_and_shape_are_calib_errors():
    with pytest.raises(CalibError, match="unknown method 'kmeans'"):
        cluster_batch(np.ones((1, 2, 2), bool), method="kmeans")
    with pytest.raises(CalibError, match=r"must be \[B, M, M\]"):
        cluster_batch(np.ones((2, 2), bool))
