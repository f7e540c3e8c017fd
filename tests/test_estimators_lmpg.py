"""calib's estimators fed LM-Polygraph 0.7.0's inputs agree with LM-Polygraph's own outputs on them.

tests/fixtures/lmpg_070/saved.json holds small fixed inputs (full greedy log-prob distributions, sample log-likelihoods,
an entailment matrix, attention, SAR's token and sentence similarities, sample embeddings, a question-free model's
distributions, P(True) replies by prompt) and what LM-Polygraph 0.7.0's estimator code returned on them (made by
make_fixture.py beside it). Every difference allowed here is a definitional one written in docs/estimators.md's table,
and the test computes LM-Polygraph's variant from calib's numbers to show it is the only one.
"""

from __future__ import annotations

import json
from dataclasses import replace
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


# ---- SAR family, EigenScore, PMI / CPMI, P(True) with sampling --------------------------------------------------
def _decode(ids) -> str:
    """The fixture's tokenizer: token ids written as words "t<id>" (make_fixture.FakeTokenizer)."""
    return " ".join(f"t{int(i)}" for i in ids)


def _sar_bundle() -> Bundle:
    """The greedy answers, samples with their per-token log-likelihoods, the cross-encoder's sentence similarity as
    the backend's (the greedy row all ones, unused), and token relevance 1 - token similarity filled in (as a
    generations file's `token_relevance` is)."""
    base = _bundle()
    samples = generations_from(
        DATA["sample_texts"],
        logprobs=DATA["sample_token_log_likelihoods"],
        token_ids=DATA["sample_tokens"],
        prompts=DATA["questions"],
    )
    bundle = Bundle(base.greedy, samples, base.examples, semantic=MatrixBackend())
    comparisons = []
    for s in np.asarray(DATA["sample_sentence_similarity"], dtype=np.float64):
        m = np.ones((len(s) + 1, len(s) + 1))
        m[1:, 1:] = s
        comparisons.append(Comparison(m, (m >= 0.5) & (m.T >= 0.5)))
    bundle.fill_shared_statistics(
        comparisons=comparisons,
        greedy_token_relevance=[1.0 - np.asarray(x) for x in DATA["greedy_token_similarity"]],
        sample_token_relevance=[
            [1.0 - np.asarray(x) for x in row] for row in DATA["sample_token_similarity"]
        ],
    )
    return bundle


def test_sample_log_likelihoods_are_exact_in_float32():
    """The fixture's per-token sample log-likelihoods sit on a 1/256 grid, so calib's float32 token arrays hold
    them exactly and both sides sum the same numbers."""
    flat = np.concatenate([np.asarray(x) for row in DATA["sample_token_log_likelihoods"] for x in row])
    np.testing.assert_array_equal(flat.astype(np.float32).astype(np.float64), flat)


def test_token_sar_agrees_with_lm_polygraph():
    raw = get_estimator("token_sar")(_sar_bundle()).raw
    np.testing.assert_allclose(raw, LMPG["TokenSAR"], rtol=0, atol=1e-6)
    # independent: LM-Polygraph's formula in numpy, Σ_t -ℓ_t (1 - s_t) / Σ (1 - s_t)
    by_hand = []
    for lp, tok, sim in zip(DATA["greedy_log_probs"], DATA["greedy_tokens"], DATA["greedy_token_similarity"]):
        ll = np.asarray(lp)[np.arange(len(tok)), tok]
        r = 1.0 - np.asarray(sim)
        by_hand.append(float(np.sum(-ll * r / r.sum())))
    np.testing.assert_allclose(raw, by_hand, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sentence_sar", "sar"])
def test_sentence_sar_and_sar_agree_on_the_symmetrised_similarity(name):
    """calib reads a backend's similarity as g = ½(S + Sᵀ); LM-Polygraph reads the cross-encoder's ordered-pair
    matrix S as it comes. Fed ½(S + Sᵀ), LM-Polygraph gives calib's number (docs/estimators.md, SAR row)."""
    lmpg = {"sentence_sar": "SentenceSAR", "sar": "SAR"}[name]
    raw = get_estimator(name)(_sar_bundle()).raw
    np.testing.assert_allclose(raw, LMPG[f"{lmpg}_symmetric"], rtol=0, atol=1e-6)
    assert np.max(np.abs(raw - np.asarray(LMPG[lmpg]))) > 1e-3  # the asymmetry matters on these inputs


def test_sentence_sar_function_on_the_ordered_pair_matrix_is_lm_polygraphs():
    """calib's public sentence_sar / token_sar functions fed LM-Polygraph's unsymmetrised matrix give its SentenceSAR
    and SAR: the only difference is the symmetrisation."""
    from calib.estimators.sar import sentence_sar, token_sar

    sentence, sar = [], []
    for i, s in enumerate(np.asarray(DATA["sample_sentence_similarity"])):
        lls = [np.asarray(x) for x in DATA["sample_token_log_likelihoods"][i]]
        sentence.append(sentence_sar(np.exp([x.sum() for x in lls]), s))
        rel = [1.0 - np.asarray(x) for x in DATA["sample_token_similarity"][i]]
        sar.append(sentence_sar(np.exp([-token_sar(x, r) for x, r in zip(lls, rel)]), s))
    np.testing.assert_allclose(sentence, LMPG["SentenceSAR"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(sar, LMPG["SAR"], rtol=0, atol=1e-6)


def test_eigenscore_agrees_with_lm_polygraph():
    """The same sample embeddings (calib keeps hidden states in float32; the fixture's are float32 values)."""
    base = _bundle()
    hidden = [np.asarray(e, dtype=np.float32) for e in DATA["sample_embeddings"]]
    bundle = Bundle(base.greedy, replace(base.samples, hidden=hidden), base.examples)
    raw = get_estimator("eigenscore")(bundle).raw
    np.testing.assert_allclose(raw, LMPG["EigenScore"], rtol=0, atol=1e-6)
    # independent: (1/K) Σ log λ of Z J Zᵀ + αI in numpy, Z J the rows centred over their features
    z = np.asarray(DATA["sample_embeddings"][1])
    centred = z - z.mean(axis=1, keepdims=True)
    by_hand = np.mean(np.log(np.linalg.eigvalsh(centred @ centred.T + 1e-3 * np.eye(len(z)))))
    np.testing.assert_allclose(raw[1], by_hand, rtol=0, atol=1e-9)


def _pmi_bundle() -> tuple[Bundle, list[str]]:
    """The greedy answers with a scorer that answers calib's question-free call: the prompt must be the neutral
    prompt and the continuation the decoded answer; ℓ⁰_t = log p(y_t | y_<t) from the saved question-free model."""
    base = _bundle()
    asked: list[str] = []

    def score_fn(prompts, continuations):
        out = []
        for prompt, text in zip(prompts, continuations):
            asked.append(prompt)
            ids = [int(w[1:]) for w in text.split()]
            i = [tuple(t) for t in DATA["greedy_tokens"]].index(tuple(ids))
            rows = np.asarray(DATA["lm_log_probs"][i])
            out.append(rows[np.arange(len(ids)), ids])  # row t: after y_<t
        return out

    bundle = Bundle(base.greedy, None, base.examples, score_fn=score_fn, decode_fn=_decode)
    return bundle, asked


def _lmpg_aligned(i: int) -> np.ndarray:
    """LM-Polygraph's question-free term for answer i from the same model: the log-prob of y_t read from the
    distribution *after* y_t (row t + 1), and 0 at t = 0 (skipped)."""
    tok = np.asarray(DATA["greedy_tokens"][i])
    rows = np.asarray(DATA["lm_log_probs"][i])
    aligned = rows[np.arange(1, len(tok) + 1), tok]
    aligned[0] = 0.0
    return aligned


def test_mean_pmi_differs_from_lm_polygraph_only_by_its_alignment():
    from calib.estimators.information import NEUTRAL_PROMPT, mean_pmi

    bundle, asked = _pmi_bundle()
    raw = get_estimator("mean_pmi")(bundle).raw
    assert set(asked) == {NEUTRAL_PROMPT}
    conditional = bundle.greedy_logprobs
    calib_by_hand = []
    for i, (lp, tok) in enumerate(zip(conditional, DATA["greedy_tokens"])):
        rows = np.asarray(DATA["lm_log_probs"][i])
        calib_by_hand.append(np.mean(lp - rows[np.arange(len(tok)), tok]))  # every t, row t: after y_<t
    np.testing.assert_allclose(raw, calib_by_hand, rtol=0, atol=1e-9)
    # LM-Polygraph's number is calib's mean_pmi on its alignment, negated (it reports an uncertainty)
    theirs = [-mean_pmi(lp, _lmpg_aligned(i)) for i, lp in enumerate(conditional)]
    np.testing.assert_allclose(theirs, LMPG["MeanPointwiseMutualInformation"], rtol=0, atol=1e-6)
    multi = [len(t) > 1 for t in DATA["greedy_tokens"]]  # one-token answers: both read ℓ_0 less (their) 0 ...
    assert np.all(np.abs(-raw - LMPG["MeanPointwiseMutualInformation"])[multi] > 1e-3)  # ... else they differ


@pytest.mark.parametrize("tau", [None, 0.3])
def test_mean_cpmi_differs_from_lm_polygraph_only_by_its_alignment(tau):
    """τ = 0.3 puts some t > 0 below the entropy gate on these inputs (the default τ = 0.0656 only t = 0)."""
    from calib.estimators.information import CPMI_TAU, mean_cpmi

    bundle, _ = _pmi_bundle()
    tau_ = CPMI_TAU if tau is None else tau
    raw = get_estimator("mean_cpmi", **({} if tau is None else {"tau": tau}))(bundle).raw
    key = "MeanConditionalPointwiseMutualInformation" + ("" if tau is None else f"_tau{tau}")
    calib_by_hand, theirs = [], []
    for i, (lp, h, tok) in enumerate(
        zip(bundle.greedy_logprobs, bundle.greedy_entropies, DATA["greedy_tokens"])
    ):
        rows = np.asarray(DATA["lm_log_probs"][i])
        calib_by_hand.append(np.mean(lp - 3.599 * (h >= tau_) * rows[np.arange(len(tok)), tok]))
        theirs.append(-mean_cpmi(lp, _lmpg_aligned(i), h, tau=tau_))
    np.testing.assert_allclose(raw, calib_by_hand, rtol=0, atol=1e-9)
    np.testing.assert_allclose(theirs, LMPG[key], rtol=0, atol=1e-6)


def test_p_true_sampling_builds_lm_polygraphs_prompt_and_reads_its_number():
    """The fixture's fake model answered LM-Polygraph's SamplingPromptCalculator with a log-prob of "True" seeded
    by each prompt's text; calib's scorer knows only those prompts, so an estimator that builds any other prompt
    (a space, the join of the samples) fails here."""
    base = _bundle()
    known = DATA["true_log_prob_after"]
    greedy = generations_from([[t] for t in DATA["greedy_texts"]], prompts=DATA["questions"])

    def score_fn(prompts, continuations):
        assert set(continuations) == {"True"}
        return [np.array([known[p]]) for p in prompts]

    bundle = Bundle(greedy, base.samples, base.examples, score_fn=score_fn)
    raw = get_estimator("p_true_sampling")(bundle).raw
    np.testing.assert_allclose(-raw, LMPG["PTrueSampling"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("lmpg", ["SemanticEntropy_sum", "SemanticEntropy_unique"])
def test_lm_polygraphs_likelihood_semantic_entropy_is_another_formula(bundle, lmpg):
    """LM-Polygraph's SemanticEntropy (class_probability_estimation="sum") from calib's clusters and sample
    log-likelihoods: -(1/K) Σ_k log Σ_{j ∈ c(s_k)} exp(Σ_t ℓ_j,t), unnormalised sequence likelihoods. calib's
    `semantic_entropy` (Farquhar et al.: length-normalised, normalised over the samples, -Σ_c p log p) is a different
    number (docs/estimators.md, "Semantic entropy"). The fixture's samples are all distinct, so its
    use_unique_responses form is the same number here."""
    assert all(len(set(row)) == len(row) for row in DATA["sample_texts"])
    theirs = []
    for labels, lps in zip(bundle.clusters, bundle.sample_logprobs):
        seq = np.array([lp.sum() for lp in lps])
        class_lp = {c: np.logaddexp.reduce(seq[labels == c]) for c in set(labels.tolist())}
        theirs.append(-np.mean([class_lp[c] for c in labels.tolist()]))
    np.testing.assert_allclose(theirs, LMPG[lmpg], rtol=0, atol=1e-6)
    ours = get_estimator("semantic_entropy_unique" if "unique" in lmpg else "semantic_entropy")(bundle).raw
    assert np.max(np.abs(ours - np.asarray(LMPG[lmpg]))) > 0.1


def test_rouge2_lexical_similarity_agrees_with_lm_polygraph(bundle):
    """The table's `lexical_similarity` with metric="rouge2" is LexicalSimilarity(metric="rouge2")."""
    raw = get_estimator("lexical_similarity", metric="rouge2")(bundle).raw
    np.testing.assert_allclose(-raw, LMPG["LexicalSimilarity_rouge2"], rtol=0, atol=1e-6)
    assert np.any(raw > 0) and np.any(raw == 0)  # some pairs share a bigram, some do not
