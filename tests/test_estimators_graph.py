"""EigV, Degree, Eccentricity, KLE and SAR on small known matrices, cross-checked with numpy / scipy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import scipy.linalg

from calib.estimators import Bundle, get_estimator
from calib.estimators.synthetic import generations_from
from calib.semantic import Comparison, ExactMatch


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


class MatrixBackend:
    """Returns given [K+1, K+1] similarity matrices (greedy answer first); equivalent iff similarity >= 0.5."""

    name = "matrix"

    def __init__(self, matrices):
        self.matrices = [np.asarray(m, dtype=np.float32) for m in matrices]

    def compare(self, questions, answers):
        return [Comparison(m, (m >= 0.5) & (m.T >= 0.5)) for m in self.matrices]

    def pair_similarity(self, first, second):
        raise AssertionError("not used")


def _bundle_from_samples_matrix(sample_matrices):
    """Bundle whose sample-sample similarity is each given [K, K] matrix (greedy row/col: similarity 1 to all)."""
    full = []
    for s in sample_matrices:
        k = s.shape[0]
        m = np.ones((k + 1, k + 1))
        m[1:, 1:] = s
        full.append(m)
    k = sample_matrices[0].shape[0]
    greedy = generations_from([["g"]] * len(full))
    samples = generations_from([[f"s{j}" for j in range(k)]] * len(full))
    return Bundle(greedy, samples, semantic=MatrixBackend(full))


def _laplacian(w):
    d = w.sum(1)
    return np.eye(len(w)) - w / np.sqrt(np.outer(d, d))


def _reference(s, threshold=0.9):
    """numpy / scipy version of Lin et al.'s measures on directional similarity s."""
    w = 0.5 * (s + s.T)
    k = len(w)
    lam, vec = scipy.linalg.eigh(_laplacian(w))
    eigv = np.sum(np.clip(1 - lam, 0, None))
    degree = np.trace(k * np.eye(k) - np.diag(w.sum(1))) / k**2
    v = vec[:, lam < threshold]
    ecc = np.linalg.norm(v - v.mean(0), "fro")
    return eigv, degree, ecc


def _random_similarities(seed, n=4, k=6):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        s = rng.uniform(0, 1, (k, k))
        np.fill_diagonal(s, 1.0)
        out.append(s)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_graph_measures_match_numpy_scipy_on_random_matrices(seed):
    matrices = _random_similarities(seed)
    bundle = _bundle_from_samples_matrix(matrices)
    expected = np.array([_reference(s) for s in matrices])
    np.testing.assert_allclose(get_estimator("eigv")(bundle).raw, expected[:, 0], rtol=1e-4)
    np.testing.assert_allclose(get_estimator("degree")(bundle).raw, expected[:, 1], rtol=1e-4)
    np.testing.assert_allclose(
        get_estimator("eccentricity")(bundle).raw, expected[:, 2], rtol=1e-3, atol=1e-4
    )


def test_block_matrices_have_known_values():
    k = 6
    identical = np.ones((k, k))
    distinct = np.eye(k)
    two_blocks = scipy.linalg.block_diag(np.ones((4, 4)), np.ones((2, 2)))
    bundle = _bundle_from_samples_matrix([identical, two_blocks, distinct])

    eigv = get_estimator("eigv")(bundle)
    np.testing.assert_allclose(eigv.raw, [1, 2, k], atol=1e-5)  # EigV counts the blocks
    np.testing.assert_allclose(eigv.confidence, [1, 1 / 2, 1 / k], atol=1e-5)

    degree = get_estimator("degree")(bundle)
    np.testing.assert_allclose(degree.raw, [0, 1 - (16 + 4) / 36, 1 - 1 / k], atol=1e-6)

    ecc = get_estimator("eccentricity")(bundle)
    np.testing.assert_allclose(ecc.raw, [0, ecc.raw[1], math.sqrt(k - 1)], atol=1e-5)
    np.testing.assert_allclose(ecc.confidence, [1, ecc.confidence[1], 0], atol=1e-5)
    assert 0 < ecc.confidence[1] < 1


def test_degree_of_the_greedy_answer_is_its_mean_similarity_to_the_samples():
    m = np.eye(4)
    m[0, 1:] = [1.0, 0.5, 0.0]
    m[1:, 0] = [1.0, 0.1, 0.2]
    greedy, samples = generations_from([["g"]]), generations_from([["a", "b", "c"]])
    bundle = Bundle(greedy, samples, semantic=MatrixBackend([m]))
    expected = np.mean([(1.0 + 1.0) / 2, (0.5 + 0.1) / 2, (0.0 + 0.2) / 2])
    np.testing.assert_allclose(get_estimator("degree_answer")(bundle).confidence, [expected], rtol=1e-6)


def _kle_reference(s, t):
    w = 0.5 * (s + s.T)
    kernel = scipy.linalg.expm(-t * (np.diag(w.sum(1)) - w))
    d = np.sqrt(np.diag(kernel))
    density = kernel / np.outer(d, d) / len(w)
    mu = np.linalg.eigvalsh(density)
    mu = mu[mu > 1e-12]
    return -np.sum(mu * np.log(mu))


@pytest.mark.parametrize("t", [0.3, 1.0])
def test_kle_matches_scipy_expm(t):
    matrices = _random_similarities(3)
    bundle = _bundle_from_samples_matrix(matrices)
    result = get_estimator("kle", t=t)(bundle)
    np.testing.assert_allclose(result.raw, [_kle_reference(s, t) for s in matrices], rtol=1e-4)
    np.testing.assert_allclose(result.confidence, np.exp(-result.raw))


def test_kle_bounds_and_large_t_limit_equal_discrete_semantic_entropy():
    k = 6
    two_blocks = scipy.linalg.block_diag(np.ones((4, 4)), np.ones((2, 2)))
    bundle = _bundle_from_samples_matrix([np.eye(k), two_blocks])
    raw = get_estimator("kle", t=50.0)(bundle).raw
    se = -(4 / 6 * math.log(4 / 6) + 2 / 6 * math.log(2 / 6))
    np.testing.assert_allclose(raw, [math.log(k), se], atol=1e-4)


def _decode(ids):
    return " ".join({0: "Paris", 1: ".", 2: "France", 3: "Lyon"}[int(i)] for i in ids)


def test_token_sar_puts_no_weight_on_tokens_whose_removal_changes_nothing():
    # removing "." leaves the normalised answer unchanged (relevance 0); removing a word changes it (relevance 1)
    greedy = generations_from([["Paris."], ["Paris France"]], logprobs=[[[-0.2, -3.0]], [[-0.2, -1.0]]],
                              token_ids=[[[0, 1]], [[0, 2]]])  # fmt: skip
    bundle = Bundle(greedy, semantic=ExactMatch(), decode_fn=_decode, examples=[Example("q"), Example("q")])
    result = get_estimator("token_sar")(bundle)
    np.testing.assert_allclose(result.raw, [0.2, 0.6], rtol=1e-6)
    np.testing.assert_allclose(result.confidence, np.exp([-0.2, -0.6]), rtol=1e-6)


def _sentence_sar_reference(p, g, tau=0.001):
    k = len(p)
    return np.mean(
        [-math.log(p[j] + sum(g[j][m] * p[m] for m in range(k) if m != j) / tau) for j in range(k)]
    )


def test_sentence_sar_and_sar_match_the_formula():
    texts = [["Paris", "Paris.", "Lyon"]]
    logprobs = [[[-1.0], [-1.0, -2.0], [-4.0]]]
    ids = [[[0], [0, 1], [3]]]
    samples = generations_from(texts, logprobs=logprobs, token_ids=ids)
    greedy = generations_from([["Paris"]], token_ids=[[[0]]])
    bundle = Bundle(greedy, samples, [Example("q")], semantic=ExactMatch(), decode_fn=_decode)
    g = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]  # exact match: "Paris" == "Paris."

    p_sentence = np.exp([-1.0, -3.0, -4.0])
    sentence = get_estimator("sentence_sar")(bundle)
    np.testing.assert_allclose(sentence.raw, [_sentence_sar_reference(p_sentence, g)], rtol=1e-6)

    p_token = np.exp([-1.0, -1.0, -4.0])  # tokenSAR of "Paris." puts all weight on "Paris"
    sar = get_estimator("sar")(bundle)
    np.testing.assert_allclose(sar.raw, [_sentence_sar_reference(p_token, g)], rtol=1e-6)
    np.testing.assert_allclose(sar.confidence, 1 / (1 + np.exp(sar.raw)))


def test_token_relevance_in_chunks_with_progress(monkeypatch, capsys):
    """Long answers' relevance is computed in chunks of whole answers (a bar shows progress) and equals the
    relevance computed in one call."""
    import calib.estimators.bundle as bundle_module

    class Recording(ExactMatch):
        def __init__(self):
            super().__init__()
            self.calls: list[int] = []

        def pair_similarity(self, first, second):
            self.calls.append(len(first))
            return super().pair_similarity(first, second)

    texts = [["Paris France", "Paris.", "Lyon France Paris"], ["Lyon", "Paris . France", "France"]]
    ids = [[[0, 2], [0, 1], [3, 2, 0]], [[3], [0, 1, 2], [2]]]
    logprobs = [[[-1.0] * len(t) for t in row] for row in ids]
    samples = generations_from(texts, logprobs=logprobs, token_ids=ids)
    greedy = generations_from([["Paris"], ["Lyon"]], token_ids=[[[0]], [[3]]])

    def relevance(chunk: int, progress: bool) -> list:
        monkeypatch.setattr(bundle_module, "RELEVANCE_CHUNK", chunk)
        backend = Recording()
        bundle = Bundle(greedy, samples, [Example("q"), Example("q")], semantic=backend, decode_fn=_decode,
                        progress=progress)  # fmt: skip
        return bundle.sample_token_relevance, backend.calls

    whole, whole_calls = relevance(10_000, progress=True)
    chunked, chunked_calls = relevance(3, progress=True)
    assert whole_calls == [12] and len(chunked_calls) > 1 and sum(chunked_calls) == 12
    assert all(n in (1, 2, 3) for n in chunked_calls)  # answer boundaries: no answer split between calls
    for row_w, row_c in zip(whole, chunked):
        for w, c in zip(row_w, row_c):
            np.testing.assert_array_equal(w, c)
    assert "token relevance (12 pairs)" in capsys.readouterr().err
    relevance(3, progress=False)
    assert "token relevance" not in capsys.readouterr().err


def test_graph_and_kernel_measures_compute_in_the_bundles_float64():
    # the backend's float32 values, widened exactly: a float32 computation would be off by ~1e-6
    matrices = [m.astype(np.float32).astype(np.float64) for m in _random_similarities(7)]
    bundle = _bundle_from_samples_matrix(matrices)
    assert bundle.sample_similarity.dtype == np.float64
    expected = np.array([_reference(s) for s in matrices])
    np.testing.assert_allclose(get_estimator("eigv")(bundle).raw, expected[:, 0], rtol=1e-11)
    np.testing.assert_allclose(get_estimator("degree")(bundle).raw, expected[:, 1], rtol=1e-12)
    np.testing.assert_allclose(get_estimator("eccentricity")(bundle).raw, expected[:, 2], rtol=1e-8)
    kle = get_estimator("kle", t=0.6)(bundle).raw
    np.testing.assert_allclose(kle, [_kle_reference(s, 0.6) for s in matrices], rtol=1e-10)


def _polygraph_kle(entail, contra, t=0.3):
    """LM-Polygraph 0.7.0's KLE on one-hot NLI predictions (entail[i, j] = 1 if s_i entails s_j), unscaled:
    W' = (E + Eᵀ) + ½ (2 - E - Eᵀ - C - Cᵀ), heat kernel expm(-t (D' - W')), unit diagonal / K, VNE."""
    neutral = 2 - entail - entail.T - contra - contra.T
    w = entail + entail.T + 0.5 * neutral
    kernel = scipy.linalg.expm(-t * (np.diag(w.sum(0)) - w))
    d = np.sqrt(np.diag(kernel))
    mu = np.linalg.eigvalsh(kernel / np.outer(d, d) / len(w))
    mu = mu[mu > 1e-12]
    return -np.sum(mu * np.log(mu))


def test_kle_default_t_is_lm_polygraphs_t_on_a_graph_half_as_heavy():
    rng = np.random.default_rng(3)
    k = 6
    labels = rng.integers(0, 3, (k, k))  # 0 entail, 1 neutral, 2 contradict
    np.fill_diagonal(labels, 0)
    entail, contra = (labels == 0).astype(float), (labels == 2).astype(float)
    similarity = np.array([1.0, 0.5, 0.0])[labels]  # a(s_i, s_j) = w(NLI(s_i, s_j)), w = (1, ½, 0)
    bundle = _bundle_from_samples_matrix([similarity])
    assert get_estimator("kle").t == 0.6
    np.testing.assert_allclose(get_estimator("kle")(bundle).raw, [_polygraph_kle(entail, contra)], rtol=1e-9)
