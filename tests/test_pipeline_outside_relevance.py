"""SAR's token relevance from a generations file (`token_relevance`, docs/generations.md): read the same from JSONL
and Parquet, used by token SAR, SAR and sentence SAR instead of the encoder (no model, no tokenizer), and bad rows
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib.errors import CalibError
from calib.estimators import Bundle, Need, get_estimator
from calib.pipeline import read_generations_file, run_generations
from calib.pipeline.outside import fill_precomputed, needs_for

N, K = 5, 4
SAR = ("token_sar", "sentence_sar", "sar")


def _answer(rng) -> dict:
    """A legacy completion choice of 1-4 word tokens (strings, not token ids: the file cannot be decoded)."""
    t = int(rng.integers(1, 5))
    tokens = [f" w{int(i)}" for i in rng.integers(0, 30, size=t)]
    lps = (-rng.gamma(1.5, 0.8, size=t)).tolist()
    return {"text": "".join(tokens), "logprobs": {"tokens": tokens, "token_logprobs": lps}}


def records(seed: int = 0, relevance: bool = True) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(N):
        answers = [_answer(rng) for _ in range(K + 1)]
        s = rng.uniform(0, 1, size=(K + 1, K + 1))
        np.fill_diagonal(s, 1.0)
        row = {
            "id": f"q{i}",
            "question": f"Question {i}?",
            "answers": [answers[0]["text"].strip()] if i % 2 else ["none"],
            "greedy": answers[0],
            "samples": answers[1:],
            "similarity": s.tolist(),
        }
        if relevance:
            row["token_relevance"] = [
                rng.uniform(0, 1, size=len(a["logprobs"]["tokens"])).tolist() for a in answers
            ]
        rows.append(row)
    return rows


def write(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def by_hand(rows: list[dict]) -> dict[str, np.ndarray]:
    """Duan et al.'s SAR as LM-Polygraph writes it, in numpy from the file's own numbers: tokenSAR
    Σ_t −ℓ_t R_t / Σ R_t; E_j = −log(p_j + Σ_{k≠j} g_jk p_k / 0.001) over the samples with g = ½(S + Sᵀ) and
    p = exp(Σ ℓ) (sentence SAR) or exp(−tokenSAR) (SAR), averaged over j."""
    out = {name: [] for name in SAR}
    for row in rows:
        answers = [row["greedy"], *row["samples"]]
        lps = [
            np.asarray(a["logprobs"]["token_logprobs"], dtype=np.float32).astype(np.float64) for a in answers
        ]
        rel = [np.asarray(r) for r in row["token_relevance"]]
        tsar = np.array([np.sum(-lp * r / r.sum()) for lp, r in zip(lps, rel)])
        s = np.asarray(row["similarity"])[1:, 1:]
        g = 0.5 * (s + s.T) * (1 - np.eye(K))
        out["token_sar"].append(tsar[0])
        for name, p in (("sentence_sar", np.exp([lp.sum() for lp in lps[1:]])), ("sar", np.exp(-tsar[1:]))):
            out[name].append(np.mean(-np.log(p + g @ p / 0.001)))
    return {k: np.asarray(v) for k, v in out.items()}


class Refuses:
    """The file's relevance and similarity must be used: any backend call is a failure."""

    name = "refuses"

    def compare(self, questions, answers):
        raise AssertionError("the backend compared answers although the file gives similarities")

    def pair_similarity(self, first, second):
        raise AssertionError("the backend scored token relevance although the file gives it")


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_file_relevance_drives_the_sar_family(tmp_path, suffix):
    rows = records()
    outside = read_generations_file(write(rows, tmp_path / f"g.{suffix}"))
    assert not outside.has_token_ids  # word tokens: no tokenizer could compute relevance for this file
    for got, row in zip(outside.token_relevance, rows):
        for a, b in zip(got, row["token_relevance"]):
            np.testing.assert_array_equal(a, b)
    available = needs_for(outside, has_model=False)
    for name in SAR:
        assert get_estimator(name).needs <= available, name
    bundle = Bundle(outside.greedy, outside.samples, outside.examples, semantic=Refuses())
    fill_precomputed(bundle, outside)
    want = by_hand(rows)
    for name in SAR:
        np.testing.assert_allclose(
            get_estimator(name)(bundle).raw, want[name], rtol=0, atol=1e-9, err_msg=name
        )


def test_without_relevance_or_token_ids_sar_cannot_run(tmp_path):
    outside = read_generations_file(write(records(relevance=False), tmp_path / "g.jsonl"))
    assert outside.token_relevance is None
    assert Need.DECODE not in needs_for(outside, has_model=True)


def test_a_run_reads_relevance_from_jsonl_and_parquet_alike(tmp_path):
    rows = records(seed=2)
    options = ["estimators.semantic=exact", f"estimators.names=[{','.join(SAR)}]", "metrics=quick"]
    options += ["report.figures=false", "progress=false"]
    tables = {}
    for suffix in ("jsonl", "parquet"):
        path = write(rows, tmp_path / f"g.{suffix}")
        result = run_generations(
            path, tmp_path / suffix, overrides=[*options, f"artifacts_dir={tmp_path / suffix}_a"]
        )
        tables[suffix] = result.metrics.sort_values(["group", "estimator", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(tables["jsonl"], tables["parquet"])
    assert set(SAR) <= set(tables["jsonl"]["estimator"])
    results = pd.read_parquet(
        tmp_path / "parquet" / "results.parquet"
    )  # no model: the file's relevance was used
    want = by_hand(rows)
    for name in SAR:
        got = results[results["estimator"] == name].sort_values("question_id")["raw"].to_numpy()
        np.testing.assert_allclose(got, want[name], rtol=0, atol=1e-9, err_msg=name)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r[1].update(token_relevance=r[1]["token_relevance"][:-1]),
            r"line 2: field 'token_relevance' must be a list of 5 lists",
        ),
        (
            lambda r: r[0]["token_relevance"][2].append(0.5),
            r"line 1: field 'token_relevance\[2\]' must be a list of \d+ numbers",
        ),
        (
            lambda r: r[3]["token_relevance"][0].__setitem__(0, -0.1),
            r"line 4: field 'token_relevance\[0\]' must hold finite numbers >= 0",
        ),
        (
            lambda r: r[2].pop("token_relevance"),
            r"'token_relevance' is given for some questions but not for question 3",
        ),
        (
            lambda r: r[0].update(greedy=r[0]["greedy"]["text"]),
            r"line 1: field 'token_relevance\[0\]' needs that answer's tokens",
        ),
    ],
)
def test_bad_relevance_is_a_one_line_error(tmp_path, edit, message):
    rows = records()
    edit(rows)
    with pytest.raises(CalibError, match=message):
        read_generations_file(write(rows, tmp_path / "g.jsonl"))
