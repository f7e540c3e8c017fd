"""calib's estimators fed LM-Polygraph 0.7.0's inputs agree with LM-Polygraph's own outputs on them.

tests/fixtures/lmpg_070/saved.json holds small fixed inputs (full greedy log-prob distributions, sample log-likelihoods,
an entailment matrix) and what LM-Polygraph 0.7.0's estimator code returned on them (made by make_fixture.py beside
it). Every difference allowed here is a definitional one written in docs/estimators.md's table.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib.decode.sampling import distribution_statistics
from calib.estimators import Bundle, get_estimator
from calib.estimators.synthetic import generations_from
from calib.semantic import Comparison

SAVED = json.loads((Path(__file__).parent / "fixtures" / "lmpg_070" / "saved.json").read_text())
DATA, LMPG = SAVED["inputs"], SAVED["outputs"]
LOG_V = np.log(len(DATA["greedy_log_probs"][0][0]))


class MatrixBackend:
    """The saved entailment matrix among the samples; the greedy answer (index 0) is similar to everything."""

    name = "matrix"

    def compare(self, questions, answers):
        out = []
        for s in np.asarray(DATA["semantic_matrix_entail"], dtype=np.float64):
            m = np.ones((len(s) + 1, len(s) + 1))
            m[1:, 1:] = s
            out.append(Comparison(m, (m >= 0.5) & (m.T >= 0.5)))
        return out

    def pair_similarity(self, first, second):
        raise AssertionError("not used")


STATISTICS = jax.jit(distribution_statistics)


def _distribution_fn(prompts, token_ids):
    """The saved full distributions through calib's per-token statistics, in float64."""
    index = {f"q{i}": i for i in range(len(DATA["greedy_log_probs"]))}
    with jax.enable_x64(True):
        return [
            np.asarray(
                STATISTICS(
                    jnp.asarray(DATA["greedy_log_probs"][index[p]], jnp.float64), jnp.asarray(np.asarray(ids))
                )
            )
            for p, ids in zip(prompts, token_ids)
        ]


def _attention_fn(prompts, token_ids, suffix):
    """The saved [L, H, S, S] attention over prompt + answer, reduced to calib's diagonal and last row."""
    out = []
    for p in prompts:  # "q3", or CSL's eliciting prompt ending in "Question: q3\nAnswer: "
        a = np.asarray(
            DATA["attention"][int(p.rsplit("Question: q", 1)[-1].split()[0] if "Question" in p else p[1:])]
        )
        out.append(np.stack([np.diagonal(a, axis1=-2, axis2=-1), a[:, :, -1, :]], axis=2))
    return out


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return _bundle()


def _bundle() -> Bundle:
    lp = [np.asarray(x) for x in DATA["greedy_log_probs"]]
    tokens = DATA["greedy_tokens"]
    greedy = generations_from(
        [[f"g{i}"] for i in range(len(lp))],
        logprobs=[[x[np.arange(len(t)), t]] for x, t in zip(lp, tokens)],
        entropies=[[-(np.exp(x) * x).sum(-1)] for x in lp],
        token_ids=[[t] for t in tokens],
        prompts=[f"q{i}" for i in range(len(lp))],
    )
    # LM-Polygraph keeps each sample's log-likelihood Σ_t ℓ_t; spread it evenly over the sample's tokens
    sample_tokens = DATA["sample_tokens"]
    samples = generations_from(
        DATA["sample_texts"],
        logprobs=[
            [[s / len(t)] * len(t) for s, t in zip(sums, row)]
            for sums, row in zip(DATA["sample_log_probs"], sample_tokens)
        ],
        token_ids=sample_tokens,
        prompts=[f"q{i}" for i in range(len(lp))],
    )
    examples = [SimpleNamespace(question=f"q{i}") for i in range(len(lp))]
    return Bundle(
        greedy,
        samples,
        examples,
        semantic=MatrixBackend(),
        distribution_fn=_distribution_fn,
        attention_fn=_attention_fn,
    )


# calib name, LM-Polygraph name, calib raw -> LM-Polygraph's number (the reason for each map: docs/estimators.md)
CASES = [
    ("msp", "MaximumSequenceProbability", lambda r: -np.log(r)),
    ("inverse_perplexity", "Perplexity", lambda r: -np.log(r)),
    ("mean_token_entropy", "MeanTokenEntropy", lambda r: r),
    (
        "renyi_negentropy",
        "RenyiNeg",
        lambda r: r - 2 * LOG_V,
    ),  # LM-Polygraph subtracts (α−1) log V, D_α adds it
    ("fisher_rao", "FisherRao", lambda r: r),
    ("self_certainty", "SelfCertainty", lambda r: -r),
    ("boosted_prob_sequence", "BoostedProbSequence", lambda r: -r),
    ("mc_sequence_entropy", "MonteCarloSequenceEntropy", lambda r: r),
    ("mc_normalized_sequence_entropy", "MonteCarloNormalizedSequenceEntropy", lambda r: r),
    ("degree", "DegMat", lambda r: r),
    ("eccentricity", "Eccentricity", lambda r: r),
    ("eigv", "EigValLaplacian", lambda r: r),
    ("rauq", "RAUQ", lambda r: r + 1),  # LM-Polygraph reports 1 − mean log c
    ("attention_score", "AttentionScore", lambda r: -r),
    ("csl", "CSL", lambda r: -r),
    ("label_prob", "LabelProb", lambda r: 1 - r),
    ("num_semantic_sets", "NumSemSets", lambda r: r),
    (
        "semantic_entropy_discrete",
        "SemanticEntropy",
        lambda r: r,
    ),  # its class_probability_estimation="frequency"
    ("luq", "LUQ", lambda r: r),
    (
        "kle",
        "KernelLanguageEntropy",
        lambda r: r / np.log(len(DATA["sample_texts"][0])),
    ),  # it divides by log K
    ("lexical_similarity", "LexicalSimilarity_rougeL", lambda r: -r),
    ("lexical_similarity_rouge1", "LexicalSimilarity_rouge1", lambda r: -r),
]


@pytest.mark.parametrize(("name", "lmpg", "to_lmpg"), CASES, ids=[c[0] for c in CASES])
def test_agrees_with_lm_polygraph_on_its_inputs(bundle, name, lmpg, to_lmpg):
    raw = get_estimator(name)(bundle).raw
    np.testing.assert_allclose(to_lmpg(raw), LMPG[lmpg], rtol=0, atol=1e-6)


def test_bleu_differs_only_by_lm_polygraphs_weights_of_033():
    """LM-Polygraph weighs 1-3-grams 0.33 each when the shorter text has 3 words, calib 1/3: BLEU^0.99 vs BLEU."""
    raw = get_estimator("lexical_similarity_bleu")(bundle_for_bleu := _bundle()).raw
    assert bundle_for_bleu.num_samples == len(DATA["sample_texts"][0])
    np.testing.assert_allclose(-raw, LMPG["LexicalSimilarity_BLEU"], rtol=0, atol=5e-3)
