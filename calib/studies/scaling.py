"""Inference-time scaling study: accuracy and every estimator's calibration and discrimination against compute,
sweeping the number of samples K and of pause-and-revise passes R.

    calib experiment=scaling task.limit=56 study.scaling.samples=[1,2,4,8,16] study.scaling.passes=2

One generation serves the whole grid: a greedy answer + max(K) samples per question, revised R times in the same
rows (calib.decode.revise). Row randomness depends only on (seed, question, row), so the point (K, R) reads the
first K samples of pass R and is exactly what a run with K samples and R passes would produce. That generation is
the generate stage's artifact for decoding.num_samples = max(K), decoding.revise_passes = R and decoding.cue = the
study's cue, stored in the artifact store in shards, so a killed study resumes and a rerun generates nothing.
Tables and figures go into the run folder (calib.studies.scaling_report).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calib.decode.revise import Revision, get_cue
from calib.decode.types import Generations
from calib.pipeline import generation
from calib.pipeline.config import ALL, RunConfig
from calib.pipeline.run import RunResult
from calib.studies import common


# ---- generation: one revise artifact of the generate stage for the whole grid ----------------------------------
def generate_passes(setup: common.Setup) -> Revision:
    """The study's generation (greedy + max(K) samples, R passes) with its token counts, from the store when it
    holds them."""
    g, cfg = setup.cfg.study.scaling, setup.cfg
    passes, key = common.generate(
        setup, "passes", num_samples=max(g.samples), revise_passes=g.passes, cue=g.cue
    )
    if g.passes:
        counts = generation.revision_counts(setup.store, key, len(setup.prompts), cfg.decoding.shard_size)
        counts["revised"] = counts["revised"].astype(bool)
    else:  # without revise passes the stage keeps no counts: an answer's kept tokens (no terminator) are counted
        counts = tokens_of(setup, passes[0])
    return Revision(passes=passes, histories=[], cue=get_cue(g.cue), style=setup.style, **counts)


def tokens_of(setup: common.Setup, gens: Generations) -> dict[str, np.ndarray]:
    from calib.decode.generate import encode_prompts

    encoded = encode_prompts(setup.lm, setup.prompts, setup.cfg.decoding.max_new_tokens)
    decoded = np.array(gens.lengths, np.int64)[None]
    return {
        "decoded": decoded,
        "fed": np.zeros_like(decoded),
        "offsets": np.full_like(decoded, -1),
        "prompt_tokens": np.array([len(e) for e in encoded]),
        "revised": np.zeros(len(encoded), bool),
    }


# ---- grading ----------------------------------------------------------------------------------------------------
def grade_passes(examples, rv: Revision, grading: dict) -> list[pd.DataFrame]:
    """The runner's grade table (greedy answer read out and graded) for every pass."""
    from calib.pipeline.stages import grade_table

    return [grade_table(examples, rv.greedy(r), None, grading) for r in range(len(rv.passes))]


def vote_correct(examples, gens: Generations, grading: dict, cache: dict) -> np.ndarray:
    """Correctness of the majority answer (normalised exact match) of each question's answers, ties going to the
    earliest (the greedy answer is first)."""
    from calib.tasks import grade_detail
    from calib.tasks.normalize import normalize_answer
    from calib.tasks.prompts import extract_answer

    out = np.zeros(len(examples))
    for i, ex in enumerate(examples):
        answers = [extract_answer(t, question=ex.question) for t in gens.texts[i]]
        keys = [normalize_answer(a) for a in answers]
        counts = {key: keys.count(key) for key in keys}
        best = answers[max(range(len(keys)), key=lambda j: (counts[keys[j]], -j))]
        if (i, best) not in cache:
            cache[(i, best)] = grade_detail(ex, best, **grading).correct
        out[i] = cache[(i, best)]
    return out


# ---- estimation -------------------------------------------------------------------------------------------------
def _memoized(memo: dict, keys: list, compute) -> list:
    """memo[key] for every key, computing only the distinct keys not yet in memo, in one call `compute(missing)`."""
    missing = list(dict.fromkeys(k for k in keys if k not in memo))
    if missing:
        memo.update(zip(missing, compute(missing)))
    return [memo[k] for k in keys]


class MemoCalls:
    """The model calls estimators make, remembered across the grid's bundles (P(True) of one answer is asked at
    every K; the greedy answer's teacher-forced distributions and attention statistics are the same at every K of
    one pass); every distinct call is made once."""

    def __init__(self, lm):
        self.lm, self.scores, self.generations = lm, {}, {}
        self.distributions: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}
        self.attentions: dict[tuple[str, tuple[int, ...], str], np.ndarray] = {}

    def distribution(self, prompts: list[str], token_ids: list) -> list[np.ndarray]:
        from calib.decode.score import score_distribution

        keys = [(p, tuple(int(t) for t in ids)) for p, ids in zip(prompts, token_ids)]
        return _memoized(
            self.distributions,
            keys,
            lambda missing: score_distribution(
                self.lm, [p for p, _ in missing], [list(i) for _, i in missing]
            ),
        )

    def attention(self, prompts: list[str], token_ids: list, suffix: str) -> list[np.ndarray]:
        from calib.estimators.attention import attention_statistics

        keys = [(p, tuple(int(t) for t in ids), suffix) for p, ids in zip(prompts, token_ids)]
        return _memoized(
            self.attentions,
            keys,
            lambda missing: attention_statistics(
                self.lm, [p for p, _, _ in missing], [np.asarray(i) for _, i, _ in missing], suffix
            ),
        )

    def score(self, prompts: list[str], continuations: list[str]) -> list[np.ndarray]:
        from calib.decode import score

        return _memoized(
            self.scores,
            list(zip(prompts, continuations)),
            lambda missing: score(self.lm, [p for p, _ in missing], [c for _, c in missing]),
        )

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        from calib.decode import generate

        def greedy(missing: list) -> list[str]:
            prompts_ = [p for p, _ in missing]
            gens = generate(
                self.lm, prompts_, num_samples=1, max_new_tokens=max_new_tokens, greedy=True, stop=("\n",)
            )
            return [row[0] for row in gens.texts]

        return _memoized(self.generations, [(p, max_new_tokens) for p in prompts], greedy)


def chosen_estimators(cfg: RunConfig) -> dict:
    """Instances of the configured estimators ("all" = every registered one); each runs where its needs are met."""
    from calib.estimators import get_estimator, list_estimators

    e = cfg.estimators
    names = [n for n in e.names if n != ALL] + (list_estimators() if ALL in e.names else [])
    return {
        n: get_estimator(n, **dict(e.params.get(n) or {})) for n in dict.fromkeys(names) if n not in e.exclude
    }


def semantic_backend(cfg: RunConfig, lm, style: str, memo: MemoCalls):
    """The runner's backend choice (calib.pipeline.stages.make_bundle), built once for the whole grid."""
    from calib.semantic import get_backend

    options = dict(cfg.estimators.semantic_options)
    if cfg.estimators.semantic == "judge":
        options.setdefault("score_fn", memo.score)
        options.setdefault("wrap_prompt", lm.format_prompt if style == "chat" else None)
    backend = get_backend(cfg.estimators.semantic, **options)
    if callable(getattr(backend, "encode", None)):
        remember_embeddings(backend)
    return backend


def remember_embeddings(backend) -> None:
    """Encode each distinct text once over the whole grid: the samples of small K are prefixes of large K, so
    clustering and SAR's token-dropped variants repeat across points (identical vectors, a fraction of the time)."""
    encode, vectors = backend.encode, {}

    def cached(texts):
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in vectors))
        if missing:
            vectors.update(zip(missing, encode(missing)))
        return np.stack([vectors[t] for t in texts]) if texts else encode(texts)

    backend.encode = cached


def estimate_point(
    lm,
    rv: Revision,
    k: int,
    r: int,
    examples,
    estimators: dict,
    backend,
    memo: MemoCalls,
    cfg: RunConfig,
    style: str,
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """{estimator: confidence [N]} at (K=k, R=r) for every estimator the point can feed, and their seconds."""
    from calib.estimators import Bundle

    bundle = Bundle.from_model(
        lm,
        rv.greedy(r),
        rv.samples(r, k),
        examples,
        passes=rv.answers(k, r) if r else (),
        semantic=backend,
        clustering=cfg.estimators.clustering,
        wrap_prompt=lm.format_prompt if style == "chat" else None,
        score_fn=memo.score,
        generate_fn=memo.generate,
        distribution_fn=memo.distribution,
        attention_fn=memo.attention,
    )
    have = bundle.available()
    out, seconds = {}, {}
    for name, estimator in estimators.items():
        if set(estimator.needs) <= have:
            started = time.perf_counter()
            out[name] = np.asarray(estimator(bundle).confidence, np.float64)
            seconds[name] = time.perf_counter() - started
    return out, seconds


# ---- the study ---------------------------------------------------------------------------------------------------
@dataclass
class StudyResult(RunResult):
    """RunResult (metrics = `points`, report = summary.md) plus the study's tables."""

    points: pd.DataFrame  # K, R, estimator, metric, value, low, high, n, n_missing
    accuracy: pd.DataFrame  # K, R, accuracy and vote accuracy with intervals, tokens, FLOPs
    differences: pd.DataFrame  # K, R, estimator, metric: value at R minus at R = 0, paired interval
    transitions: pd.DataFrame  # from, to, fixed, broke, kept_correct, kept_wrong, changed
    adaptive: pd.DataFrame  # gate, K, fraction, threshold, accuracy, tokens, saved, ...
    confidences: pd.DataFrame  # K, R, estimator, question, confidence, correct
    meta: dict


def run_study(cfg: RunConfig, run_dir: Path, print_summary: bool = True) -> StudyResult:
    """Generate (or reuse) the passes, grade, estimate every point of the grid, evaluate and write everything."""
    from calib.progress import progress_bar
    from calib.studies import scaling_report as report
    from calib.studies import scaling_tables as tables

    g, progress = cfg.study.scaling, cfg.progress
    setup = common.prepare(cfg, run_dir, (g.passes + 1) * cfg.decoding.max_new_tokens)
    lm, examples, style = setup.lm, setup.examples, setup.style
    estimators = chosen_estimators(cfg)
    timings = {"setup": time.perf_counter() - setup.started}

    t = time.perf_counter()
    rv = generate_passes(setup)
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    grading = dict(cfg.task.grading)
    grades = grade_passes(examples, rv, grading)
    correct = np.stack([g_["correct"].to_numpy(np.float64) for g_ in grades])
    votes, cache = {}, {}
    for r in range(g.passes + 1):
        for k in g.samples:
            votes[(k, r)] = vote_correct(examples, rv.passes[r].select(slice(0, 1 + k)), grading, cache)
    timings["grade"] = time.perf_counter() - t

    t = time.perf_counter()
    memo = MemoCalls(lm)
    backend = semantic_backend(cfg, lm, style, memo)
    confidences, est_seconds = {}, {}
    grid = [(k, r) for r in range(g.passes + 1) for k in g.samples]
    for k, r in progress_bar(grid, "estimate", enabled=progress, unit="point"):
        confidences[(k, r)], est_seconds[(k, r)] = estimate_point(
            lm, rv, k, r, examples, estimators, backend, memo, cfg, style
        )
    timings["estimate"] = time.perf_counter() - t

    t = time.perf_counter()
    open_ended = grades[0]["open_ended"].to_numpy(bool)
    flops, m = lm.config.flops_per_token, cfg.metrics
    points = tables.evaluate_points(confidences, correct, open_ended, m, progress)
    accuracy = tables.accuracy_table(rv, correct, votes, g, m, flops)
    differences = tables.paired_differences(confidences, correct, g, m)
    transitions = tables.transition_table(grades)
    adaptive = tables.adaptive_table(rv, confidences, correct, g, m, flops)
    timings["evaluate"] = time.perf_counter() - t

    long_conf = tables.confidence_frame(confidences, correct, examples)
    meta = {
        "model": cfg.model.name,
        "task": cfg.task.name,
        "questions": len(examples),
        "style": style,
        "samples": list(g.samples),
        "passes": g.passes,
        "cue": dataclasses.asdict(get_cue(g.cue)),
        "decoding": dataclasses.asdict(cfg.decoding),
        "metrics": dataclasses.asdict(m),
        "semantic": cfg.estimators.semantic,
        "flops_per_token": flops,
        "timings": timings,
        "estimator_seconds": {f"K={k},R={r}": s for (k, r), s in est_seconds.items()},
        "estimators": sorted(estimators),
    }
    frames = (points, accuracy, differences, transitions, adaptive, long_conf, meta)
    result = StudyResult(run_dir, run_dir / "summary.md", points, setup.manifest, *frames)
    t = time.perf_counter()
    report.write_outputs(result, grades, cfg)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - setup.started
    common.finish(setup, meta, print_summary)
    return result
