"""Equivalence backends: exact, embedding (offline MiniLM), NLI (a tiny random cross-encoder built here), LLM judge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from calib.errors import CalibError
from calib.semantic import (
    EmbeddingSimilarity,
    ExactMatch,
    LLMJudge,
    NLIEquivalence,
    binary_choice_probability,
    get_backend,
    normalize_answer,
)

ANSWERS = ["paris", "the capital of france", "lyon", "a big city", "paris"]
WORDS = ["paris", "lyon", "france", "capital", "city", "is", "the", "of", "a", "big", "small", "q"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  PARIS. ", "paris"),
        ("an apple, a pear", "apple pear"),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_compares_normalised_strings():
    (c,) = ExactMatch().compare(["q"], [["Paris", "paris.", "The Paris", "Lyon"]])
    assert c.equivalent.tolist() == [
        [True, True, True, False],
        [True, True, True, False],
        [True, True, True, False],
        [False, False, False, True],
    ]
    np.testing.assert_array_equal(c.similarity, c.equivalent.astype(np.float32))


@pytest.fixture(scope="module")
def minilm():
    return EmbeddingSimilarity()


def test_embedding_similarity_is_the_cosine_and_threshold_decides(minilm):
    answers = ["Paris", "paris", "Paris, France", "Berlin"]
    (c,) = minilm.compare(["capital of France?"], [answers])
    e = minilm.encoder.encode(answers)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    np.testing.assert_allclose(c.similarity, np.clip(e @ e.T, 0, 1), atol=1e-5)
    assert c.equivalent[0, 1] and c.equivalent[0, 2] and not c.equivalent[0, 3]
    np.testing.assert_allclose(
        minilm.pair_similarity(["Paris"], ["Berlin"]), [np.clip(e[0] @ e[3], 0, 1)], atol=1e-5
    )


def test_embedding_encodes_each_distinct_string_once(minilm):
    seen = []

    class Spy:
        def encode(self, texts, **kw):
            seen.extend(texts)
            return minilm.encoder.encode(texts, **kw)

    backend = EmbeddingSimilarity(encoder=Spy())
    comparisons = backend.compare(["q1", "q2"], [["Paris", "Paris", "Lyon"], ["Lyon", "Nice", "Paris"]])
    assert sorted(seen) == ["Lyon", "Nice", "Paris"]
    assert comparisons[0].equivalent[0, 1] and comparisons[0].similarity[0, 1] == pytest.approx(1.0)
    with pytest.raises(CalibError, match=r"threshold 1\.5"):
        EmbeddingSimilarity(threshold=1.5)


def test_a_preloading_encoder_is_loaded_once_and_shared(monkeypatch):
    """preload() loads in a thread; a use that comes while it runs waits for that load instead of starting another."""
    import threading

    import sentence_transformers

    started, release, built = threading.Event(), threading.Event(), []

    class SlowEncoder:
        def __init__(self, path, device, **options):
            started.set()
            release.wait(5)
            built.append(self)

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", SlowEncoder)
    backend = EmbeddingSimilarity(model="some/folder")
    backend.preload()
    assert started.wait(5)  # the background load is under way
    threading.Timer(0.2, release.set).start()
    encoder = backend.encoder  # waits for the background load
    for thread in threading.enumerate():
        if thread.name == "calib-encoder-load":
            thread.join(5)
    assert len(built) == 1 and encoder is built[0]
    backend.preload()  # already loaded: nothing more
    assert len(built) == 1


def test_a_failed_preload_surfaces_as_the_usual_error_on_use(tmp_path):
    backend = EmbeddingSimilarity(model=str(tmp_path / "missing"))
    backend.preload()
    with pytest.raises(CalibError, match="cannot load sentence-transformers model"):
        _ = backend.encoder


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A randomly initialised 3-label BERT cross-encoder with its own word-level vocabulary, saved to disk."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-nli")
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    labels = {0: "entailment", 1: "neutral", 2: "contradiction"}  # not the default order, on purpose
    config = BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    model = BertForSequenceClassification(config).eval()
    distinct = list(dict.fromkeys(ANSWERS))
    pairs = [(a, b) for a in distinct for b in distinct if a != b]
    with (
        torch.no_grad()
    ):  # centre and scale the random classifier so that all three labels occur on these pairs
        batch = tokenizer([a for a, _ in pairs], [b for _, b in pairs], return_tensors="pt", padding=True)
        logits = model(**batch).logits
        scale = 3.0 / logits.std(0)
        model.classifier.bias.sub_(logits.mean(0)).mul_(scale)
        model.classifier.weight.mul_(scale[:, None])
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def _reference_probabilities(model, tokenizer, premises, hypotheses):
    batch = tokenizer(premises, hypotheses, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits.numpy().astype(np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[:, [2, 0, 1]]  # -> (contradiction, entailment, neutral)


@pytest.mark.parametrize("strict", [False, True])
def test_nli_backend_matches_the_model_run_directly(tiny_cross_encoder, strict):
    folder, model, tokenizer = tiny_cross_encoder
    backend = NLIEquivalence(str(folder), strict=strict, label_order=None)  # read from the model's id2label
    assert backend.label_order == ("entailment", "neutral", "contradiction")
    (c,) = backend.compare(["q"], [ANSWERS])
    distinct = ANSWERS[:4]
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    p = _reference_probabilities(
        model, tokenizer, [distinct[i] for i, _ in pairs], [distinct[j] for _, j in pairs]
    )
    label = {pair: int(np.argmax(row)) for pair, row in zip(pairs, p)}  # 0 contra, 1 entail, 2 neutral
    assert len(set(label.values())) >= 2, "the fixture should produce more than one label"
    for n, (i, j) in enumerate(pairs):
        assert c.similarity[i, j] == pytest.approx(p[n, 1], abs=1e-5)
        forward, backward = label[(i, j)], label[(j, i)]
        if strict:
            expected = forward == 1 and backward == 1
        else:
            expected = 0 not in (forward, backward) and (forward, backward) != (2, 2)
        assert c.equivalent[i, j] == expected
    assert c.equivalent[0, 4] and c.similarity[0, 4] == 1.0  # identical strings
    np.testing.assert_array_equal(c.equivalent, c.equivalent.T)


def test_nli_contra_affinity_and_label_checks(tiny_cross_encoder):
    folder, model, tokenizer = tiny_cross_encoder
    backend = NLIEquivalence(
        str(folder), affinity="contra", label_order=("entailment", "neutral", "contradiction")
    )
    (c,) = backend.compare(["q"], [["paris", "lyon"]])
    p = _reference_probabilities(model, tokenizer, ["paris"], ["lyon"])
    assert c.similarity[0, 1] == pytest.approx(1 - p[0, 0], rel=1e-3)
    with pytest.raises(CalibError, match="must name each"):
        NLIEquivalence(str(folder), label_order=("entailment", "neutral", "neutral"))
    with pytest.raises(CalibError, match="no model given"):
        NLIEquivalence()
    with pytest.raises(CalibError, match="cannot load CrossEncoder"):
        _ = NLIEquivalence(str(folder / "missing")).cross_encoder


def test_llm_judge_asks_both_orders_and_needs_both_to_agree():
    p_yes = {
        ("Paris", "paris city"): 0.9,
        ("paris city", "Paris"): 0.8,
        ("Paris", "Lyon"): 0.7,
        ("Lyon", "Paris"): 0.2,
    }
    p_yes |= {("paris city", "Lyon"): 0.1, ("Lyon", "paris city"): 0.1}
    prompts_seen = []

    def score_fn(prompts, continuations):
        out = []
        for prompt, cont in zip(prompts, continuations):
            prompts_seen.append(prompt)
            first = prompt.split("Answer 1: ")[1].split("\n")[0]
            second = prompt.split("Answer 2: ")[1].split("\n")[0]
            p = p_yes[(first, second)]
            out.append(np.array([math.log(p if cont == " Yes" else 1 - p)]))
        return out

    (c,) = LLMJudge(score_fn).compare(["Capital of France?"], [["Paris", "paris city", "Lyon", "Paris"]])
    assert c.similarity[0, 1] == pytest.approx(0.9) and c.similarity[1, 0] == pytest.approx(0.8)
    assert c.similarity[0, 2] == pytest.approx(0.7) and c.similarity[2, 0] == pytest.approx(0.2)
    assert c.equivalent[0, 1] and not c.equivalent[0, 2] and c.equivalent[0, 3]
    assert len(prompts_seen) == 2 * 6  # 3 distinct answers -> 6 ordered pairs, two continuations each
    assert all("Question: Capital of France?" in p for p in prompts_seen)


def test_binary_choice_keeps_each_prompts_two_continuations_adjacent():
    """A scorer that works in chunks (the runner's takes 256 pairs) must see both continuations of a prompt in the
    same chunk, or it encodes the prompt twice. p(yes) is still p_yes / (p_yes + p_no) per prompt."""
    calls = []

    def score_fn(prompts, continuations):
        calls.append(list(zip(prompts, continuations)))
        return [np.array([math.log(0.2 if c == " Yes" else 0.6)]) for c in continuations]

    prompts = [f"prompt {i}" for i in range(5)]
    p = binary_choice_probability(score_fn, prompts, " Yes", " No", batch_size=3)
    np.testing.assert_allclose(p, 0.25)
    assert [len(c) for c in calls] == [6, 4]
    flat = [pair for call in calls for pair in call]
    assert flat == [(q, c) for q in prompts for c in (" Yes", " No")]


def test_get_backend_by_name():
    assert isinstance(get_backend("exact"), ExactMatch)
    assert get_backend("embedding", threshold=0.9).threshold == 0.9
    with pytest.raises(CalibError, match="unknown semantic backend 'fuzzy'"):
        get_backend("fuzzy")
