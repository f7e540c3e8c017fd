"""The semantic-entropy example in docs/estimators.md runs and equals Farquhar et al.'s formula computed by hand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import scipy.special

DOCS = Path(__file__).resolve().parents[1] / "docs" / "estimators.md"


def _example() -> str:
    match = re.search(r"<!-- example: semantic_entropy -->\s*```python\n(.*?)```", DOCS.read_text(), re.S)
    assert match, "docs/estimators.md lost its semantic entropy example"
    return match.group(1)


def test_documented_semantic_entropy_is_farquhar_et_al():
    scope: dict = {}
    exec(compile(_example(), str(DOCS), "exec"), scope)  # the documented block, as a reader runs it
    # Farquhar et al. (2024) and their semantic_uncertainty code: l̄_k = mean token log-likelihood, normalised over
    # all K samples by logsumexp, logsumexp per meaning class, SE = -Σ_c p_c log p_c (predictive_entropy_rao)
    logprobs = [[-0.4, -0.6], [-0.4, -0.6], [-1.0], [-2.0, -2.0]]
    mean_ll = np.array([np.mean(lp) for lp in logprobs])
    log_norm = mean_ll - scipy.special.logsumexp(mean_ll)
    classes = [
        [0, 1, 2],
        [3],
    ]  # "Paris", "Paris", "paris." | "Lyon" (exact match: case and punctuation ignored)
    log_p = np.array([scipy.special.logsumexp(log_norm[c]) for c in classes])
    by_hand = -float(np.sum(np.exp(log_p) * log_p))
    assert math.isclose(scope["se"], by_hand, rel_tol=1e-6)
    # and the number the docs print beside it
    assert re.search(r"SE = [^=]*= 0\.27596 nats", DOCS.read_text())
    assert round(scope["se"], 5) == 0.27596
