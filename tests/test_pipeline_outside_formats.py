"""Bring your own generations in every accepted format: the same answers as JSONL and as Parquet, in the legacy
completions, chat and plain-text shapes, read into identical Generations; precomputed similarity matrices and P(True)
in the file are used instead of the backend and the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, get_estimator
from calib.pipeline import read_generations_file, run_generations
from calib.pipeline.outside import EQUIVALENT_AT, fill_precomputed, needs_for

N, K, VOCAB = 6, 3, 40


def _answer(rng, shape: str) -> object:
    """One answer of 1-4 tokens with its top-3 log-probs, as a legacy choice, a chat choice or plain text."""
    t = int(rng.integers(1, 5))
    ids = rng.integers(0, VOCAB, size=t).tolist()
    lps = (-rng.gamma(1.0, 0.7, size=t)).tolist()
    tops = [
        {
            f"token_id:{a}": float(b)
            for a, b in zip(rng.choice(VOCAB, 3, replace=False).tolist(), sorted(-rng.gamma(1, 1, 3)))
        }
        for _ in range(t)
    ]
    text = " ".join(f"w{i}" for i in ids)
    tokens = [f"token_id:{i}" for i in ids]
    entropies = rng.uniform(0.1, 2.0, size=t).tolist()
    if shape == "plain":
        return text
    if shape == "chat":
        content = [
            {"token": a, "logprob": b, "top_logprobs": [{"token": k, "logprob": v} for k, v in top.items()]}
            for a, b, top in zip(tokens, lps, tops)
        ]
        return {
            "message": {"role": "assistant", "content": text},
            "logprobs": {"content": content},
            "finish_reason": "stop",
        }
    logprobs = {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "entropies": entropies}
    return {"text": text, "logprobs": logprobs, "finish_reason": "length"}


def _similarity(rng) -> list[list[float]]:
    s = rng.uniform(0, 1, size=(K + 1, K + 1))
    np.fill_diagonal(s, 1.0)
    return s.tolist()


def records(shape: str, precomputed: bool = False, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N):
        greedy = _answer(rng, shape)
        row = {
            "id": f"q{i}",
            "question": f"Question {i}?",
            "answers": [f"w{i}", "other"],
            "open_ended": bool(i % 2),
            "greedy": greedy if shape == "plain" else {"choices": [greedy]},
            "samples": [_answer(rng, shape) for _ in range(K)],
        }
        if precomputed:
            row["similarity"] = _similarity(rng)
            row["p_true"] = float(rng.uniform())
        rows.append(row)
    return rows


def write(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


FIELDS = (
    "texts",
    "token_ids",
    "token_logprobs",
    "token_entropies",
    "top_ids",
    "top_logprobs",
    "stop_reasons",
)


def _same(a, b) -> None:
    assert a.prompts == b.prompts
    for name in FIELDS:
        for row_a, row_b in zip(getattr(a, name), getattr(b, name)):
            for x, y in zip(row_a, row_b):
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)


@pytest.mark.parametrize("shape", ["legacy", "chat", "plain"])
def test_jsonl_and_parquet_read_the_same(tmp_path, shape):
    rows = records(shape)
    from_jsonl = read_generations_file(write(rows, tmp_path / "g.jsonl"))
    from_parquet = read_generations_file(write(rows, tmp_path / "g.parquet"))
    assert from_jsonl.examples == from_parquet.examples and from_parquet.num_samples == K
    assert from_parquet.has_token_stats == (shape != "plain")
    assert from_parquet.has_token_ids == (shape != "plain")
    _same(from_jsonl.greedy, from_parquet.greedy)
    _same(from_jsonl.samples, from_parquet.samples)
    if shape != "plain":  # independent check of what was read: the first answer's tokens and log-probs
        first = rows[0]["greedy"]["choices"][0]
        if shape == "legacy":
            want_ids = [int(t[9:]) for t in first["logprobs"]["tokens"]]
            want_lp = first["logprobs"]["token_logprobs"]
            np.testing.assert_allclose(
                from_parquet.greedy.token_entropies[0][0], first["logprobs"]["entropies"], rtol=1e-6
            )
        else:
            want_ids = [int(c["token"][9:]) for c in first["logprobs"]["content"]]
            want_lp = [c["logprob"] for c in first["logprobs"]["content"]]
        np.testing.assert_array_equal(from_parquet.greedy.token_ids[0][0], want_ids)
        np.testing.assert_allclose(from_parquet.greedy.token_logprobs[0][0], want_lp, rtol=1e-6)
        top = from_parquet.greedy.top_logprobs[0][0]
        assert np.all(np.diff(top, axis=-1) <= 0)  # most likely first, whatever order the columns kept


def test_precomputed_similarity_and_p_true_replace_the_backend_and_the_model(tmp_path):
    rows = records("legacy", precomputed=True)
    outside = read_generations_file(write(rows, tmp_path / "g.parquet"))
    sim = np.asarray([r["similarity"] for r in rows])
    np.testing.assert_array_equal(outside.similarity, sim)
    np.testing.assert_array_equal(
        outside.equivalent, (sim >= EQUIVALENT_AT) & (np.swapaxes(sim, 1, 2) >= EQUIVALENT_AT)
    )
    assert "p_true" in {n.label for n in needs_for(outside, has_model=False)}

    class Refuses:  # the file's matrices must be used: a backend call is a failure
        name = "refuses"

        def compare(self, questions, answers):
            raise AssertionError("the backend was called although the file gives similarities")

    bundle = Bundle(outside.greedy, outside.samples, outside.examples, semantic=Refuses())
    fill_precomputed(bundle, outside)
    p = get_estimator("p_true")(bundle)
    np.testing.assert_array_equal(p.confidence, [r["p_true"] for r in rows])
    # Degree (Lin et al.) by hand on the samples' block of each given matrix: 1 − mean of W = ½(S + Sᵀ)
    w = (sim[:, 1:, 1:] + np.swapaxes(sim[:, 1:, 1:], 1, 2)) / 2
    np.testing.assert_allclose(get_estimator("degree")(bundle).raw, 1 - w.mean(axis=(1, 2)), atol=1e-12)
    # self-consistency reads the greedy row of `equivalent`
    want = ((sim[:, 0, 1:] >= 0.5) & (sim[:, 1:, 0] >= 0.5)).mean(1)
    np.testing.assert_allclose(get_estimator("self_consistency")(bundle).raw, want)


def test_a_run_from_parquet_equals_the_run_from_jsonl(tmp_path):
    rows = records("chat", precomputed=True, seed=3)
    options = [
        "estimators.semantic=exact",
        "estimators.names=[p_true,degree,msp,mean_token_entropy]",
        "metrics=quick",
    ]
    options += ["report.figures=false", "progress=false"]
    results = {}
    for suffix in ("jsonl", "parquet"):
        path = write(rows, tmp_path / f"g.{suffix}")
        result = run_generations(
            path, tmp_path / suffix, overrides=[*options, f"artifacts_dir={tmp_path / suffix}_a"]
        )
        results[suffix] = result
    a, b = (
        results[s].metrics.sort_values(["group", "estimator", "metric"]).reset_index(drop=True)
        for s in results
    )
    pd.testing.assert_frame_equal(a, b)
    assert {"p_true", "degree", "msp"} <= set(a["estimator"])  # P(True) ran without a model: from the file
    table = pd.read_parquet(tmp_path / "parquet" / "results.parquet")
    assert not table.empty


def test_partial_or_bad_precomputed_fields_are_one_line_errors(tmp_path):
    rows = records("plain", precomputed=True)
    del rows[2]["p_true"]
    with pytest.raises(CalibError, match=r"'p_true' is given for some questions but not for question 3"):
        read_generations_file(write(rows, tmp_path / "g.jsonl"))
    rows = records("plain", precomputed=True)
    rows[1]["similarity"][0][0] = 0.5
    with pytest.raises(
        CalibError, match=r"row 2: field 'similarity' must hold similarities in \[0, 1\] with a diag"
    ):
        read_generations_file(write(rows, tmp_path / "g.parquet"))
    rows = records("plain", precomputed=True)
    rows[0]["p_true"] = 1.5
    with pytest.raises(CalibError, match=r"line 1: field .p_true. holds 1\.5, not a probability"):
        read_generations_file(write(rows, tmp_path / "g.jsonl"))
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(CalibError, match="not a readable Parquet file"):
        read_generations_file(tmp_path / "broken.parquet")
