"""One run of the main job: model + task -> generate -> grade -> estimate -> evaluate -> report.

Everything is checked before the first artifact is written: config values, the model file, the task, and whether
the run can feed every requested estimator. Stages whose key is already in the store are read back, not recomputed;
`manifest.json` in the run folder records each stage's key, whether it was reused, and its time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from calib import distributed
from calib.devices import make_mesh
from calib.fingerprint import library_versions, stage_fingerprint
from calib.pipeline import evaluate as evaluate_stage
from calib.pipeline import generation, programs, report, semantic_stage, stages
from calib.pipeline import outside as outside_file
from calib.pipeline.config import RunConfig, validate
from calib.pipeline.store import ArtifactStore, artifact_key, publish, write_json, write_table

log = logging.getLogger("calib")


@dataclass
class RunResult:
    run_dir: Path
    report: Path | None  # None on a distributed run's processes other than 0
    metrics: pd.DataFrame | None
    manifest: dict


def run(cfg: RunConfig, run_dir: str | Path, *, print_summary: bool = True) -> RunResult:
    """Run (or resume) the whole job described by cfg and write its outputs into run_dir."""
    if cfg.study.name is not None:  # a study preset (calib.studies): same stages and store, its own outputs
        from calib.studies import run_study

        return run_study(cfg, run_dir, print_summary)
    from calib.cache import atomic_write_text
    from calib.decode.generate import encode_prompts
    from calib.estimators import available_needs
    from calib.models import load_model

    started = time.perf_counter()
    built_before = programs.snapshot()  # None unless the entry point installed the counter (the CLI does)
    run_dir = Path(run_dir)
    validate(cfg)
    process = distributed.initialize(cfg.distributed)  # one process unless distributed.enabled
    stages.check_output_folders(cfg.artifacts_dir, run_dir)
    store = ArtifactStore(cfg.artifacts_dir)
    K = cfg.decoding.num_samples
    R = cfg.decoding.revise_passes
    outside = outside_file.read_generations_file(cfg.generations.path) if cfg.generations.path else None
    if outside is not None:  # answers made elsewhere (docs/generations.md): no generate stage
        K, R = outside.num_samples, 0
        needs = outside_file.needs_for(outside, has_model=cfg.model.name != outside_file.NO_MODEL)
    else:
        needs = available_needs(
            num_samples=K,
            has_model=True,
            has_questions=True,
            has_token_stats=True,
            has_hidden=True,
            num_passes=R + 1,
        )
    estimators, skipped = stages.resolve_estimators(cfg.estimators, needs)
    for name, why in skipped.items():
        log.info("skipping estimator %s: %s", name, why)
    backend = stages.semantic_backend(cfg.estimators, estimators)  # an NLI model that cannot load fails now
    examples = outside.examples if outside else stages.load_examples(cfg.task)
    log.info("task %s: %d questions", cfg.task.name, len(examples))

    t = time.perf_counter()
    lm = None
    if cfg.model.name != outside_file.NO_MODEL:
        mesh = make_mesh(cfg.devices.data, cfg.devices.model)  # this process's devices
        lm = load_model(
            cfg.model.name, dtype=cfg.model.dtype, seed=cfg.model.seed, mesh=mesh, weights=cfg.model.weights
        )
        log.info("model %s loaded in %.1f s", lm.name, time.perf_counter() - t)
    style = stages.prompt_style(cfg.task, lm) if lm is not None else "completion"
    dtype = lm.dtype_name if lm is not None else cfg.model.dtype  # "auto" resolved by the loaded weights
    task_hash = stages.task_fingerprint(examples)
    manifest = {"artifacts_dir": str(store.root), "libraries": library_versions(), "stages": {}}
    if outside is not None:
        gen_key, inputs = outside_file.file_key(
            cfg.generations.path, lm.digest if lm else outside_file.NO_MODEL, dtype
        )
        greedy, samples, revise_passes = outside.greedy, outside.samples, []
        manifest["stages"]["generate"] = {"key": gen_key, **inputs, "cached": True, "seconds": 0.0}
        code = {"generate": inputs["code"]}
    else:
        prompts = stages.build_prompts(examples, lm, cfg.task)
        encode_prompts(
            lm, prompts, (R + 1) * cfg.decoding.max_new_tokens
        )  # a prompt too long for the context fails now
        gen_key, greedy, samples, revise_passes, code = _generate(
            cfg, store, lm, style, prompts, manifest, process
        )
    # grade
    t = time.perf_counter()
    grading = dict(cfg.task.grading)
    code["grade"] = stages.grade_code()
    grade_key = stages.grade_key(gen_key, task_hash, grading, code["grade"])
    grades, record = stages.run_grade(store, grade_key, examples, greedy, samples, grading)
    manifest["stages"]["grade"] = {
        "key": grade_key,
        "code": code["grade"],
        **record,
        "seconds": time.perf_counter() - t,
    }
    log.info("greedy accuracy %.3f on %d questions", grades["correct"].mean(), len(grades))

    # estimate
    t = time.perf_counter()
    # The grader's code is part of every estimate's key: an edited grader recomputes everything after it (grade,
    # estimate, evaluate), never generation. Estimates do not read grades, so this errs on the side of recomputing.
    base = {"generate": gen_key, "task": task_hash, "prompt_style": style, "grade_code": code["grade"]}
    code["estimate"] = {name: stages.estimator_code(est) for name, est in estimators.items()}
    keys = {
        name: stages.estimator_key(name, est, base, cfg.estimators, code["estimate"][name])
        for name, est in estimators.items()
    }
    shared = semantic_stage.SharedStatistics.for_run(
        store, gen_key, task_hash, style, cfg.estimators, lm or outside_file.NoModel(), dtype
    )
    bundle = lambda: shared.attach(  # noqa: E731
        outside_file.fit_bundle(
            lm,
            outside,
            greedy,
            samples,
            examples,
            cfg.estimators,
            style,
            cfg.progress,
            passes=revise_passes,
            backend=backend,
        )
    )
    if process.count > 1:  # each process estimates its share into the store; process 0 then reads them all
        mine = {name: estimators[name] for name in process.share(sorted(estimators))}
        stages.run_estimate(store, mine, keys, bundle, cfg.progress, after_each=shared.save)
        process.barrier(f"estimate/{gen_key}")
        if not process.is_main:
            log.info("process %d of %d: its share is in the store", process.index, process.count)
            return RunResult(run_dir, None, None, manifest)
    estimates, record = stages.run_estimate(
        store, estimators, keys, bundle, cfg.progress, after_each=shared.save
    )
    manifest["stages"]["semantic"] = shared.semantic_record()  # computed lazily inside the estimators
    manifest["stages"]["calls"] = shared.calls_record()
    manifest["stages"]["estimate"] = {
        "keys": keys,
        "code": code["estimate"],
        **record,
        "seconds": time.perf_counter() - t,
    }

    # evaluate
    t = time.perf_counter()
    metric_inputs = evaluate_stage.metrics_inputs(cfg.metrics)
    code["evaluate"] = stage_fingerprint(modules=evaluate_stage.CODE_MODULES)
    eval_key = artifact_key(
        "evaluate", code["evaluate"], {"grade": grade_key, "estimates": keys, "metrics": metric_inputs}
    )
    metrics = store.load("evaluate", eval_key, lambda folder: pd.read_parquet(folder / "metrics.parquet"))
    cached = metrics is not None
    if metrics is None:
        metrics = evaluate_stage.evaluate(
            grades["correct"].to_numpy(),
            grades["open_ended"].to_numpy(),
            {n: a["confidence"] for n, a in estimates.items()},
            cfg.metrics,
            cfg.progress,
        )
        store.put(
            "evaluate",
            eval_key,
            lambda tmp: write_table(tmp / "metrics.parquet", metrics),
            {"inputs": metric_inputs},
        )
    manifest["stages"]["evaluate"] = {
        "key": eval_key,
        "code": code["evaluate"],
        "cached": cached,
        "seconds": time.perf_counter() - t,
    }

    # report
    t = time.perf_counter()
    order = report.order_estimators(metrics, cfg.metrics.names[0])
    report_code = stage_fingerprint(modules=report.CODE_MODULES)
    manifest["summary"] = {
        "model": cfg.model.name,
        "task": cfg.task.name,
        "questions": len(examples),
        "num_samples": K,
        "revise_passes": R,
        "temperature": cfg.decoding.temperature,
        "max_new_tokens": cfg.decoding.max_new_tokens,
        "accuracy": float(grades["correct"].mean()),
        "estimators": list(order),
        "skipped_estimators": skipped,
    }
    manifest["stages"]["report"] = {
        "key": artifact_key("report", report_code, {"evaluate": eval_key, "report": asdict(cfg.report)}),
        "code": report_code,
        "cached": False,
    }
    config_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    path = report.write_report(
        run_dir,
        grades=grades,
        estimates=estimates,
        metrics=metrics,
        metric_names=cfg.metrics.names,
        order=order,
        alpha=cfg.metrics.alpha,
        n_bins=cfg.metrics.n_bins,
        binning=cfg.metrics.binning,
        figures=cfg.report.figures,
        formats=cfg.report.formats,
        top=cfg.report.risk_coverage_top,
        manifest={
            **manifest,
            "stages": {**manifest["stages"], "report": {**manifest["stages"]["report"], "seconds": 0.0}},
        },
        config_yaml=config_yaml,
        skipped=skipped,
    )
    manifest["stages"]["report"]["seconds"] = time.perf_counter() - t
    manifest["seconds"] = time.perf_counter() - started
    if built_before is not None:  # XLA programs this run compiled or loaded from the persistent cache
        manifest["programs"] = programs.snapshot().since(built_before).record()
    # the config as run: what load_run (`calib inspect`) reloads the task's gold answers from
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    publish(run_dir / "config.yaml")
    write_json(run_dir / "manifest.json", manifest)
    if print_summary:
        title = f"{cfg.model.name} on {cfg.task.name}: {len(examples)} questions, accuracy {grades['correct'].mean():.3f}"
        report.print_table(metrics, cfg.metrics.show, order, title)
        print(f"Report: {path}  ({manifest['seconds']:.0f} s)", flush=True)
    log.info("finished in %.1f s; report: %s", manifest["seconds"], path)
    return RunResult(run_dir, path, metrics, manifest)


def _generate(
    cfg: RunConfig,
    store: ArtifactStore,
    lm,
    style: str,
    prompts: list[str],
    manifest: dict,
    process: distributed.Process,
):
    """The generate stage: (key, greedy, samples, revise passes, code fingerprints), recorded in the manifest."""
    t = time.perf_counter()
    decoding = stages.decoding_inputs(cfg.decoding)
    gen_key, gen_inputs, spec = generation.generate_key(lm, lm.dtype_name, style, prompts, decoding)
    code = {"generate": generation.code_fingerprint()}
    passes, record = generation.run_generate(
        store, gen_key, gen_inputs, lm, prompts, spec, cfg.decoding.shard_size, cfg.progress, process
    )
    greedy, samples, revise_passes = generation.split_passes(passes, cfg.decoding.num_samples)
    manifest["stages"]["generate"] = {
        "key": gen_key,
        "code": code["generate"],
        **record,
        "seconds": time.perf_counter() - t,
    }
    return gen_key, greedy, samples, revise_passes, code
