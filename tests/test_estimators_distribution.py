"""Rényi negentropy, Fisher–Rao distance, self-certainty and boosted probability: by hand on a 4-token vocabulary,
against numpy on random distributions, teacher-forced on a real (tiny) model, and through the estimators."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib.decode.sampling import DISTRIBUTION_COLUMNS, distribution_statistics
from calib.decode.score import score_distribution
from calib.errors import CalibError
from calib.estimators import Bundle, available_needs, check_needs, get_estimator
from calib.estimators.synthetic import generations_from

STATISTICS = jax.jit(distribution_statistics, static_argnames=("alpha", "temperature", "p_jump", "epsilon"))


def _stats(p, targets, **options):
    with jax.enable_x64(True):
        return np.asarray(STATISTICS(jnp.log(jnp.asarray(p, jnp.float64)), jnp.asarray(targets), **options))


def test_each_statistic_by_hand_on_four_tokens():
    p = [[0.5, 0.25, 0.125, 0.125]] * 3
    s = _stats(p, [1, 2, 0], alpha=0.5, temperature=1.0)
    bc = math.sqrt(0.5) + 0.5 + 2 * math.sqrt(0.125)  # Σ_v √p_v = 1.9142
    renyi = math.log(bc) / (0.5 - 1) + math.log(4)  # = 0.0877
    np.testing.assert_allclose(s[:, 0], renyi, atol=1e-12)
    np.testing.assert_allclose(s[:, 1], 2 / math.pi * math.acos(bc / 2), atol=1e-12)
    kl_u_p = -(math.log(0.5) + math.log(0.25) + 2 * math.log(0.125)) / 4 - math.log(4)  # = 0.3466
    np.testing.assert_allclose(s[:, 2], kl_u_p, atol=1e-12)
    # sorted gaps 0.25 (> 0.3 * 0.5), 0.125 (> 0.3 * 0.25), 0: the last jump is after rank 1, so tokens 0 and 1 are
    # dominant with mass 0.75; token 2 is not and keeps its own 0.125
    np.testing.assert_allclose(s[:, 3], [0.75, 0.125, 0.75], atol=1e-12)
    np.testing.assert_allclose(s[:, 4], math.log(4))
    # a flat distribution is the uniform: no divergence, no distance, no jump
    flat = _stats([[0.25] * 4], [2], alpha=0.5, temperature=1.0)[0]
    np.testing.assert_allclose(flat[:4], [0.0, 0.0, 0.0, 0.25], atol=1e-7)


def _numpy_reference(log_p, targets, alpha=0.5, temperature=2.0, p_jump=0.3, eps=0.005):
    """Straight from the definitions over the whole vocabulary, sorting every entry (boostedprob's algorithm)."""
    out = []
    for lp, t in zip(log_p, targets):
        v = len(lp)
        pt = np.exp(lp / temperature) / np.exp(lp / temperature).sum()
        if alpha == 1.0:  # the α → 1 limit is KL(p_T ‖ U)
            renyi = (pt * np.log(pt)).sum() + np.log(v)
        else:
            renyi = np.log((pt**alpha).sum()) / (alpha - 1) + np.log(v)
        fr = 2 / np.pi * np.arccos(np.sqrt(pt / v).sum())
        sc = -np.mean(lp) - np.log(v)
        p = np.exp(lp)
        order = np.argsort(-p, kind="stable")
        ps = p[order]
        gap = ps[:-1] - ps[1:]
        jumps = np.flatnonzero((gap > p_jump * ps[:-1]) & (gap > eps))
        dominant = set(order[: jumps[-1] + 1]) if len(jumps) else set()
        boosted = ps[: jumps[-1] + 1].sum() if t in dominant else p[t]
        out.append([renyi, fr, sc, boosted, np.log(v)])
    return np.array(out)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 3.0])
def test_statistics_match_numpy_over_a_whole_vocabulary(alpha):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(12, 500)) * np.linspace(0.2, 9, 12)[:, None]
    logits[::3, :4] += 6.0  # a dominant group
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = np.where(np.arange(12) % 2, log_p.argmax(-1), rng.integers(0, 500, 12))
    targets[3] = np.argsort(log_p[3])[-3]  # inside the dominant group, not the top token
    with jax.enable_x64(True):
        got = np.asarray(STATISTICS(jnp.asarray(logits), jnp.asarray(targets), alpha=alpha))
    want = _numpy_reference(log_p, targets, alpha=alpha)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert (want[:, 3] > np.exp(log_p[np.arange(12), targets]) + 1e-3).any()  # some tokens were boosted


def test_teacher_forced_statistics_equal_the_models_full_logits(tiny_llama):
    """score_distribution over given tokens = the formulas on the logits of one full forward pass."""
    prompt, answer = "The capital of France is", [17, 250, 3, 99]
    got = score_distribution(tiny_llama, [prompt, prompt], [answer, answer[:2]])
    ids = tiny_llama.encode(prompt) + answer
    logits = np.asarray(tiny_llama.model(jnp.asarray([ids])), dtype=np.float64)[0]
    start = len(ids) - len(answer) - 1
    steps = logits[start : start + len(answer)]  # the logits that predict each answer token
    peak = steps.max(-1, keepdims=True)
    log_p = steps - peak - np.log(np.exp(steps - peak).sum(-1, keepdims=True))
    want = _numpy_reference(log_p, answer)
    assert got[0].shape == (4, len(DISTRIBUTION_COLUMNS))
    np.testing.assert_allclose(got[0], want, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(got[1], want[:2], rtol=2e-4, atol=2e-4)


def test_estimators_average_over_tokens_and_map_to_confidence():
    stats = {
        "q0": np.array([[1.0, 0.2, 2.0, 0.9, math.log(8)], [3.0, 0.4, 4.0, 0.5, math.log(8)]]),
        "q1": np.array([[0.0, 0.0, 0.0, 0.125, math.log(8)]]),
    }
    calls = []

    def distribution_fn(prompts, token_ids):
        calls.append(list(prompts))
        return [stats[p] for p in prompts]

    greedy = generations_from([["a b"], ["c"], [""]], prompts=["q0", "q1", "q2"])
    bundle = Bundle(greedy, distribution_fn=distribution_fn)
    renyi = get_estimator("renyi_negentropy")(bundle)
    np.testing.assert_allclose(renyi.raw, [2.0, 0.0, np.nan])
    np.testing.assert_allclose(renyi.confidence, [math.exp(2.0) / 8, 1 / 8, np.nan])  # exp(−H_α)
    np.testing.assert_allclose(get_estimator("fisher_rao")(bundle).confidence, [0.3, 0.0, np.nan])
    certainty = get_estimator("self_certainty")(bundle)
    np.testing.assert_allclose(certainty.raw, [3.0, 0.0, np.nan])
    np.testing.assert_allclose(certainty.confidence, [1 - math.exp(-3.0), 0.0, np.nan])
    boosted = get_estimator("boosted_prob_sequence")(bundle)
    np.testing.assert_allclose(boosted.raw, [0.7, 0.125, np.nan])
    assert boosted.higher_raw_means == "confident"
    assert calls == [["q0", "q1"]]  # one pass for all four estimators; the empty answer is not scored


def test_without_a_model_the_estimators_say_what_they_need():
    names = ["renyi_negentropy", "fisher_rao", "self_certainty", "boosted_prob_sequence"]
    with pytest.raises(CalibError, match=r"'self_certainty' needs distribution .*load a model"):
        check_needs([get_estimator(n) for n in names], available_needs(num_samples=1, has_model=False))
    check_needs([get_estimator(n) for n in names], available_needs(num_samples=1, has_model=True))


def test_fisher_rao_in_float32_near_the_uniform_distribution():
    """The distance of a near-uniform p (an untrained model's) in float32 equals float64 numpy's to 1e-7: computed
    as arccos(Σ √(p/V)), the coefficient's float32 rounding near 1 gave errors up to ~1e-6 (tensor-parallel runs
    then differed from one device's by as much)."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(64, 260)) * np.geomspace(1e-3, 0.3, 64)[:, None]
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = _numpy_reference(log_p, np.zeros(64, int))[:, 1]
    got = np.asarray(STATISTICS(jnp.asarray(logits, jnp.float32), jnp.zeros(64, jnp.int32)))[:, 1]
    assert np.abs(got - want).max() < 1e-7
    assert want.min() < 1e-3 < 0.02 < want.max()  # from nearly uniform to clearly not
