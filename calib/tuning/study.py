"""`calib experiment=calibration_tuning`: train a probe or a LoRA adapter on N graded answers of the training pool,
then evaluate it on the evaluation split next to untuned P(True), MSP and semantic entropy.

    calib experiment=calibration_tuning study.calibration_tuning.n=1000 study.calibration_tuning.method=lora

1. training data: the first N questions of `tuning_train`, answered greedily (a generate artifact, as every run's)
   and graded; their ids are checked against `tuning_eval` (calib.tasks.tuning.check_disjoint_ids);
2. the trained artifact, `<artifacts_dir>/tune/<key>/`: key = the generate and grade keys, method and settings, and
   the code of calib.tuning but its report (calib.fingerprint), so a rerun with the same settings trains nothing; LoRA checkpoints
   go to `<artifacts_dir>/tune-checkpoints/<key>/` first, so a killed run resumes where it stopped;
3. evaluation: the main job (calib.pipeline.run) on `tuning_eval` with the tuned estimator given the artifact's path,
   in `<run dir>/eval`; its metrics carry bootstrap intervals and `calib compare` gives paired differences.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from calib.errors import CalibError
from calib.pipeline.config import RunConfig

log = logging.getLogger("calib")
STAGE = "tune"
REPORT_MODULE = "calib.tuning.report"  # reads trained artifacts' evaluations, makes none: not in the tune key


def training_modules() -> list[str]:
    """The code that makes a trained artifact (its key): every module of calib.tuning but the report, so a new
    module joins the key without an edit here."""
    import pkgutil

    import calib.tuning

    names = (f"calib.tuning.{m.name}" for m in pkgutil.iter_modules(calib.tuning.__path__))
    return sorted(n for n in names if n != REPORT_MODULE)  # (the package's __init__ is a docstring)


def _settings(cfg: RunConfig) -> dict:
    t = cfg.study.calibration_tuning
    if t.method not in ("lora", "probe"):
        raise CalibError(f"study.calibration_tuning.method {t.method!r} is not 'lora' or 'probe'")
    return dataclasses.asdict(t)


def training_data(
    cfg: RunConfig, lm, store, progress: bool
) -> tuple[list, list[str], list[str], np.ndarray, dict]:
    """(examples, prompts, greedy answers, labels, keys) of the first N training questions."""
    from calib.pipeline import generation, stages
    from calib.tasks import load_task
    from calib.tasks.tuning import check_disjoint_ids, evaluation_examples

    t = cfg.study.calibration_tuning
    examples = list(load_task("tuning_train", n=t.n, seed=t.seed, shuffle=False).examples)
    check_disjoint_ids([ex.id for ex in examples], [ex.id for ex in evaluation_examples("all")])
    prompts = stages.build_prompts(examples, lm, cfg.task)
    style = stages.prompt_style(cfg.task, lm)
    settings = {**stages.decoding_inputs(cfg.decoding), "num_samples": 0, "revise_passes": 0}
    key, inputs, spec = generation.generate_key(lm, lm.dtype_name, style, prompts, settings)
    (greedy, *_), _ = generation.run_generate(
        store, key, inputs, lm, prompts, spec, cfg.decoding.shard_size, progress
    )
    grading = dict(cfg.task.grading)
    grade_key = stages.grade_key(key, stages.task_fingerprint(examples), grading)
    table, _ = stages.run_grade(store, grade_key, examples, greedy, None, grading)
    answers = [row[0] for row in greedy.texts]
    return (
        examples,
        list(greedy.prompts),
        answers,
        table["correct"].to_numpy(np.float64),
        {
            "generate": key,
            "grade": grade_key,
        },
    )


def tune_key(cfg: RunConfig, lm, keys: dict) -> str:
    from calib.fingerprint import stage_fingerprint
    from calib.pipeline.store import artifact_key

    # what is evaluated afterwards (eval_kind, eval_limit) does not change what is trained
    settings = {k: v for k, v in _settings(cfg).items() if not k.startswith("eval_")}
    inputs = {**keys, "model_digest": lm.digest, "dtype": lm.dtype_name, "settings": settings}
    return artifact_key(STAGE, stage_fingerprint(modules=training_modules()), inputs)


def train_artifact(cfg: RunConfig, lm, store, progress: bool = True) -> tuple[Path, dict]:
    """The trained artifact's folder (trained now, or read back) and a record of how long each part took."""
    t = cfg.study.calibration_tuning
    started = time.perf_counter()
    examples, prompts, answers, labels, keys = training_data(cfg, lm, store, progress)
    data_seconds = time.perf_counter() - started
    key = tune_key(cfg, lm, keys)
    record = {
        "key": key,
        **keys,
        "n": len(examples),
        "accuracy": float(labels.mean()),
        "data_seconds": data_seconds,
    }
    if store.has(STAGE, key):
        return store.path(STAGE, key), {**record, "cached": True, **store.meta(STAGE, key)}
    meta = {
        "model": cfg.model.name,
        "dtype": cfg.model.dtype,
        "model_digest": lm.digest,
        "key": key,
        "train_ids": [ex.id for ex in examples],
        "settings": _settings(cfg),
    }
    started = time.perf_counter()
    if t.method == "lora":
        write, info = _train_lora(cfg, lm, store, key, examples, answers, labels, meta, progress)
    else:
        write, info = _train_probe(cfg, lm, prompts, answers, labels, meta, progress)
    info["train_seconds"] = time.perf_counter() - started
    folder = store.put(STAGE, key, write, {**info, "n": len(examples), "method": t.method})
    return folder, {**record, "cached": False, **info}


def _train_lora(cfg, lm, store, key, examples, answers, labels, meta, progress):
    from calib.pipeline.store import write_arrays
    from calib.tuning.estimators import ADAPTER_FILE, ADAPTER_JSON
    from calib.tuning.lora import LoraConfig, parameter_count
    from calib.tuning.train import TrainConfig, build_examples, train_lora

    t = cfg.study.calibration_tuning
    lora = LoraConfig(rank=t.rank, alpha=t.alpha, layers=t.layers)
    train_cfg = TrainConfig(
        lora=lora,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        batch_size=t.batch_size,
        epochs=t.epochs,
        kl_weight=t.kl_weight,
        seed=t.seed,
    )
    rows = build_examples(lm, [ex.question for ex in examples], answers, labels)
    adapters, record = train_lora(lm, rows, train_cfg, store.root / "tune-checkpoints" / key, progress)
    info = {
        "adapter_parameters": parameter_count(adapters),
        "peak_rss_bytes": record["peak_rss_bytes"],
        "steps": record["steps"],
        "loss_first_25": float(np.mean(record["loss"][:25])) if record["loss"] else None,
        "loss_last_25": float(np.mean(record["loss"][-25:])) if record["loss"] else None,
    }
    full = {**meta, **info, "lora": dataclasses.asdict(lora), "loss": record["loss"], "kl": record["kl"]}

    def write(tmp: Path) -> None:
        write_arrays(tmp / ADAPTER_FILE, adapters)
        (tmp / ADAPTER_JSON).write_text(json.dumps(full, sort_keys=True))

    return write, info


def _train_probe(cfg, lm, prompts, answers, labels, meta, progress):
    from calib.tuning.forward import answer_states
    from calib.tuning.probe import ProbeConfig, fit_probe_search

    t = cfg.study.calibration_tuning
    n_layers = lm.config.num_layers
    layers = list(t.probe_layers) or sorted({n_layers // 2, (3 * n_layers) // 4, n_layers})
    states = answer_states(lm, prompts, answers, layers, progress=progress)
    probe = fit_probe_search(
        states, labels, layers, ProbeConfig(kind=t.probe_kind, seed=t.seed), {**meta, "model": meta["model"]}
    )
    info = {"layer": probe.info["layer"], "token": probe.info["token"], "val_loss": probe.info["val_loss"]}
    return probe.save, info


def run_study(cfg: RunConfig, run_dir: Path, print_summary: bool = True):
    """Train (or read back) the artifact, then evaluate it with the main job on the evaluation split."""
    from omegaconf import OmegaConf

    from calib.models import load_model
    from calib.pipeline import stages
    from calib.pipeline.run import run as run_main_job
    from calib.pipeline.store import ArtifactStore, write_json

    t = cfg.study.calibration_tuning
    _settings(cfg)
    stages.check_output_folders(cfg.artifacts_dir, run_dir)
    store = ArtifactStore(cfg.artifacts_dir)
    lm = load_model(cfg.model.name, dtype=cfg.model.dtype, seed=cfg.model.seed)
    folder, record = train_artifact(cfg, lm, store, cfg.progress)
    log.info("calibration tuning (%s, N=%d): artifact %s", t.method, t.n, folder)
    name = "calibration_tuned" if t.method == "lora" else "probe"
    eval_cfg = OmegaConf.to_object(OmegaConf.structured(cfg))
    eval_cfg.study.name = None
    eval_cfg.task.name = "tuning_eval"
    eval_cfg.task.options = {"kind": t.eval_kind}
    eval_cfg.task.limit = t.eval_limit
    names = [n for n in eval_cfg.estimators.names if n not in ("all",)]
    eval_cfg.estimators.names = list(dict.fromkeys([*names, name]))
    params = dict(eval_cfg.estimators.params)
    params[name] = {"path": str(folder)}
    if "multi_hypothesis_tuned" in eval_cfg.estimators.names:
        params["multi_hypothesis_tuned"] = {"judge": name, "judge_path": str(folder)}
    eval_cfg.estimators.params = params
    result = run_main_job(eval_cfg, Path(run_dir) / "eval", print_summary=print_summary)
    write_json(
        Path(run_dir) / "tuning.json", {**record, "artifact": str(folder), "eval_run": str(result.run_dir)}
    )
    return result
