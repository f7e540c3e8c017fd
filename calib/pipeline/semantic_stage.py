"""The semantic stage and the model-call store: what the estimators of a run share, kept between runs.

Adding one estimator to a finished run should cost that estimator only. Two things the Bundle computes lazily are
expensive and deterministic, so they are stored:

- semantic statistics (`semantic/<key>-<part>/`): the backend's comparisons of [greedy, samples] per question with
  the clusters they give ("comparisons"), and SAR's token relevance ("greedy_token_relevance",
  "sample_token_relevance"); each part is its own artifact (safetensors), written once, after the first estimator
  that computed it. Key: the generation key, the task's questions, the prompt style, the backend, its options, the
  clustering method and the code.
- model calls (`calls/<key>-<digest>/`): the Bundle's score and generate caches (P(True) prompts, verbalized
  answers, ...). Key: the model digest, dtype and code. An artifact is immutable, so the store grows by parts: after
  each estimator the calls not yet stored are written as one more part (Parquet, named by the hash of its entries),
  and a run reads the union of every part. A crash loses at most the calls of the estimator it interrupted.

Either works without the other, and the Bundle works without both (tests, notebooks).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.fingerprint import stage_fingerprint
from calib.pipeline.store import (
    ArtifactStore,
    artifact_key,
    content_hash,
    read_arrays,
    write_arrays,
    write_table,
)

log = logging.getLogger("calib")

SEMANTIC = "semantic"
CALLS = "calls"
PARTS = ("comparisons", "greedy_token_relevance", "sample_token_relevance")
WRAP_MARKER = (
    "\x00calib-prompt\x00"  # to record how extra prompts were wrapped (chat template) for `calib inspect`
)


# ---- what the keys' code fingerprints cover (calib.fingerprint) ------------------------------------------
SEMANTIC_MODULES = ("calib.semantic", "calib.estimators.bundle")
CALLS_MODULES = ("calib.models", "calib.decode", "calib.estimators.bundle")


# ---- keys -------------------------------------------------------------------------------------------------------
def semantic_inputs(generate_key: str, task_hash: str, style: str, estimators_cfg: Any) -> dict:
    return {
        "generate": generate_key,
        "task": task_hash,  # the question texts are the backend's contexts
        "prompt_style": style,  # the judge backend wraps its prompts
        "backend": estimators_cfg.semantic,
        "options": dict(estimators_cfg.semantic_options),
        "clustering": estimators_cfg.clustering,
        "code": stage_fingerprint(modules=SEMANTIC_MODULES),
    }


def calls_inputs(model_digest: str, dtype: str) -> dict:
    return {"model_digest": model_digest, "dtype": dtype, "code": stage_fingerprint(modules=CALLS_MODULES)}


def part_key(key: str, part: str) -> str:
    return f"{key}-{part}"


# ---- semantic parts: (de)serialisation ------------------------------------------------------------------------
def _ragged(rows: list) -> dict[str, np.ndarray]:
    """Nested lists of 1-D arrays -> concatenated values + a lengths table of the nesting's shape."""
    lengths = np.array(
        [[len(a) for a in row] if isinstance(row, list) else len(row) for row in rows], np.int64
    )
    flat = [np.asarray(a, np.float64) for row in rows for a in (row if isinstance(row, list) else [row])]
    return {"values": np.concatenate(flat) if flat else np.zeros(0), "lengths": lengths}


def _unragged(arrays: dict[str, np.ndarray]) -> list:
    lengths, values = arrays["lengths"], arrays["values"]
    bounds = np.concatenate([[0], np.cumsum(lengths.reshape(-1))])
    pieces = [values[bounds[j] : bounds[j + 1]] for j in range(lengths.size)]
    if lengths.ndim == 1:
        return pieces
    k = lengths.shape[1]
    return [pieces[i * k : (i + 1) * k] for i in range(lengths.shape[0])]


def part_arrays(part: str, stats: dict[str, Any]) -> dict[str, np.ndarray]:
    if part == "comparisons":
        return {
            "similarity": np.stack([c.similarity for c in stats["comparisons"]]),
            "equivalent": np.stack([c.equivalent for c in stats["comparisons"]]),
            "clusters": np.asarray(stats["clusters"]),
            "greedy_cluster": np.asarray(stats["greedy_cluster"]),
        }
    return _ragged(stats[part])


def read_part(part: str, folder: Path, num_questions: int | None = None) -> dict[str, Any]:
    """The Bundle statistics a stored part holds; raises (so the store sets the part aside) when it is damaged."""
    from calib.semantic.base import Comparison

    arrays = read_arrays(folder / "arrays.safetensors")
    if part == "comparisons":
        similarity, equivalent = arrays["similarity"], arrays["equivalent"].astype(bool)
        stats = {
            "comparisons": [Comparison(s, e) for s, e in zip(similarity, equivalent)],
            "clusters": arrays["clusters"],
            "greedy_cluster": arrays["greedy_cluster"],
        }
        n = len(similarity)
    else:
        stats = {part: _unragged(arrays)}
        n = len(arrays["lengths"])
    if num_questions is not None and n != num_questions:
        raise ValueError(f"holds {n} questions, expected {num_questions}")
    return stats


# ---- model calls: (de)serialisation ------------------------------------------------------------------------------
def write_calls(folder: Path, score: dict, generate: dict) -> None:
    if score:
        table = pd.DataFrame(
            {
                "prompt": [p for p, _ in score],
                "continuation": [c for _, c in score],
                "logprobs": [np.asarray(v, np.float64) for v in score.values()],
            }
        )
        write_table(folder / "score.parquet", table)
    if generate:
        table = pd.DataFrame(
            {
                "prompt": [p for p, _ in generate],
                "max_new_tokens": [int(n) for _, n in generate],
                "text": list(generate.values()),
            }
        )
        write_table(folder / "generate.parquet", table)


def read_calls(folder: Path) -> tuple[dict, dict]:
    score, generate = {}, {}
    if (folder / "score.parquet").is_file():
        table = pd.read_parquet(folder / "score.parquet")
        for p, c, lp in zip(table["prompt"], table["continuation"], table["logprobs"]):
            score[(p, c)] = np.asarray(lp, np.float64)
    if (folder / "generate.parquet").is_file():
        table = pd.read_parquet(folder / "generate.parquet")
        for p, n, text in zip(table["prompt"], table["max_new_tokens"], table["text"]):
            generate[(p, int(n))] = text
    return score, generate


def load_calls(store: ArtifactStore, key: str) -> tuple[dict, dict, list[dict]]:
    """The union of every stored part of a call store: score calls, generate calls, and each part's meta."""
    score, generate, metas = {}, {}, []
    for name in store.keys(CALLS):
        if not name.startswith(key + "-"):
            continue
        loaded = store.load(CALLS, name, read_calls)
        if loaded is not None:
            score.update(loaded[0])
            generate.update(loaded[1])
            metas.append(store.meta(CALLS, name))
    return score, generate, metas


# ---- the stage --------------------------------------------------------------------------------------------------
class SharedStatistics:
    """Fills a run's Bundle from the store (`attach`) and stores what its estimators computed (`save`)."""

    def __init__(
        self, store: ArtifactStore, semantic_key: str, semantic: dict, calls_key: str, calls: dict
    ) -> None:
        self.store = store
        self.semantic_key, self.semantic_inputs = semantic_key, semantic
        self.calls_key, self.calls_inputs = calls_key, calls
        self.bundle: Any = None
        self.reused: list[str] = []
        self.computed: list[str] = []
        self.stored_calls: set = set()
        self.reused_calls = 0
        self.new_calls = 0
        self.wrap: list[str] | None = None
        self.seconds = 0.0

    @classmethod
    def for_run(
        cls,
        store: ArtifactStore,
        generate_key: str,
        task_hash: str,
        style: str,
        estimators_cfg: Any,
        lm: Any,
        dtype: str,
    ) -> SharedStatistics:
        semantic = semantic_inputs(generate_key, task_hash, style, estimators_cfg)
        calls = calls_inputs(lm.digest, dtype)
        return cls(
            store,
            artifact_key(SEMANTIC, semantic["code"], semantic),
            semantic,
            artifact_key(CALLS, calls["code"], calls),
            calls,
        )

    def attach(self, bundle: Any) -> Any:
        """The bundle with every stored part and stored call filled in (nothing is recomputed for them)."""
        started = time.perf_counter()
        self.bundle = bundle
        for part in PARTS:
            stats = self.store.load(
                SEMANTIC,
                part_key(self.semantic_key, part),
                lambda folder, part=part: read_part(part, folder, bundle.num_questions),
            )
            if stats is not None:
                bundle.fill_shared_statistics(**stats)
                self.reused.append(part)
        score, generate, _ = load_calls(self.store, self.calls_key)
        bundle.fill_cached_calls(score, generate)
        self.stored_calls = {("score", *k) for k in score} | {("generate", *k) for k in generate}
        self.reused_calls = len(self.stored_calls)
        wrapped = bundle.wrap_prompt(WRAP_MARKER)
        if wrapped.count(WRAP_MARKER) == 1:
            self.wrap = wrapped.split(WRAP_MARKER)
        self.seconds += time.perf_counter() - started
        return bundle

    def save(self, estimator: str | None = None) -> None:
        """Store the semantic parts and the model calls computed since the last save (after each estimator)."""
        if self.bundle is None:
            return
        started = time.perf_counter()
        stats = self.bundle.shared_statistics()
        for part in PARTS:
            if part in self.reused or part in self.computed or part not in stats:
                continue
            if part == "comparisons":  # store the clusters with them (cheap, and what `calib inspect` shows)
                stats["clusters"], stats["greedy_cluster"] = self.bundle.clusters, self.bundle.greedy_cluster
            arrays = part_arrays(part, stats)
            self.store.put(
                SEMANTIC,
                part_key(self.semantic_key, part),
                lambda tmp, arrays=arrays: write_arrays(tmp / "arrays.safetensors", arrays),
                {"part": part, "inputs": self.semantic_inputs, "first_estimator": estimator},
            )
            self.computed.append(part)
        score, generate = self.bundle.cached_calls()
        score = {k: v for k, v in score.items() if ("score", *k) not in self.stored_calls}
        generate = {k: v for k, v in generate.items() if ("generate", *k) not in self.stored_calls}
        if score or generate:
            digest = content_hash([sorted(score), sorted(generate)])[:16]
            self.store.put(
                CALLS,
                part_key(self.calls_key, digest),
                lambda tmp: write_calls(tmp, score, generate),
                {
                    "inputs": self.calls_inputs,
                    "score": len(score),
                    "generate": len(generate),
                    "estimator": estimator,
                    "wrap": self.wrap,
                },
            )
            self.stored_calls |= {("score", *k) for k in score} | {("generate", *k) for k in generate}
            self.new_calls += len(score) + len(generate)
        self.seconds += time.perf_counter() - started

    def semantic_record(self) -> dict:
        """The manifest entry: key, whether nothing had to be computed, which parts were read and written."""
        return {
            "key": self.semantic_key,
            "cached": not self.computed,
            "reused": list(self.reused),
            "computed": list(self.computed),
            "parts": [p for p in PARTS if self.store.has(SEMANTIC, part_key(self.semantic_key, p))],
            "seconds": self.seconds,
        }

    def calls_record(self) -> dict:
        return {
            "key": self.calls_key,
            "cached": self.new_calls == 0,
            "stored_calls": self.reused_calls,
            "new_calls": self.new_calls,
        }
