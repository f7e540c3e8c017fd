"""Discrimination and selective-prediction metrics against sklearn, scipy and LM-Polygraph's definitions."""

import math

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from calib.metrics import auarc, auprc, aurc, auroc, prr, selective_accuracy, spearman

N = 2000


def lm_polygraph_prr_area(estimator, target, max_rejection=1.0):
    """LM-Polygraph 0.7 PredictionRejectionArea.__call__ (uncertainty estimator, higher = less certain), verbatim."""
    min_t, max_t = np.min(target), np.max(target)
    if np.isclose(min_t, max_t):
        min_t -= 1
        max_t += 1
    target = (np.array(target) - min_t) / (max_t - min_t)
    ue = np.array(estimator)
    num_obs = len(ue)
    num_rej = int(max_rejection * num_obs)
    ue_argsort = np.argsort(ue)
    sorted_metrics = np.array(target)[ue_argsort]
    cumsum = np.cumsum(sorted_metrics)[-num_rej:]
    scores = (cumsum / np.arange((num_obs - num_rej) + 1, num_obs + 1))[::-1]
    return np.sum(scores) / num_rej


def lm_polygraph_prr(confidence, quality, max_rejection=1.0):
    """Normalised PRR as LM-Polygraph's manager computes it, with the random baseline's exact expectation."""
    area = lm_polygraph_prr_area(-np.asarray(confidence), quality, max_rejection)
    oracle = lm_polygraph_prr_area(-np.asarray(quality), quality, max_rejection)
    q = np.asarray(quality, dtype=float)
    random = np.mean((q - q.min()) / (q.max() - q.min()))
    return (area - random) / (oracle - random)


def lm_polygraph_rcc_auc(confidence, correct):
    """LM-Polygraph 0.7 RiskCoverageCurveAUC for a 0/1 target, with confidence turned into uncertainty."""
    risk = 1 - np.asarray(correct, dtype=float)
    pairs = sorted(zip(-np.asarray(confidence), risk), key=lambda x: x[0])
    cumulative = np.cumsum([r for _, r in pairs]) / np.arange(1, len(pairs) + 1)
    return cumulative.mean()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    c = rng.random(N)
    y = (rng.random(N) < c**2).astype(np.int64)
    return c, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_auprc_match_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    c = rng.random(N)
    y = rng.random(N) < (0.2 + 0.6 * c if seed != 2 else 0.03)  # seed 2: rare positives
    assert auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-6)
    assert auprc(c, y) == pytest.approx(average_precision_score(y, c), abs=1e-6)


def test_auroc_auprc_match_sklearn_with_many_ties():
    rng = np.random.default_rng(5)
    c = rng.integers(0, 11, N) / 10  # self-consistency style: K = 10 votes
    y = rng.random(N) < c
    assert auroc(c, y) == pytest.approx(roc_auc_score(y, c), abs=1e-6)
    assert auprc(c, y) == pytest.approx(average_precision_score(y, c), abs=1e-6)
    assert auroc(np.full(N, 0.5), y) == pytest.approx(0.5, abs=1e-7)


def test_auroc_extremes():
    y = np.array([0, 0, 1, 1])
    assert auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], y) == 0.0
    assert auprc([0.1, 0.2, 0.8, 0.9], y) == 1.0


def test_single_class_labels_give_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="single class"):
        assert math.isnan(auroc([0.2, 0.4, 0.9], [1, 1, 1]))
    with pytest.warns(RuntimeWarning, match="single class"):
        assert math.isnan(auroc([0.2, 0.4, 0.9], [0, 0, 0]))
    with pytest.warns(RuntimeWarning, match="no positive"):
        assert math.isnan(auprc([0.2, 0.4, 0.9], [0, 0, 0]))
    assert auprc([0.2, 0.4, 0.9], [1, 1, 1]) == 1.0  # all correct: precision is 1 everywhere, as sklearn


def test_prr_oracle_is_one_and_random_is_zero(data):
    c, y = data
    assert prr(y.astype(float), y) == pytest.approx(1.0, abs=1e-6)
    assert prr(y.astype(float), y, max_rejection=0.5) == pytest.approx(1.0, abs=1e-6)
    anti = prr(1 - y.astype(float), y)  # the worst order: wrong answers kept first
    assert anti < -0.5
    assert anti == pytest.approx(lm_polygraph_prr(1 - y.astype(float), y), abs=1e-5)
    rng = np.random.default_rng(0)
    randoms = [prr(rng.random(N), y) for _ in range(5)]
    assert abs(np.mean(randoms)) < 0.03
    assert 0.3 < prr(c, y) < 0.9  # informative confidence sits in between


@pytest.mark.parametrize("rho", [1.0, 0.5])
def test_prr_matches_lm_polygraph(data, rho):
    c, y = data
    assert prr(c, y, max_rejection=rho) == pytest.approx(lm_polygraph_prr(c, y, rho), abs=1e-5)
    rng = np.random.default_rng(1)
    soft = np.clip(y * 0.7 + rng.random(N) * 0.3, 0, 1)  # a soft quality such as ROUGE
    assert prr(c, soft, max_rejection=rho) == pytest.approx(lm_polygraph_prr(c, soft, rho), abs=1e-5)


def test_prr_random_baseline_is_lm_polygraphs_shuffle_average(data):
    _, y = data
    rng = np.random.default_rng(42)
    shuffles = [lm_polygraph_prr_area(rng.permutation(N), y) for _ in range(300)]
    assert np.mean(shuffles) == pytest.approx(np.mean(y), abs=3e-3)


def test_prr_constant_quality_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="constant"):
        assert math.isnan(prr([0.1, 0.5, 0.9], [1, 1, 1]))


def test_aurc_matches_lm_polygraph_and_auarc(data):
    c, y = data
    assert aurc(c, y) == pytest.approx(lm_polygraph_rcc_auc(c, y), abs=1e-6)
    assert auarc(c, y) == pytest.approx(1 - aurc(c, y), abs=1e-6)
    perfect = aurc(y.astype(float), y)
    wrong = 1 - y.mean()
    assert perfect == pytest.approx(
        np.mean(np.maximum(0, np.arange(1, N + 1) - y.sum()) / np.arange(1, N + 1)), abs=1e-6
    )
    assert perfect < aurc(c, y) < aurc(1 - c, y)
    assert aurc(np.full(N, 0.5), y) == pytest.approx(
        wrong, abs=1e-6
    )  # all tied: risk = error rate at every k


def test_selective_accuracy():
    c = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    assert selective_accuracy(c, y, coverage=0.1) == 1.0
    assert selective_accuracy(c, y, coverage=0.3) == pytest.approx(2 / 3)
    assert selective_accuracy(c, y, coverage=1.0) == pytest.approx(0.4)
    assert selective_accuracy(c, y, coverage=0.25) == pytest.approx(2 / 3)  # ceil(2.5) = 3 rows
    # ties at the cut: the two 0.5s split 1 correct + 1 wrong; keeping one of them counts half a hit
    assert selective_accuracy([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0], coverage=0.5) == pytest.approx(0.75)


def test_spearman_matches_scipy_with_ties(data):
    c, y = data
    assert spearman(c, y) == pytest.approx(spearmanr(c, y).statistic, abs=1e-5)
    rng = np.random.default_rng(2)
    q = rng.normal(size=N) + 3 * c  # any real-valued quality, including negatives
    ct = np.round(c, 1)
    assert spearman(ct, q) == pytest.approx(spearmanr(ct, q).statistic, abs=1e-5)
    with pytest.warns(RuntimeWarning, match="constant"):
        assert math.isnan(spearman(np.full(5, 0.3), [1, 2, 3, 4, 5]))
