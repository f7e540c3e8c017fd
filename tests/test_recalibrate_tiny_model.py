"""Both temperature modes on the tiny random model: decoding changes answers, post-hoc re-tempering does not."""

import numpy as np
import pytest
from scipy.special import log_softmax

from calib.recalibrate import (
    SweepPoint,
    fit_temperature,
    posthoc_points,
    temper_generations,
    temperature_sweep,
    token_logits,
)

PROMPTS = [
    "The capital of France is",
    "2 + 2 =",
    "Hello, my name",
    "Water boils at",
    "The sky is",
    "One, two,",
]


@pytest.fixture(scope="module")
def gens_by_t(tiny_llama):
    from calib.decode import generate

    v = tiny_llama.config.vocab_size
    return {
        t: generate(
            tiny_llama,
            PROMPTS,
            num_samples=1,
            include_greedy=True,
            max_new_tokens=4,
            temperature=t,
            top_logprobs=v,
            seed=3,
            stop=(),
        )
        for t in (0.7, 1.3)
    }


def test_posthoc_retempering_of_generations_is_exact_with_full_topk(tiny_llama, gens_by_t):
    greedy, _ = gens_by_t[0.7].split_greedy()
    v = tiny_llama.config.vocab_size
    tempered = temper_generations(greedy, 0.8, v)
    assert tempered.texts == greedy.texts and tempered.meta["posthoc_temperature"] == 0.8
    for i in range(len(PROMPTS)):
        ids, top_ids, top_lp = greedy.token_ids[i][0], greedy.top_ids[i][0], greedy.top_logprobs[i][0]
        full = np.full((len(ids), v), -np.inf)
        np.put_along_axis(full, top_ids.astype(int), top_lp.astype(np.float64), axis=1)
        exact = log_softmax(full / 0.8, axis=1)[np.arange(len(ids)), ids]
        np.testing.assert_allclose(tempered.token_logprobs[i][0], exact, atol=1e-4)


@pytest.mark.filterwarnings("ignore:bootstrap")  # six questions: some resamples hold one class
def test_decoding_changes_answers_posthoc_does_not(tiny_llama, gens_by_t):
    greedy, _ = gens_by_t[0.7].split_greedy()
    samples = {t: g.split_greedy()[1] for t, g in gens_by_t.items()}
    assert samples[0.7].texts != samples[1.3].texts  # a decoding temperature changes what is said

    def grade(g):  # proxy grade: does the sample agree with the greedy answer
        return np.array([float(g.texts[i][0] == greedy.texts[i][0]) for i in range(len(PROMPTS))])

    decoding = {
        t: SweepPoint(
            [np.exp(g.token_logprobs[i][0].sum()) for i in range(len(PROMPTS))],
            grade(g),
            generated_tokens=g.num_generated_tokens(),
        )
        for t, g in samples.items()
    }
    table = temperature_sweep(decoding, mode="decoding", n_resamples=50)
    assert table.rows[0].generated_tokens == samples[0.7].num_generated_tokens()

    correct = (np.arange(len(PROMPTS)) % 2).astype(float)
    points = posthoc_points(greedy, correct, [0.7, 1.0, 1.3], tiny_llama.config.vocab_size)
    assert all(np.array_equal(p.correct, correct) for p in points.values())  # answers, hence grades, fixed
    msp = np.array(
        [np.exp(greedy.token_logprobs[i][0].astype(np.float64).sum()) for i in range(len(PROMPTS))]
    )
    np.testing.assert_allclose(points[1.0].confidence, msp, rtol=1e-4)
    assert points[0.7].confidence.mean() > points[1.3].confidence.mean()  # greedy tokens sharpen at T < 1
    assert len(temperature_sweep(points, mode="posthoc", n_resamples=50).rows) == 3


def test_token_logits_agree_with_score_and_fit_a_temperature(tiny_llama):
    from calib.decode import score

    conts = [" Paris", " 4", " is Bob", " 100 degrees", " blue", " three"]
    logits, labels = token_logits(tiny_llama, PROMPTS, conts)
    assert logits.shape == (len(labels), tiny_llama.config.vocab_size)
    ours = log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(labels)), labels]
    np.testing.assert_allclose(ours, np.concatenate(score(tiny_llama, PROMPTS, conts)), atol=2e-4)
    # a random-weight model predicts worse than uniform, so its NLL falls all the way to the T = 100 bound
    with pytest.warns(RuntimeWarning, match="reached the bound"):
        t = fit_temperature(logits, labels)
    nll = lambda s: -np.mean(log_softmax(logits / s, axis=1)[np.arange(len(labels)), labels])  # noqa: E731
    assert t == pytest.approx(100.0) and nll(t) < nll(10.0) < nll(1.0)
