"""The stages after loading a model: prompts, grade, estimate. Each stage's artifact key hashes its config, the keys
of what it reads and a fingerprint of its code (calib.fingerprint), so editing an estimator reruns only
that estimator, and editing the grader reruns grade and what follows it, never generation.

generate (calib.pipeline.generation) -> grade (greedy answers against every valid answer) -> estimate (one artifact
per estimator) -> evaluate (calib.pipeline.evaluate) -> report (calib.pipeline.report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.errors import CalibError
from calib.fingerprint import stage_fingerprint
from calib.pipeline.config import ALL, EstimatorsConfig, TaskConfig
from calib.pipeline.store import (
    ArtifactStore,
    artifact_key,
    content_hash,
    read_arrays,
    write_arrays,
    write_table,
)
from calib.progress import progress_bar

log = logging.getLogger("calib")


# ---- task and prompts -------------------------------------------------------------------------------------------
def load_examples(cfg: TaskConfig) -> list:
    """The run's questions: load_task with the config's seed/limit/options, optionally one split."""
    from calib.tasks import load_task

    task = load_task(cfg.name, seed=cfg.seed, **dict(cfg.options))
    if cfg.split is not None:
        task = task.split(cfg.split, seed=cfg.seed)
    task = task.limit(cfg.limit)
    return list(task.examples)


def task_fingerprint(examples: Sequence[Any]) -> str:
    """Hash of everything grading reads: ids, questions, answer groups, kinds, categories and grader settings."""
    return content_hash(
        [
            [
                ex.id,
                ex.question,
                [list(g) for g in ex.answer_groups],
                ex.open_ended,
                ex.category,
                ex.context,
                {k: v for k, v in ex.metadata.items() if k in ("grader", "numeric_pick", "instruction")},
            ]
            for ex in examples
        ]
    )


def prompt_style(cfg: TaskConfig, lm: Any) -> str:
    """How prompts are wrapped: a raw template is used as is (completion), else the configured or model's style."""
    if cfg.template is not None:
        return "completion"
    return cfg.prompt_style or lm.prompt_style


def build_prompts(examples: Sequence[Any], lm: Any, cfg: TaskConfig) -> list[str]:
    from calib.tasks.prompts import build_prompt

    if cfg.template is not None:
        try:
            return [cfg.template.format(question=ex.question, context=ex.context) for ex in examples]
        except (KeyError, IndexError) as err:
            raise CalibError(
                f"task.template: unknown placeholder {err}; use {{question}} and {{context}}"
            ) from None
    style = prompt_style(cfg, lm)
    return [
        build_prompt(ex, lm.tokenizer, style=style, n_shots=cfg.n_shots, system=cfg.system) for ex in examples
    ]


# ---- grade ------------------------------------------------------------------------------------------------------
def grade_code() -> str:
    """The grader's code: the tasks package (answer reading, normalisation, matching) and the grade table."""
    return stage_fingerprint(modules=["calib.tasks"], objects=[grade_table])


def grade_key(generate_key: str, task_hash: str, grading: dict, code: str | None = None) -> str:
    return artifact_key(
        "grade", code or grade_code(), {"generate": generate_key, "task": task_hash, "grading": grading}
    )


def check_output_folders(artifacts_dir: str, run_dir: Path) -> None:
    """The artifact store and the run folder can be written (checked before the model loads; main job and studies)."""
    from calib.cache import check_writable

    check_writable(artifacts_dir, "set artifacts_dir=PATH (or $CALIB_ARTIFACTS_DIR) to a writable folder")
    check_writable(run_dir, "set hydra.run.dir=PATH to a writable folder")


def grade_table(examples: Sequence[Any], greedy, samples, grading: dict) -> pd.DataFrame:
    """One row per question: the greedy answer, what was read out of it, and whether it is a valid answer."""
    from calib.tasks import grade_detail
    from calib.tasks.prompts import extract_answer

    rows = []
    for i, ex in enumerate(examples):
        text = greedy.texts[i][0]
        answer = extract_answer(text, question=ex.question)
        detail = grade_detail(ex, answer, **grading)
        sample_correct = (
            [
                grade_detail(ex, extract_answer(s, question=ex.question), **grading).correct
                for s in samples.texts[i]
            ]
            if samples is not None
            else []
        )
        rows.append(
            {
                "question_id": ex.id,
                "question": ex.question,
                "category": ex.category,
                "open_ended": bool(ex.open_ended),
                "answer": text,
                "extracted": answer,
                "correct": float(detail.correct),
                "score": float(detail.score),
                "matched": detail.matched or "",
                "method": detail.method,
                "sample_accuracy": float(np.mean(sample_correct)) if sample_correct else float("nan"),
                "stop_reason": greedy.stop_reasons[i][0],
            }
        )
    return pd.DataFrame(rows)


def run_grade(
    store: ArtifactStore, key: str, examples, greedy, samples, grading: dict
) -> tuple[pd.DataFrame, dict]:
    stored = store.load("grade", key, lambda folder: pd.read_parquet(folder / "grades.parquet"))
    if stored is not None:
        return stored, {"cached": True}
    started = time.perf_counter()
    table = grade_table(examples, greedy, samples, grading)
    store.put(
        "grade",
        key,
        lambda tmp: write_table(tmp / "grades.parquet", table),
        {
            "questions": len(table),
            "accuracy": float(table["correct"].mean()),
            "seconds": time.perf_counter() - started,
        },
    )
    return table, {"cached": False, "seconds": time.perf_counter() - started}


# ---- estimate ---------------------------------------------------------------------------------------------------
def resolve_estimators(cfg: EstimatorsConfig, available: frozenset) -> tuple[dict[str, Any], dict[str, str]]:
    """Instances by name, and the estimators of "all" skipped because the run can't feed them (name -> why).

    Explicitly named estimators must be satisfiable: check_needs raises one line before anything is generated.
    """
    from calib.estimators import check_needs, get_estimator, list_estimators

    explicit = [n for n in cfg.names if n != ALL]
    wanted = list(dict.fromkeys([*explicit, *(list_estimators() if ALL in cfg.names else [])]))
    wanted = [n for n in wanted if n not in cfg.exclude]
    chosen, skipped = {}, {}
    for name in wanted:
        estimator = get_estimator(name, **dict(cfg.params.get(name) or {}))
        missing = sorted(need.label for need in set(estimator.needs) - set(available))
        if missing and name not in explicit:
            skipped[name] = "needs " + ", ".join(missing)
            continue
        chosen[name] = estimator
    check_needs(chosen.values(), available)
    if not chosen:
        raise CalibError(
            "no estimator can run with this configuration; raise decoding.num_samples or name some"
        )
    return chosen, skipped


def estimator_code(estimator: Any) -> str:
    """One estimator's code: its class followed by name (its formula, helpers, base classes), the bundle and how
    the runner makes model calls, and the semantic backends when it reads them. Editing one estimator changes its
    key only."""
    from calib.estimators import Need

    semantic = set(estimator.needs) & {Need.SEMANTIC, Need.DECODE}
    return stage_fingerprint(
        modules=["calib.estimators.bundle", *(["calib.semantic"] if semantic else [])],
        objects=[type(estimator), model_calls, make_bundle],
    )


def estimator_key(
    name: str, estimator: Any, base: dict, cfg: EstimatorsConfig, code: str | None = None
) -> str:
    """Key of one estimator's result: what it reads (generations, questions, model, semantic backend if used)."""
    from calib.estimators import Need

    needs = set(estimator.needs)
    inputs = {
        **base,
        "estimator": name,
        "class": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        "params": dict(cfg.params.get(name) or {}),
    }
    if needs & {Need.SEMANTIC, Need.DECODE}:
        inputs["semantic"] = {
            "backend": cfg.semantic,
            "options": dict(cfg.semantic_options),
            "clustering": cfg.clustering,
        }
    return artifact_key("estimate", code or estimator_code(estimator), inputs)


SCORE_CHUNK = 256  # (prompt, continuation) pairs per scoring call: progress granularity, not a batch size


def model_calls(lm: Any, progress: bool) -> dict[str, Any]:
    """score_fn / generate_fn for the Bundle that show progress (rate, ETA) on long runs of extra model calls,
    e.g. P(True) of every cluster representative of every question."""
    from calib.decode import generate, score

    def score_fn(prompts: list[str], continuations: list[str]) -> list[np.ndarray]:
        starts = range(0, len(prompts), SCORE_CHUNK)
        bar = progress_bar(
            starts, f"score ({len(prompts)} sequences)", enabled=progress and len(starts) > 1, unit="chunk"
        )
        out: list[np.ndarray] = []
        for start in bar:
            out += score(lm, prompts[start : start + SCORE_CHUNK], continuations[start : start + SCORE_CHUNK])
        return out

    def generate_fn(prompts: list[str], max_new_tokens: int) -> list[str]:
        gens = generate(
            lm,
            prompts,
            num_samples=1,
            max_new_tokens=max_new_tokens,
            greedy=True,
            stop=("\n",),
            progress=progress,
        )
        return [row[0] for row in gens.texts]

    return {"score_fn": score_fn, "generate_fn": generate_fn}


def semantic_backend(cfg: EstimatorsConfig, estimators: dict[str, Any]) -> Any | None:
    """The semantic backend, built and checked before anything is generated (bad options, an NLI model that cannot
    be loaded), when an estimator reads it; None when none does or when it needs the LM's calls (judge)."""
    from calib.semantic import get_backend

    if cfg.semantic == "judge" or not _reads_semantic(estimators, list(estimators)):
        return None
    backend = get_backend(cfg.semantic, **dict(cfg.semantic_options))
    if hasattr(backend, "check"):
        backend.check()
    return backend


def make_bundle(
    lm: Any,
    greedy,
    samples,
    examples,
    cfg: EstimatorsConfig,
    style: str,
    progress: bool = False,
    passes: Sequence = (),
    backend: Any = None,
):
    """A Bundle whose model calls go to `lm`; chat models get their template around every extra prompt."""
    from calib.estimators import Bundle
    from calib.semantic import get_backend

    options = dict(cfg.semantic_options)
    if lm is None:  # answers from a generations file and no model: no model calls
        semantic = backend if backend is not None else get_backend(cfg.semantic, **options)
        return Bundle(greedy, samples, examples, passes=passes, semantic=semantic, clustering=cfg.clustering)
    calls = model_calls(lm, progress)
    wrap = lm.format_prompt if style == "chat" else None
    if cfg.semantic == "judge":
        options.setdefault("score_fn", calls["score_fn"])
        options.setdefault("wrap_prompt", wrap)
    if backend is None:
        backend = get_backend(cfg.semantic, **options)
    return Bundle.from_model(
        lm,
        greedy,
        samples,
        examples,
        passes=passes,
        semantic=backend,
        clustering=cfg.clustering,
        wrap_prompt=wrap,
        progress=progress,
        **calls,
    )


def _reads_semantic(estimators: dict[str, Any], names: Sequence[str]) -> bool:
    from calib.estimators import Need

    return any(set(estimators[n].needs) & {Need.SEMANTIC, Need.DECODE} for n in names)


def run_estimate(
    store: ArtifactStore,
    estimators: dict[str, Any],
    keys: dict[str, str],
    bundle_factory,
    progress: bool = True,
    after_each=None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """{name: {"confidence", "raw"}} for every estimator, computing (with one shared bundle) only those whose
    artifact is missing; `after_each(name)` runs after each computed one (the semantic stage stores what it shared)."""
    results, computed, timings = {}, [], {}
    for name in estimators:
        stored = store.load("estimate", keys[name], lambda folder: read_arrays(folder / "result.safetensors"))
        if stored is not None:
            results[name] = stored
    missing = [n for n in estimators if n not in results]
    bundle = bundle_factory() if missing else None
    # comparisons filled in from the store (semantic stage): the encoder is not needed for them
    stored = "comparisons" in getattr(bundle, "shared_statistics", dict)()
    reads = bundle is not None and _reads_semantic(estimators, missing)
    if reads and hasattr(bundle.semantic, "preload") and not stored:
        bundle.semantic.preload()  # the encoder loads while the first estimators run the LM
    for name in progress_bar(missing, "estimate", enabled=progress and bool(missing), unit="estimator"):
        started = time.perf_counter()
        result = estimators[name](bundle)
        seconds = time.perf_counter() - started
        arrays = {
            "confidence": np.asarray(result.confidence, np.float64),
            "raw": np.asarray(result.raw, np.float64),
        }
        store.put(
            "estimate",
            keys[name],
            lambda tmp, arrays=arrays: write_arrays(tmp / "result.safetensors", arrays),
            {"estimator": name, "higher_raw_means": result.higher_raw_means, "seconds": seconds},
        )
        computed.append(name)
        if after_each is not None:
            after_each(name)
        timings[name] = round(seconds, 3)
        log.debug("estimator %s: %.1f s", name, seconds)
        results[name] = arrays
    return {name: results[name] for name in estimators}, {
        "cached": not computed,
        "computed": computed,
        "estimator_seconds": timings,
    }


def decoding_inputs(decoding) -> dict:
    """The decoding settings that determine the samples. shard_size is one of them: a shard is one generate call,
    and how prompts share a compiled batch changes float rounding (token log-probs by ~1e-6), so a store never
    mixes shards of different sizes in one artifact."""
    values = asdict(decoding) if not isinstance(decoding, dict) else dict(decoding)
    values["stop"] = list(values["stop"])
    return values
