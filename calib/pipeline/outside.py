"""Generations made outside calib (vLLM, an API, another paper's dump) read from a JSONL or Parquet file
(docs/generations.md).

One JSON object per line (or Parquet row) and question: `id`, `question`, `answers` (gold), optional `open_ended`, `category`,
`context`, `metadata` (grading hints, e.g. {"grader": "numeric"}), `prompt`, then `greedy` (one answer) and
`samples` (K answers). An answer is a plain string, an OpenAI-style choice (legacy completions: `text` +
`logprobs.{tokens, token_logprobs, top_logprobs}`; chat: `message.content` + `logprobs.content[j].{token, logprob,
top_logprobs}`), or a whole response whose `choices` are the answers. Tokens written `token_id:N` (vLLM's
--return-tokens-as-token-ids) are token ids. calib extensions: `logprobs.token_ids` and `logprobs.entropies`.
Optional precomputed statistics, used instead of computing them: `similarity` ([K+1, K+1] over [greedy, samples],
with optional `equivalent`), `p_true` (P(True) of the greedy answer) and `token_relevance` (SAR's relevance of each
token of [greedy, sample 1..K]).
Every bad row is one CalibError naming the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calib.decode.types import Generations
from calib.errors import CalibError
from calib.tasks.base import Example
from calib.tasks.jsonl import _answers, _check_text, _id_value, _records

NO_MODEL = "none"  # model.name when no model is configured: only estimators that need none run


@dataclass
class Answer:
    text: str
    tokens: list[str] | None = None  # None: the file gives no token statistics for this answer
    ids: list[int] | None = None
    logprobs: list[float] | None = None
    top: list[dict[str, float]] | None = None
    entropies: list[float] | None = None
    stop_reason: str = "stop"


@dataclass
class OutsideGenerations:
    """A generations file read into what the runner needs: questions, greedy answers [N, 1], samples [N, K]."""

    path: Path
    examples: list[Example]
    greedy: Generations
    samples: Generations | None
    has_token_stats: bool  # every answer has token log-probs
    has_token_ids: bool  # every token is a real token id (decode_fn of a configured model can read them)
    similarity: np.ndarray | None = None  # [N, K+1, K+1] over [greedy, sample 1..K], when every row gives one
    equivalent: np.ndarray | None = None  # [N, K+1, K+1] bool
    p_true: np.ndarray | None = None  # [N] P(True) of the greedy answer, when every row gives one
    token_relevance: list[list[np.ndarray]] | None = (
        None  # [N][K+1] per-token relevance over [greedy, samples]
    )

    @property
    def num_samples(self) -> int:
        return 0 if self.samples is None else self.samples.num_samples


def _fail(where: str, field: str, problem: str) -> CalibError:
    return CalibError(f"{where}: field {field!r} {problem}; see docs/generations.md for the format")


def _number(where: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise _fail(where, field, f"holds {value!r}, not a number")
    return float(value)


def _numbers(where: str, field: str, values: Any, n: int) -> list[float]:
    if not isinstance(values, list) or len(values) != n:
        raise _fail(where, field, f"must be a list of {n} numbers (one per token)")
    return [_number(where, f"{field}[{j}]", v) for j, v in enumerate(values)]


def _top_dict(where: str, field: str, value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if isinstance(value, list):  # chat API: [{token, logprob}, ...]
        if not all(isinstance(t, dict) and "token" in t and "logprob" in t for t in value):
            raise _fail(where, field, "must be a list of {token, logprob} objects")
        value = {str(t["token"]): t["logprob"] for t in value}
    if not isinstance(value, dict):
        raise _fail(where, field, "must map tokens to log-probs")
    top = {str(k): _number(where, f"{field}[{k!r}]", v) for k, v in value.items()}
    return dict(sorted(top.items(), key=lambda kv: -kv[1]))  # most likely first, whatever order the file kept


def _choice(where: str, field: str, value: Any) -> Answer:
    """One answer: a string, a legacy completion choice or a chat choice."""
    if isinstance(value, str):
        return Answer(value)
    if not isinstance(value, dict):
        raise _fail(where, field, f"must be an answer string or a choice object, not {type(value).__name__}")
    if isinstance(value.get("message"), dict):
        text = value["message"].get("content")
    else:
        text = value.get("text")
    if not isinstance(text, str):
        raise _fail(where, field, "has no answer text (`text`, or `message.content` for chat)")
    _check_text(where, field, text)
    reason = str(value.get("finish_reason") or value.get("stop_reason") or "stop")
    lp = value.get("logprobs")
    if lp is None:
        return Answer(text, stop_reason=reason)
    if not isinstance(lp, dict):
        raise _fail(where, f"{field}.logprobs", "must be an object")
    if "content" in lp:  # chat API
        content = lp["content"]
        if not isinstance(content, list) or not all(isinstance(c, dict) for c in content):
            raise _fail(where, f"{field}.logprobs.content", "must be a list of {token, logprob} objects")
        for j, c in enumerate(content):
            if "token" not in c or "logprob" not in c:
                raise _fail(where, f"{field}.logprobs.content[{j}]", "needs `token` and `logprob`")
        tokens = [str(c["token"]) for c in content]
        logprobs = [c["logprob"] for c in content]
        tops = [c.get("top_logprobs") for c in content]
    else:
        tokens, logprobs, tops = lp.get("tokens"), lp.get("token_logprobs"), lp.get("top_logprobs")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise _fail(where, f"{field}.logprobs.tokens", "must be a list of token strings")
    n = len(tokens)
    for t in tokens:
        _check_text(where, f"{field}.logprobs.tokens", t)
    answer = Answer(text, tokens, None, _numbers(where, f"{field}.logprobs.token_logprobs", logprobs, n))
    answer.stop_reason = reason
    if tops is not None and not (isinstance(tops, list) and all(t is None for t in tops)):
        if not isinstance(tops, list) or len(tops) != n:
            raise _fail(
                where, f"{field}.logprobs.top_logprobs", f"must be a list of {n} entries (one per token)"
            )
        answer.top = [_top_dict(where, f"{field}.logprobs.top_logprobs[{j}]", t) for j, t in enumerate(tops)]
    if lp.get("entropies") is not None:
        answer.entropies = _numbers(where, f"{field}.logprobs.entropies", lp["entropies"], n)
    if lp.get("token_ids") is not None:
        ids = lp["token_ids"]
        if not isinstance(ids, list) or len(ids) != n or not all(type(i) is int for i in ids):
            raise _fail(where, f"{field}.logprobs.token_ids", f"must be a list of {n} integers")
        answer.ids = ids
    elif all(t.startswith("token_id:") and t[9:].isdigit() for t in tokens):
        answer.ids = [int(t[9:]) for t in tokens]
    return answer


def _answers_of(where: str, field: str, value: Any) -> list[Answer]:
    """A string, a choice, a response with `choices`, or a list of any of them."""
    if isinstance(value, dict) and "choices" in value:
        if not isinstance(value["choices"], list):
            raise _fail(where, f"{field}.choices", "must be a list")
        return [_choice(where, f"{field}.choices[{i}]", c) for i, c in enumerate(value["choices"])]
    if isinstance(value, list):
        return [a for i, v in enumerate(value) for a in _answers_of(where, f"{field}[{i}]", v)]
    return [_choice(where, field, value)]


def _entropy_from_top(top: dict[str, float]) -> float:
    """A lower bound on the token's entropy from its top-k log-probs (the rest of the mass as one outcome)."""
    if not top:
        return float("nan")
    p = np.exp(np.asarray(list(top.values()), dtype=np.float64))
    rest = max(0.0, 1.0 - float(p.sum()))
    terms = [-x * math.log(x) for x in [*p.tolist(), rest] if x > 0]
    return float(sum(terms))


def _example(where: str, record: dict, number: int, stem: str) -> Example:
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _fail(where, "question", "is missing or empty; every row needs the question text")
    if "answers" not in record:
        raise _fail(where, "answers", "is missing: calib grades against gold answers; add them to every row")
    gold = _answers(record["answers"], None)
    if not gold:
        raise _fail(where, "answers", "holds no answers; give at least one gold answer")
    ex_id = _id_value(where, "id", record["id"]) if "id" in record else f"{stem}/{number}"
    meta = record.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _fail(where, "metadata", 'must be an object, e.g. {"grader": "numeric"}')
    for column, value in (("id", ex_id), ("question", question), ("answers", gold)):
        _check_text(where, column, value)
    return Example(
        id=ex_id,
        question=question.strip(),
        answers=tuple(gold),
        open_ended=bool(record.get("open_ended", False)),
        category=str(record.get("category") or stem),
        context=str(record.get("context") or ""),
        metadata=meta,
    )


def _parquet_records(file: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a Parquet file as the same records a JSONL line gives: nested columns (lists, structs, maps) become
    lists and objects, and null fields are left out (as if absent)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise CalibError(f"{file}: not a readable Parquet file ({err}); see docs/generations.md") from None
    for number, row in enumerate(table.to_pylist(maps_as_pydicts="strict"), start=1):
        yield f"{file} row {number}", _drop_nulls(row)


def _drop_nulls(value: Any) -> Any:
    """Null object fields removed at every depth: Parquet gives every row of a struct column all the fields any row
    has (e.g. the union of the tokens of `top_logprobs` objects), the missing ones as null."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _matrix(where: str, field: str, value: Any, m: int, kind: type) -> np.ndarray:
    """An [m, m] matrix of numbers (kind float) or booleans (kind bool) given as a list of rows."""
    if (
        not isinstance(value, list)
        or len(value) != m
        or not all(isinstance(r, list) and len(r) == m for r in value)
    ):
        raise _fail(where, field, f"must be a {m} x {m} list of rows over [greedy, sample 1..{m - 1}]")
    if kind is bool:
        if not all(isinstance(x, bool) for r in value for x in r):
            raise _fail(where, field, "must hold true/false values")
        return np.asarray(value, dtype=bool)
    out = np.asarray(
        [[_number(where, f"{field}[{i}][{j}]", x) for j, x in enumerate(r)] for i, r in enumerate(value)]
    )
    if not (np.all((out >= 0) & (out <= 1)) and np.allclose(np.diag(out), 1)):
        raise _fail(where, field, "must hold similarities in [0, 1] with a diagonal of 1")
    return out


def _precomputed(
    where: str, record: dict, m: int
) -> tuple[np.ndarray | None, np.ndarray | None, float | None]:
    """(similarity, equivalent, p_true) of one row; each None when the row does not give it."""
    sim = _matrix(where, "similarity", record["similarity"], m, float) if "similarity" in record else None
    eq = None
    if "equivalent" in record:
        if sim is None:
            raise _fail(where, "equivalent", "needs `similarity` beside it")
        eq = _matrix(where, "equivalent", record["equivalent"], m, bool)
        if not (np.array_equal(eq, eq.T) and np.diag(eq).all()):
            raise _fail(where, "equivalent", "must be symmetric with a diagonal of true")
    elif sim is not None:
        eq = (sim >= EQUIVALENT_AT) & (sim.T >= EQUIVALENT_AT)
    p_true = None
    if "p_true" in record:
        p_true = _number(where, "p_true", record["p_true"])
        if not 0.0 <= p_true <= 1.0:
            raise _fail(where, "p_true", f"holds {p_true}, not a probability in [0, 1]")
    return sim, eq, p_true


def _relevance(where: str, record: dict, answers: list[Answer]) -> list[np.ndarray] | None:
    """SAR's token relevance of one row: one list of numbers >= 0 per answer of [greedy, sample 1..K], one number
    per token of that answer; None when the row does not give it."""
    if "token_relevance" not in record:
        return None
    value = record["token_relevance"]
    if not isinstance(value, list) or len(value) != len(answers):
        raise _fail(
            where,
            "token_relevance",
            f"must be a list of {len(answers)} lists over [greedy, sample 1..{len(answers) - 1}]",
        )
    out = []
    for j, (answer, row) in enumerate(zip(answers, value)):
        if answer.logprobs is None:
            raise _fail(where, f"token_relevance[{j}]", "needs that answer's tokens and their log-probs")
        numbers = np.asarray(_numbers(where, f"token_relevance[{j}]", row, len(answer.logprobs)))
        if not np.all(np.isfinite(numbers) & (numbers >= 0)):
            raise _fail(where, f"token_relevance[{j}]", "must hold finite numbers >= 0 (1 - similarity)")
        out.append(numbers)
    return out


EQUIVALENT_AT = (
    0.5  # without `equivalent`, two answers are equivalent when their similarity is >= this both ways
)


def _all_or_none(file: Path, field: str, values: list) -> list | None:
    given = [v is not None for v in values]
    if any(given) and not all(given):
        first = given.index(False) if given[0] else given.index(True)
        raise CalibError(
            f"{file}: field {field!r} is given for some questions but not for question {first + 1}; give it for "
            "every question or for none (see docs/generations.md)"
        )
    return values if all(given) else None


def read_generations_file(path: str | Path) -> OutsideGenerations:
    """Questions, greedy answers and samples from a generations JSONL or Parquet file (docs/generations.md)."""
    file = Path(path)
    if not file.is_file():
        raise CalibError(
            f"generations file {str(file)!r} not found; set generations.path to an existing .jsonl or .parquet"
        )
    parquet = file.suffix.lower() in (".parquet", ".pq")
    records = _parquet_records(file) if parquet else _records(file, "jsonl")
    examples, prompts, greedy, samples, seen, extra, relevance = [], [], [], [], {}, [], []
    for where, record in records:
        ex = _example(where, record, len(examples), file.stem)
        if ex.id in seen:
            raise _fail(where, "id", f"repeats {ex.id!r} (first at {seen[ex.id]}); ids must be unique")
        seen[ex.id] = where.removeprefix(f"{file} ")
        if "greedy" not in record:
            raise _fail(
                where, "greedy", "is missing: give the greedy (temperature 0) answer of every question"
            )
        g = _answers_of(where, "greedy", record["greedy"])
        if len(g) != 1:
            raise _fail(where, "greedy", f"holds {len(g)} answers; give exactly one")
        s = _answers_of(where, "samples", record["samples"]) if record.get("samples") is not None else []
        if samples and len(s) != len(samples[0]):
            raise _fail(
                where,
                "samples",
                f"holds {len(s)} answers but line 1 has {len(samples[0])}; give every "
                "question the same number of samples",
            )
        prompt = record.get("prompt", ex.question)
        if not isinstance(prompt, str):
            raise _fail(where, "prompt", "must be a string")
        examples.append(ex)
        prompts.append(prompt)
        greedy.append(g)
        samples.append(s)
        extra.append(_precomputed(where, record, 1 + len(s)))
        relevance.append(_relevance(where, record, [*g, *s]))
    if not examples:
        raise CalibError(f"{file}: no questions in the generations file")
    similarity = _all_or_none(file, "similarity", [e[0] for e in extra])
    if similarity is not None and not samples[0]:
        raise CalibError(
            f"{file}: field 'similarity' needs samples; give K >= 2 samples per question or drop it"
        )
    p_true = _all_or_none(file, "p_true", [e[2] for e in extra])
    token_relevance = _all_or_none(file, "token_relevance", relevance)
    every = [a for row in (*greedy, *samples) for a in row]
    stats = all(a.logprobs is not None for a in every)
    ids = stats and all(a.ids is not None for a in every)
    vocab: dict[str, int] = {}  # token strings -> made-up ids when the file gives none
    build = lambda rows: _generations(prompts, rows, stats, ids, vocab)  # noqa: E731
    return OutsideGenerations(
        file,
        examples,
        build(greedy),
        build(samples) if samples[0] else None,
        stats,
        ids,
        similarity=None if similarity is None else np.stack(similarity),
        equivalent=None if similarity is None else np.stack([e[1] for e in extra]),
        p_true=None if p_true is None else np.asarray(p_true, dtype=np.float64),
        token_relevance=token_relevance,
    )


def _generations(prompts, rows: list[list[Answer]], stats: bool, real_ids: bool, vocab: dict) -> Generations:
    def tid(token: str) -> int:
        if token.startswith("token_id:") and token[9:].isdigit():
            return int(token[9:])
        return vocab.setdefault(token, len(vocab))

    def arrays(a: Answer) -> dict[str, np.ndarray]:
        if not stats:
            empty = np.zeros(0, np.float32)
            return dict(
                ids=np.zeros(0, np.int32),
                lp=empty,
                ent=empty,
                tids=np.zeros((0, 0), np.int32),
                tlp=np.zeros((0, 0), np.float32),
            )
        ids = a.ids if real_ids else [tid(t) for t in a.tokens]
        top = a.top or [{} for _ in a.tokens]
        k = max((len(t) for t in top), default=0)
        tids = np.full((len(top), k), -1, np.int32)
        tlp = np.full((len(top), k), -np.inf, np.float32)
        for j, t in enumerate(top):
            tids[j, : len(t)] = [tid(x) for x in t]
            tlp[j, : len(t)] = list(t.values())
        ent = a.entropies if a.entropies is not None else [_entropy_from_top(t) for t in top]
        return dict(
            ids=np.asarray(ids, np.int32),
            lp=np.asarray(a.logprobs, np.float32),
            ent=np.asarray(ent, np.float32),
            tids=tids,
            tlp=tlp,
        )

    built = [[arrays(a) for a in row] for row in rows]
    pick = lambda name: [[b[name] for b in row] for row in built]  # noqa: E731
    return Generations(
        prompts=list(prompts),
        texts=[[a.text for a in row] for row in rows],
        token_ids=pick("ids"),
        token_logprobs=pick("lp"),
        sample_logprobs=[[x.copy() for x in row] for row in pick("lp")],
        token_entropies=pick("ent"),
        top_ids=pick("tids"),
        top_logprobs=pick("tlp"),
        stop_reasons=[[a.stop_reason for a in row] for row in rows],
        meta={"source": "file"},
    )


# ---- in a run ---------------------------------------------------------------------------------------------------
def validate_outside(cfg: Any) -> None:
    """generations.path and model.name=none: checked with the rest of the config, before anything is written."""
    path = cfg.generations.path
    if path is None:
        raise CalibError(
            "model.name='none' is not allowed without generations: set generations.path=FILE (answers made "
            "outside calib) or name a model"
        )
    if not Path(path).expanduser().is_file():
        raise CalibError(f"generations.path={path!r} is not allowed: the file does not exist; check the path")
    if cfg.study.name is not None:
        raise CalibError(
            f"generations.path with study.name={cfg.study.name!r} is not allowed: studies generate their own "
            "answers; drop one of them"
        )
    if cfg.model.name == NO_MODEL and cfg.estimators.semantic == "judge":
        raise CalibError(
            "estimators.semantic='judge' is not allowed with model.name=none: the judge is the model; use "
            "exact, embedding or nli, or name a model"
        )


def file_key(path: str | Path, model_digest: str, dtype: str) -> tuple[str, dict]:
    """(key, inputs) standing in for the generate stage's: the file's content hash, this reader's code and the model
    that makes the extra calls (none: "none"), so the grade / estimate / evaluate artifacts of a file are reused
    until the file, how it is read or the model changes."""
    import hashlib

    from calib.fingerprint import stage_fingerprint
    from calib.pipeline.store import artifact_key

    digest = hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()
    inputs = {"file_sha256": digest, "model_digest": model_digest, "dtype": dtype}
    code = stage_fingerprint(modules=["calib.pipeline.outside"])
    return artifact_key("generate", code, inputs), {**inputs, "file": str(path), "code": code}


def needs_for(outside: OutsideGenerations, has_model: bool) -> frozenset:
    """What a run from this file can feed: no hidden states or revise passes; model calls only with a model, and
    the tokenizer's decode only when the file gives real token ids."""
    from calib.estimators import Need, available_needs

    needs = available_needs(
        num_samples=outside.num_samples,
        has_model=has_model,
        has_questions=True,
        has_token_stats=outside.has_token_stats,
        has_hidden=False,
    )
    if outside.p_true is not None:
        needs |= {Need.P_TRUE}
    if not outside.has_token_ids:
        needs -= {Need.DECODE}
    if outside.token_relevance is not None and outside.has_token_stats:
        needs |= {Need.DECODE}  # SAR decodes tokens only to compute relevance, which the file gives
    return needs


class NoModel:
    """Stands in for the model in artifact keys when model.name=none (no model calls are made)."""

    digest = NO_MODEL


def fit_bundle(lm: Any, outside: OutsideGenerations | None, *args: Any, **kwargs: Any) -> Any:
    """stages.make_bundle, without the tokenizer's decode when the file's tokens are not the model's token ids."""
    from calib.pipeline import stages

    bundle = stages.make_bundle(lm, *args, **kwargs)
    if outside is not None and not outside.has_token_ids:
        bundle.decode_fn = None
    if outside is not None:
        fill_precomputed(bundle, outside)
    return bundle


def fill_precomputed(bundle: Any, outside: OutsideGenerations) -> None:
    """The file's similarity matrices, P(True) values and token relevance stand in for the backend's and the
    model's."""
    from calib.semantic.base import Comparison

    if outside.similarity is not None:
        comparisons = [Comparison(s, e) for s, e in zip(outside.similarity, outside.equivalent)]
        bundle.fill_shared_statistics(comparisons=comparisons)
    if outside.p_true is not None:
        bundle.given_p_true = outside.p_true
    if outside.token_relevance is not None:
        given = {"greedy_token_relevance": [row[0] for row in outside.token_relevance]}
        if outside.samples is not None:
            given["sample_token_relevance"] = [row[1:] for row in outside.token_relevance]
        bundle.fill_shared_statistics(**given)


def run_generations(
    source: str | Path | list[dict],
    run_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    print_summary: bool = False,
) -> Any:
    """Grade, estimate, evaluate and report answers made outside calib: `source` is a generations JSONL file or its
    records (written to run_dir/generations.jsonl). overrides are `calib` overrides; without `model=...` or
    `model.name=...` no model is loaded and the estimators that need one are skipped."""
    from calib.pipeline.config import compose
    from calib.pipeline.run import run

    if not isinstance(source, str | Path):
        folder = Path(run_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "generations.jsonl"
        path.write_text("".join(json.dumps(record) + "\n" for record in source), encoding="utf-8")
        source = path
    model = (
        [] if any(o.startswith(("model=", "model.name=")) for o in overrides) else [f"model.name={NO_MODEL}"]
    )
    cfg = compose([*model, f"generations.path={Path(source)}", *overrides])
    return run(cfg, run_dir, print_summary=print_summary)
