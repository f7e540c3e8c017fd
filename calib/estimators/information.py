"""Information-based scores from token log-probs: Monte-Carlo sequence entropy and pointwise mutual information.

Monte-Carlo sequence entropy (Kuhn et al. 2023, "predictive entropy"; Malinin & Gales 2021) over the K samples
s_1..s_K with token log-probs ℓ_{k,1..T_k}:
- H_MC = (1/K) Σ_k -log p(s_k) = (1/K) Σ_k -Σ_t ℓ_{k,t};
- length-normalised H_MCN = (1/K) Σ_k -(1/T_k) Σ_t ℓ_{k,t} (samples without tokens are left out).
Confidence exp(-H): the geometric mean of the samples' (per-token) probabilities.

Pointwise mutual information (Takayama & Arase 2019; van der Poel et al. 2022 for the conditional form) of the greedy
answer y_1..y_T given the question x, with ℓ_t = log p(y_t | y_<t, x) from decoding and ℓ⁰_t = log p(y_t | y_<t)
scored by the model with a neutral prompt in place of x:
- mean PMI = (1/T) Σ_t (ℓ_t - ℓ⁰_t);
- mean CPMI = (1/T) Σ_t (ℓ_t - λ 1[H_t ≥ τ] ℓ⁰_t), with H_t the entropy of p(· | y_<t, x), τ = 0.0656, λ = 3.599
  (the paper's tuned values, as in LM-Polygraph).
Both are log-ratios of any sign, higher = the answer owes more to the question: confidence sigmoid(score).

Difference from LM-Polygraph 0.7.0: its question-free log-likelihood of token t is read from the logits *at* token t
(which predict token t + 1), and it skips t = 0. Here ℓ⁰_t is the teacher-forced log-prob of token t given the tokens
before it and the neutral prompt, every t counts, and the first token is conditioned on the neutral prompt alone.
The answer is re-tokenised for that call; when its token count differs from the decoded answer's (a tokenizer that
does not round-trip) the score is missing (NaN), never misaligned.
"""

from __future__ import annotations

import numpy as np

from calib.estimators.base import EstimatorResult, Need, confidence_from_entropy, confidence_from_neg_log
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator

NEUTRAL_PROMPT = "\n"
"""Stands in for the question: one newline, a context every tokenizer encodes (an empty prompt has no tokens)."""
CPMI_TAU = 0.0656
CPMI_LAMBDA = 3.599


def monte_carlo_sequence_entropy(logprobs: list[np.ndarray]) -> float:
    """(1/K) Σ_k -Σ_t ℓ_{k,t}."""
    return float(np.mean([-np.sum(lp) for lp in logprobs]))


def monte_carlo_normalized_sequence_entropy(logprobs: list[np.ndarray]) -> float:
    """(1/K') Σ_k -(1/T_k) Σ_t ℓ_{k,t} over the K' samples with at least one token; NaN if none has."""
    per_token = [-np.mean(lp) for lp in logprobs if len(lp)]
    return float(np.mean(per_token)) if per_token else float("nan")


def mean_pmi(conditional: np.ndarray, unconditional: np.ndarray) -> float:
    """(1/T) Σ_t (ℓ_t - ℓ⁰_t)."""
    return float(np.mean(np.asarray(conditional) - np.asarray(unconditional)))


def mean_cpmi(
    conditional: np.ndarray,
    unconditional: np.ndarray,
    entropies: np.ndarray,
    tau: float = CPMI_TAU,
    lam: float = CPMI_LAMBDA,
) -> float:
    """(1/T) Σ_t (ℓ_t - λ 1[H_t ≥ τ] ℓ⁰_t)."""
    gate = (np.asarray(entropies) >= tau).astype(np.float64)
    return float(np.mean(np.asarray(conditional) - lam * gate * np.asarray(unconditional)))


@register_estimator
class MonteCarloSequenceEntropy:
    name = "mc_sequence_entropy"
    needs = frozenset({Need.SAMPLES, Need.SAMPLE_TOKENS})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        h = np.array([monte_carlo_sequence_entropy(row) for row in bundle.sample_logprobs], dtype=np.float64)
        return EstimatorResult(confidence=confidence_from_entropy(h), raw=h, higher_raw_means="uncertain")


@register_estimator
class MonteCarloNormalizedSequenceEntropy:
    name = "mc_normalized_sequence_entropy"
    needs = frozenset({Need.SAMPLES, Need.SAMPLE_TOKENS})

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        h = np.array(
            [monte_carlo_normalized_sequence_entropy(row) for row in bundle.sample_logprobs], dtype=np.float64
        )
        return EstimatorResult(confidence=confidence_from_entropy(h), raw=h, higher_raw_means="uncertain")


def question_free_logprobs(bundle: Bundle, prompt: str = NEUTRAL_PROMPT) -> list[np.ndarray | None]:
    """ℓ⁰ of each greedy answer scored after `prompt`; None where the answer is empty or re-tokenises to another
    length than it was decoded with.

    The continuation is the decoded text of every generated token, the stop token included (the answer's text is
    cut before its stop string, but its log-probs ℓ_t include the stop token's), so the two sequences align token
    for token."""
    conditional = bundle.greedy_logprobs
    todo = [i for i, lp in enumerate(conditional) if len(lp)]
    if bundle.decode_fn is not None:
        texts = [bundle.decode_fn(bundle.greedy.token_ids[i][0]) for i in todo]
    else:
        texts = [bundle.greedy_texts[i] for i in todo]
    scored = bundle.score([prompt] * len(todo), texts) if todo else []
    out: list[np.ndarray | None] = [None] * len(conditional)
    for i, lp0 in zip(todo, scored):
        if len(lp0) == len(conditional[i]):
            out[i] = np.asarray(lp0, dtype=np.float64)
    return out


@register_estimator
class MeanPointwiseMutualInformation:
    name = "mean_pmi"
    needs = frozenset({Need.GREEDY, Need.GREEDY_TOKENS, Need.SCORE})

    def __init__(self, prompt: str = NEUTRAL_PROMPT):
        self.prompt = prompt

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        free = question_free_logprobs(bundle, self.prompt)
        score = np.array(
            [np.nan if lp0 is None else mean_pmi(lp, lp0) for lp, lp0 in zip(bundle.greedy_logprobs, free)],
            dtype=np.float64,
        )
        return EstimatorResult(
            confidence=confidence_from_neg_log(-score), raw=score, higher_raw_means="confident"
        )


@register_estimator
class MeanConditionalPointwiseMutualInformation:
    name = "mean_cpmi"
    needs = frozenset({Need.GREEDY, Need.GREEDY_TOKENS, Need.SCORE})

    def __init__(self, tau: float = CPMI_TAU, lam: float = CPMI_LAMBDA, prompt: str = NEUTRAL_PROMPT):
        self.tau, self.lam, self.prompt = tau, lam, prompt

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        free = question_free_logprobs(bundle, self.prompt)
        rows = zip(bundle.greedy_logprobs, free, bundle.greedy_entropies)
        score = np.array(
            [np.nan if lp0 is None else mean_cpmi(lp, lp0, h, self.tau, self.lam) for lp, lp0, h in rows],
            dtype=np.float64,
        )
        return EstimatorResult(
            confidence=confidence_from_neg_log(-score), raw=score, higher_raw_means="confident"
        )
