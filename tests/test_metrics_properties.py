"""Property tests: metrics ignore the order of examples; AUROC ignores monotone transforms of confidence.

Array sizes come from a short fixed list so each jitted metric compiles only a few times.
"""

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calib.metrics import (
    ace,
    auprc,
    aurc,
    auroc,
    brier,
    ece,
    nll,
    prr,
    selective_accuracy,
    smece,
    spearman,
)

SIZES = (9, 40)
# Confidences on a 1/200 grid: plenty of ties, and distinct values stay distinct under the transforms below.
GRID = 200

METRICS = {
    "ece": ece,
    "ece_quantile_l2": partial(ece, binning="quantile", norm="l2"),
    "ece_max": partial(ece, norm="max"),
    "ace": ace,
    "brier": brier,
    "nll": nll,
    "smece": smece,
    "auroc": auroc,
    "auprc": auprc,
    "prr": prr,
    "prr50": partial(prr, max_rejection=0.5),
    "aurc": aurc,
    "selective_accuracy": partial(selective_accuracy, coverage=0.3),
    "spearman": spearman,
}


@st.composite
def examples(draw):
    n = draw(st.sampled_from(SIZES))
    ticks = draw(st.lists(st.integers(0, GRID), min_size=n, max_size=n))
    correct = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < n))
    perm = draw(st.permutations(range(n)))
    return np.array(ticks) / GRID, np.array(correct), np.array(perm)


@pytest.mark.parametrize("name", sorted(METRICS))
@settings(max_examples=15, deadline=None, derandomize=True)
@given(data=examples())
def test_permutation_invariance(name, data):
    c, y, perm = data
    metric = METRICS[name]
    assert metric(c[perm], y[perm]) == pytest.approx(metric(c, y), abs=2e-6, nan_ok=True)


TRANSFORMS = {
    "square": np.square,
    "sqrt": np.sqrt,
    "cube": lambda c: c**3,
    "logistic": lambda c: 1 / (1 + np.exp(-8 * (c - 0.5))),
    "affine": lambda c: 0.1 + 0.5 * c,
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@settings(max_examples=20, deadline=None, derandomize=True)
@given(data=examples())
def test_auroc_is_invariant_to_monotone_transforms(name, data):
    c, y, _ = data
    transformed = TRANSFORMS[name](c)
    assert len(np.unique(transformed.astype(np.float32))) == len(np.unique(c))  # still strictly increasing
    assert auroc(transformed, y) == pytest.approx(auroc(c, y), abs=1e-6)
    assert auprc(transformed, y) == pytest.approx(auprc(c, y), abs=1e-6)
