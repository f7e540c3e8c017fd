"""The runner's speed work changes no result: each shortcut against the plain computation it replaces (issue 24)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from calib.estimators import Bundle, get_estimator
from calib.estimators.synthetic import generations_from
from calib.semantic.embedding import EmbeddingSimilarity, default_model_path

WORDS = ["Paris", "is", "the", "capital", "of", "France", "Lyon", "maybe", "."]


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


class CountingEncoder:
    """The real MiniLM, recording how many texts each call encodes."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.tokenizer, self.max_seq_length = model.tokenizer, model.max_seq_length

    def encode(self, texts, **kwargs):
        self.calls.append(list(texts))
        return self.model.encode(texts, **kwargs)


@pytest.fixture(scope="module")
def minilm():
    sentence_transformers = pytest.importorskip("sentence_transformers")
    return sentence_transformers.SentenceTransformer(
        default_model_path(), device="cpu", local_files_only=True
    )


def _sar_bundle(semantic: EmbeddingSimilarity) -> Bundle:
    """Two questions; the greedy answer of each is also one of its samples, as in most real runs."""
    samples = [
        ["Paris is the capital", "Paris .", "Lyon maybe", "Paris is the capital"],
        ["France", "Lyon .", "maybe Paris", "France"],
    ]
    ids = [[[WORDS.index(w) for w in s.split()] for s in row] for row in samples]
    rng = np.random.default_rng(0)
    logprobs = [[(-rng.random(len(x))).tolist() for x in row] for row in ids]
    greedy = generations_from(
        [[row[0]] for row in samples], [[lp[0]] for lp in logprobs], token_ids=[[r[0]] for r in ids]
    )
    sampled = generations_from(samples, logprobs, token_ids=ids)
    examples = [Example("What is the capital of France?"), Example("Which country is Paris in?")]
    decode = lambda t: " ".join(WORDS[i] for i in t)  # noqa: E731
    return Bundle(greedy, sampled, examples, semantic=semantic, decode_fn=decode)


def test_embedding_encodes_each_distinct_text_of_a_call_once(minilm):
    counting = CountingEncoder(minilm)
    backend = EmbeddingSimilarity(encoder=counting)
    texts = ["What is Paris?", "Lyon", "Paris", "Lyon", "What is Paris?"]
    vectors = backend.encode(texts)
    assert counting.calls == [["What is Paris?", "Lyon", "Paris"]]
    direct = minilm.encode(
        texts, normalize_embeddings=True, convert_to_numpy=True
    )  # sentence-transformers alone
    np.testing.assert_allclose(vectors, direct, atol=1e-6)


def test_sar_with_deduplicated_encoding_equals_every_pair_encoded_alone(minilm):
    counting = CountingEncoder(minilm)
    bundle = _sar_bundle(EmbeddingSimilarity(encoder=counting))
    relevance = bundle.sample_token_relevance
    # each (question, answer) is planned once: the repeated sample "Paris is the capital" adds no texts
    assert sum(len(set(c)) for c in counting.calls) == sum(len(c) for c in counting.calls)
    q = ["What is the capital of France?", "Which country is Paris in?"]
    for i, row in enumerate(bundle.samples.texts):
        for k, answer in enumerate(row):
            words = answer.split()
            full = minilm.encode(f"{q[i]} {answer}", normalize_embeddings=True)
            dropped = minilm.encode(
                [f"{q[i]} {' '.join(words[:t] + words[t + 1 :])}" for t in range(len(words))],
                normalize_embeddings=True,
            )
            np.testing.assert_allclose(relevance[i][k], 1.0 - np.clip(dropped @ full, 0, 1), atol=1e-5)
    token_sar = get_estimator("token_sar")(bundle).raw
    lp, r = bundle.greedy_logprobs[0], np.clip(bundle.greedy_token_relevance[0], 0, None)
    np.testing.assert_allclose(token_sar[0], np.sum(-lp * r / r.sum()), rtol=1e-9)


def test_batches_of_similar_token_counts_give_the_same_vectors_with_less_padding(minilm):
    counting = CountingEncoder(minilm)
    backend = EmbeddingSimilarity(encoder=counting, batch_size=4, token_sorted_batches=True)
    rng = np.random.default_rng(1)
    texts = list(dict.fromkeys(" ".join(rng.choice(WORDS, rng.integers(1, 12))) for _ in range(40)))
    vectors = backend.encode(texts)
    direct = minilm.encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(vectors, direct, atol=1e-6)
    length = {t: len(ids) for t, ids in zip(texts, minilm.tokenizer(texts)["input_ids"])}
    assert sorted(t for call in counting.calls for t in call) == sorted(texts) and all(
        len(c) <= 4 for c in counting.calls
    )
    lengths = [length[t] for call in counting.calls for t in call]
    assert lengths == sorted(lengths)  # batches in token order
    padded = lambda batches: sum(max(length[t] for t in b) * len(b) for b in batches)  # noqa: E731
    by_characters = sorted(texts, key=len, reverse=True)  # sentence-transformers' own order
    assert padded(counting.calls) <= padded([by_characters[i : i + 4] for i in range(0, len(texts), 4)])
