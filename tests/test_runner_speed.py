"""The runner's speed work changes no result: each shortcut against the plain computation it replaces (issue 24)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from calib.errors import CalibError
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


def test_embedding_memo_encodes_each_text_once_per_run_and_returns_the_same_vectors(minilm):
    counting = CountingEncoder(minilm)
    backend = EmbeddingSimilarity(encoder=counting)
    first = ["What is Paris?", "Lyon", "Paris", "Lyon"]
    second = ["Paris", "Berlin", "What is Paris?"]
    a, b = backend.encode(first), backend.encode(second)
    assert counting.calls == [
        ["What is Paris?", "Lyon", "Paris"],
        ["Berlin"],
    ]  # only the new text the 2nd time
    direct = minilm.encode(
        second, normalize_embeddings=True, convert_to_numpy=True
    )  # sentence-transformers alone
    np.testing.assert_allclose(b, direct, atol=1e-6)
    np.testing.assert_array_equal(a[2], b[0])  # "Paris" is the kept vector
    np.testing.assert_array_equal(a[1], a[3])


def test_embedding_memo_is_bounded_and_can_be_off(minilm):
    counting = CountingEncoder(minilm)
    backend = EmbeddingSimilarity(encoder=counting, memo_size=2)
    backend.encode(["a", "b"])
    backend.encode(["c"])  # over the bound: the memo starts again with "c" only
    assert len(backend._memo) <= 2 and "c" in backend._memo
    off = EmbeddingSimilarity(encoder=CountingEncoder(minilm), memo_size=0)
    off.encode(["a"]), off.encode(["a"])
    assert len(off._encoder.calls) == 2 and not off._memo
    with pytest.raises(CalibError, match="memo_size"):
        EmbeddingSimilarity(memo_size=-1)


def test_sar_with_the_encoding_memo_equals_sar_without(minilm):
    with_memo = CountingEncoder(minilm)
    without = CountingEncoder(minilm)
    kept, plain = (
        _sar_bundle(EmbeddingSimilarity(encoder=with_memo)),
        _sar_bundle(EmbeddingSimilarity(encoder=without, memo_size=0)),
    )
    for name in ("token_sar", "sentence_sar", "sar"):
        np.testing.assert_allclose(
            get_estimator(name)(kept).raw, get_estimator(name)(plain).raw, rtol=1e-6, atol=1e-6
        )
    encoded = lambda enc: sum(len(set(c)) for c in enc.calls)  # noqa: E731
    assert encoded(with_memo) < encoded(without)  # the greedy answers' leave-one-out texts were reused
    # relevance by hand for one answer: 1 - cos(question + answer, question + answer without the token)
    q, answer = "What is the capital of France?", ["Paris", "is", "the", "capital"]
    full = minilm.encode(f"{q} {' '.join(answer)}", normalize_embeddings=True)
    dropped = minilm.encode(
        [f"{q} {' '.join(answer[:t] + answer[t + 1 :])}" for t in range(len(answer))],
        normalize_embeddings=True,
    )
    np.testing.assert_allclose(kept.greedy_token_relevance[0], 1.0 - np.clip(dropped @ full, 0, 1), atol=1e-5)
