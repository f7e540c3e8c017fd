"""Inference-time scaling study: accuracy and every estimator's calibration and discrimination against compute,
sweeping the number of samples K and of pause-and-revise passes R.

One generation serves the whole grid: a greedy answer + max(K) samples per question, revised R times in the same
rows (calib.decode.revise). Row randomness depends only on (seed, question, row), so the point (K, R) reads the
first K samples of pass R and is exactly what a run with K samples and R passes would produce. The generation is
stored in shards under <out>/generations/<key>/, so a killed study resumes without regenerating.

    python -m calib.studies.scaling --model smollm2-135m-instruct --task mixed --limit 56 --out out/scaling

Defaults come from configs/experiment/scaling.yaml (model, task, decoding, estimators, metrics); the K grid, R and
the cue are this study's own options. Tables and figures are written by calib.studies.scaling_report.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from calib.decode.revise import Cue, Revision, get_cue, revise
from calib.decode.types import Generations
from calib.errors import CalibError
from calib.pipeline.config import ALL, RunConfig, validate
from calib.pipeline.generation import concat_generations, load_generations, save_generations
from calib.pipeline.store import content_hash, publish, read_arrays, read_json, write_arrays, write_json

log = logging.getLogger("calib")

VERSION = 1  # bump when what a stored generation shard contains changes
DEFAULT_SAMPLES = (1, 2, 4, 8, 16)


@dataclass
class StudyConfig:
    """The runner's config (model, task, decoding, estimators, metrics) plus the grid this study sweeps."""

    run: RunConfig
    samples: tuple[int, ...] = (
        DEFAULT_SAMPLES  # K values; decoding.num_samples is ignored (max(samples) is used)
    )
    passes: int = 2  # R: revise passes after the first answer
    cue: str = "self_check"  # a name of calib.decode.revise.CUES
    gates: tuple[str, ...] = ("msp", "self_consistency")  # estimators that decide whom to revise (adaptive)
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # shares of questions revised (adaptive)


def check_config(cfg: StudyConfig) -> None:
    validate(cfg.run)
    if not cfg.samples or any(k < 1 for k in cfg.samples) or list(cfg.samples) != sorted(set(cfg.samples)):
        raise CalibError(f"samples={list(cfg.samples)}: give increasing sample counts >= 1, e.g. 1,2,4,8,16")
    if cfg.passes < 0:
        raise CalibError(f"passes={cfg.passes}: give the number of revise passes, 0 or more")
    get_cue(cfg.cue)
    if any(not 0.0 <= f <= 1.0 for f in cfg.fractions):
        raise CalibError(f"fractions={list(cfg.fractions)}: shares of questions revised must lie in [0, 1]")


# ---- generation: one Revision for the whole grid, stored in shards ----------------------------------------------
def save_revision(rv: Revision, folder: Path) -> None:
    for r, gens in enumerate(rv.passes):
        (folder / f"pass{r}").mkdir()
        save_generations(gens, folder / f"pass{r}")
    arrays = {"decoded": rv.decoded, "fed": rv.fed, "offsets": rv.offsets, "prompt_tokens": rv.prompt_tokens}
    write_arrays(folder / "counts.safetensors", {**arrays, "revised": rv.revised})
    cue = dataclasses.asdict(rv.cue)
    write_json(
        folder / "revision.json", {"histories": rv.histories, "cue": cue, "style": rv.style, "meta": rv.meta}
    )


def load_revision(folder: Path) -> Revision:
    info = read_json(folder / "revision.json")
    arrays = read_arrays(folder / "counts.safetensors")
    passes = [load_generations(folder / f"pass{r}") for r in range(arrays["decoded"].shape[0])]
    return Revision(
        passes=passes,
        revised=arrays["revised"].astype(bool),
        decoded=arrays["decoded"],
        fed=arrays["fed"],
        prompt_tokens=arrays["prompt_tokens"],
        histories=info["histories"],
        offsets=arrays["offsets"],
        cue=Cue(**info["cue"]),
        style=info["style"],
        meta=info["meta"],
    )


def concat_revisions(parts: list[Revision]) -> Revision:
    """One Revision from consecutive shards of questions."""
    first = parts[0]
    passes = [concat_generations([p.passes[r] for p in parts]) for r in range(len(first.passes))]
    cat = lambda name, axis: np.concatenate([getattr(p, name) for p in parts], axis=axis)  # noqa: E731
    return Revision(
        passes=passes,
        revised=cat("revised", 0),
        decoded=cat("decoded", 1),
        fed=cat("fed", 1),
        prompt_tokens=cat("prompt_tokens", 0),
        histories=[h for p in parts for h in p.histories],
        offsets=cat("offsets", 1),
        cue=first.cue,
        style=first.style,
        meta={**first.meta, "seconds": sum(p.meta.get("seconds", 0.0) for p in parts)},
    )


def generate_passes(
    lm, prompts: list[str], cfg: StudyConfig, style: str, out: Path, progress: bool
) -> Revision:
    """The study's generation (greedy + max(K) samples, R passes), reusing every shard already on disk."""
    from calib.cache import atomic_dir
    from calib.progress import progress_bar

    d = cfg.run.decoding
    settings = {
        "version": VERSION,
        "model": lm.digest,
        "dtype": cfg.run.model.dtype,
        "prompts": content_hash(prompts),
        "samples": max(cfg.samples),
        "passes": cfg.passes,
        "cue": dataclasses.asdict(get_cue(cfg.cue)),
        "style": style,
        "max_new_tokens": d.max_new_tokens,
        "temperature": d.temperature,
        "top_p": d.top_p,
        "top_k": d.top_k,
        "min_p": d.min_p,
        "stop": list(d.stop),
        "seed": d.seed,
    }
    folder = out / "generations" / content_hash(settings)[:20]
    write_json(folder / "settings.json", settings)
    parts = []
    plan = list(range(0, len(prompts), d.shard_size))
    for start in progress_bar(plan, f"revise ({len(prompts)} questions)", enabled=progress, unit="shard"):
        stop = min(start + d.shard_size, len(prompts))
        target = folder / f"shard-{start:06d}-{stop:06d}"
        if (target / "revision.json").is_file():
            parts.append(load_revision(target))
            continue
        rv = revise(
            lm,
            prompts[start:stop],
            num_samples=max(cfg.samples),
            passes=cfg.passes,
            cue=cfg.cue,
            max_new_tokens=d.max_new_tokens,
            temperature=d.temperature,
            top_p=d.top_p,
            top_k=d.top_k,
            min_p=d.min_p,
            stop=tuple(d.stop),
            seed=d.seed,
            prompt_index_offset=start,
            style=style,
        )
        with atomic_dir(target) as tmp:
            save_revision(rv, tmp)
        parts.append(rv)
    return concat_revisions(parts)


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
class MemoCalls:
    """The model calls estimators make, remembered across the grid's bundles (P(True) of one answer is asked at
    every K); every distinct call is made once."""

    def __init__(self, lm):
        self.lm, self.scores, self.generations = lm, {}, {}

    def score(self, prompts: list[str], continuations: list[str]) -> list[np.ndarray]:
        from calib.decode import score

        missing = list(dict.fromkeys(k for k in zip(prompts, continuations) if k not in self.scores))
        if missing:
            self.scores.update(zip(missing, score(self.lm, [p for p, _ in missing], [c for _, c in missing])))
        return [self.scores[k] for k in zip(prompts, continuations)]

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        from calib.decode import generate

        missing = list(dict.fromkeys(p for p in prompts if (p, max_new_tokens) not in self.generations))
        if missing:
            gens = generate(
                self.lm, missing, num_samples=1, max_new_tokens=max_new_tokens, greedy=True, stop=("\n",)
            )
            self.generations.update(((p, max_new_tokens), row[0]) for p, row in zip(missing, gens.texts))
        return [self.generations[(p, max_new_tokens)] for p in prompts]


def chosen_estimators(cfg: StudyConfig) -> dict:
    """Instances of the configured estimators ("all" = every registered one); each runs where its needs are met."""
    from calib.estimators import get_estimator, list_estimators

    e = cfg.run.estimators
    names = [n for n in e.names if n != ALL] + (list_estimators() if ALL in e.names else [])
    return {
        n: get_estimator(n, **dict(e.params.get(n) or {})) for n in dict.fromkeys(names) if n not in e.exclude
    }


def semantic_backend(cfg: StudyConfig, lm, style: str, memo: MemoCalls):
    """The runner's backend choice (calib.pipeline.stages.make_bundle), built once for the whole grid."""
    from calib.semantic import get_backend

    options = dict(cfg.run.estimators.semantic_options)
    if cfg.run.estimators.semantic == "judge":
        options.setdefault("score_fn", memo.score)
        options.setdefault("wrap_prompt", lm.format_prompt if style == "chat" else None)
    backend = get_backend(cfg.run.estimators.semantic, **options)
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
    cfg: StudyConfig,
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
        clustering=cfg.run.estimators.clustering,
        wrap_prompt=lm.format_prompt if style == "chat" else None,
        score_fn=memo.score,
        generate_fn=memo.generate,
    )
    have = bundle.available()
    out, seconds = {}, {}
    for name, estimator in estimators.items():
        if set(estimator.needs) <= have:
            started = time.perf_counter()
            out[name] = np.asarray(estimator(bundle).confidence, np.float64)
            seconds[name] = time.perf_counter() - started
    return out, seconds


# ---- the study --------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    out: Path
    points: pd.DataFrame  # K, R, estimator, metric, value, low, high, n, n_missing
    accuracy: pd.DataFrame  # K, R, accuracy and vote accuracy with intervals, tokens, FLOPs
    differences: pd.DataFrame  # K, R, estimator, metric: value at R minus at R = 0, paired interval
    transitions: pd.DataFrame  # from, to, fixed, broke, kept_correct, kept_wrong, changed
    adaptive: pd.DataFrame  # gate, K, fraction, threshold, accuracy, tokens, saved, ...
    confidences: pd.DataFrame  # K, R, estimator, question, confidence, correct
    meta: dict = field(default_factory=dict)


def run_study(cfg: StudyConfig, out: str | Path, progress: bool = True) -> StudyResult:
    """Generate (or reuse) the passes, grade, estimate every point of the grid, evaluate and write everything."""
    from calib.decode.generate import encode_prompts
    from calib.models import load_model
    from calib.pipeline import stages
    from calib.studies import scaling_report as report
    from calib.studies import scaling_tables as tables

    check_config(cfg)
    out = Path(out)
    timings, started = {}, time.perf_counter()
    examples = stages.load_examples(cfg.run.task)
    lm = load_model(cfg.run.model.name, dtype=cfg.run.model.dtype, seed=cfg.run.model.seed)
    style = stages.prompt_style(cfg.run.task, lm)
    prompts = stages.build_prompts(examples, lm, cfg.run.task)
    encode_prompts(
        lm, prompts, cfg.run.decoding.max_new_tokens
    )  # a prompt too long for the context fails now
    estimators = chosen_estimators(cfg)
    timings["setup"] = time.perf_counter() - started

    t = time.perf_counter()
    rv = generate_passes(lm, prompts, cfg, style, out, progress)
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    grading = dict(cfg.run.task.grading)
    grades = grade_passes(examples, rv, grading)
    correct = np.stack([g["correct"].to_numpy(np.float64) for g in grades])
    votes, cache = {}, {}
    for r in range(cfg.passes + 1):
        for k in cfg.samples:
            votes[(k, r)] = vote_correct(examples, rv.passes[r].select(slice(0, 1 + k)), grading, cache)
    timings["grade"] = time.perf_counter() - t

    t = time.perf_counter()
    memo = MemoCalls(lm)
    backend = semantic_backend(cfg, lm, style, memo)
    confidences, est_seconds = {}, {}
    grid = [(k, r) for r in range(cfg.passes + 1) for k in cfg.samples]
    from calib.progress import progress_bar

    for k, r in progress_bar(grid, "estimate", enabled=progress, unit="point"):
        confidences[(k, r)], est_seconds[(k, r)] = estimate_point(
            lm, rv, k, r, examples, estimators, backend, memo, cfg, style
        )
    timings["estimate"] = time.perf_counter() - t

    t = time.perf_counter()
    open_ended = grades[0]["open_ended"].to_numpy(bool)
    flops = lm.config.flops_per_token
    points = tables.evaluate_points(confidences, correct, open_ended, cfg.run.metrics, progress)
    accuracy = tables.accuracy_table(rv, correct, votes, cfg, flops)
    differences = tables.paired_differences(confidences, correct, cfg)
    transitions = tables.transition_table(grades)
    adaptive = tables.adaptive_table(rv, confidences, correct, cfg, flops)
    timings["evaluate"] = time.perf_counter() - t

    long_conf = tables.confidence_frame(confidences, correct, examples)
    meta = {
        "model": cfg.run.model.name,
        "task": cfg.run.task.name,
        "questions": len(examples),
        "style": style,
        "samples": list(cfg.samples),
        "passes": cfg.passes,
        "cue": dataclasses.asdict(get_cue(cfg.cue)),
        "decoding": dataclasses.asdict(cfg.run.decoding),
        "metrics": dataclasses.asdict(cfg.run.metrics),
        "semantic": cfg.run.estimators.semantic,
        "flops_per_token": flops,
        "timings": timings,
        "estimator_seconds": {f"K={k},R={r}": s for (k, r), s in est_seconds.items()},
        "estimators": sorted(estimators),
    }
    result = StudyResult(out, points, accuracy, differences, transitions, adaptive, long_conf, meta)
    t = time.perf_counter()
    report.write_outputs(result, grades, rv, cfg)
    timings["report"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    write_json(out / "meta.json", meta)
    publish(out)
    log.info("scaling study finished in %.0f s: %s", timings["total"], out)
    return result


# ---- command line -----------------------------------------------------------------------------------------------
def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def parse_args(argv: list[str] | None = None) -> tuple[StudyConfig, Path, bool]:
    """The study's config: configs/experiment/scaling.yaml, then these options, then any Hydra overrides."""
    from calib.pipeline.config import compose

    p = argparse.ArgumentParser(prog="python -m calib.studies.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for tables, figures and the stored generations")
    p.add_argument("--model", help="model.name (built-in name, gguf:PATH, hf:PATH, tiny-llama)")
    p.add_argument("--task", help="task.name, e.g. mixed")
    p.add_argument("--limit", type=int, help="task.limit: questions to use")
    p.add_argument("--samples", type=_ints, default=DEFAULT_SAMPLES, help="K values (default 1,2,4,8,16)")
    p.add_argument("--passes", type=int, default=2, help="revise passes R (default 2)")
    p.add_argument(
        "--cue", default="self_check", help="revise cue: wait, self_check, final_answer, budget_forcing"
    )
    p.add_argument("--gates", default="msp,self_consistency", help="estimators that gate adaptive revision")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides of the run config, e.g. decoding.max_new_tokens=16"
    )
    a = p.parse_args(argv)
    overrides = ["experiment=scaling"]
    overrides += [f"model.name={a.model}"] if a.model else []
    overrides += [f"task.name={a.task}"] if a.task else []
    overrides += [f"task.limit={a.limit}"] if a.limit else []
    run = compose([*overrides, *a.overrides])
    gates = tuple(g for g in a.gates.split(",") if g)
    return StudyConfig(run, a.samples, a.passes, a.cue, gates), Path(a.out), not a.quiet


def main(argv: list[str] | None = None) -> None:
    from calib.cache import enable_compilation_cache

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    enable_compilation_cache()  # an entry point: programs compiled once per machine
    try:
        cfg, out, progress = parse_args(argv)
        result = run_study(cfg, out, progress)
    except CalibError as err:
        print(f"calib.studies.scaling: error: {err}", file=sys.stderr)
        sys.exit(2)
    print((result.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
