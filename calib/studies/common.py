"""What every study shares with the main job (calib.pipeline.run): the checks before anything is written, the model
and prompts, the generate stage and artifact store, and a manifest.json in the run folder that records each
generate artifact's key and whether it was reused."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from calib.cache import atomic_write_text
from calib.decode.types import Generations
from calib.pipeline import generation, stages
from calib.pipeline.config import RunConfig
from calib.pipeline.store import ArtifactStore, write_json

log = logging.getLogger("calib")


@dataclass
class Setup:
    """A study's loaded inputs and the manifest it fills in as it goes."""

    cfg: RunConfig
    run_dir: Path
    store: ArtifactStore
    examples: list
    lm: Any
    style: str
    prompts: list[str]
    started: float = field(default_factory=time.perf_counter)
    manifest: dict = field(default_factory=dict)


def prepare(cfg: RunConfig, run_dir: Path, room: int) -> Setup:
    """Folders checked writable, questions, model and prompts loaded; a prompt too long for `room` new tokens
    fails here, before anything is generated."""
    from calib.decode.generate import encode_prompts
    from calib.models import load_model

    started = time.perf_counter()
    stages.check_output_folders(cfg.artifacts_dir, run_dir)
    examples = stages.load_examples(cfg.task)
    log.info("task %s: %d questions", cfg.task.name, len(examples))
    lm = load_model(cfg.model.name, dtype=cfg.model.dtype, seed=cfg.model.seed, weights=cfg.model.weights)
    prompts = stages.build_prompts(examples, lm, cfg.task)
    encode_prompts(lm, prompts, room)
    store = ArtifactStore(cfg.artifacts_dir)
    manifest = {"study": cfg.study.name, "artifacts_dir": str(store.root), "stages": {"generate": {}}}
    style = stages.prompt_style(cfg.task, lm)
    return Setup(cfg, run_dir, store, examples, lm, style, prompts, started, manifest)


def generate(setup: Setup, label: str, **changes: Any) -> tuple[list[Generations], str]:
    """(passes, key) of one generate artifact: the run's decoding settings with `changes` (e.g. temperature=0.7),
    keyed like the main job's, so it is read back when stored and shared with any run of the same settings."""
    cfg, started = setup.cfg, time.perf_counter()
    settings = {**stages.decoding_inputs(cfg.decoding), **changes}
    key, inputs, spec = generation.generate_key(
        setup.lm, setup.lm.dtype_name, setup.style, setup.prompts, settings
    )
    passes, record = generation.run_generate(
        setup.store, key, inputs, setup.lm, setup.prompts, spec, cfg.decoding.shard_size, cfg.progress
    )
    seconds = time.perf_counter() - started
    setup.manifest["stages"]["generate"][label] = {"key": key, **record, "seconds": seconds}
    return passes, key


def finish(setup: Setup, summary: dict, print_summary: bool) -> Path:
    """Write the run's config.yaml and manifest.json next to the study's outputs and say where they are."""
    run_dir, manifest = setup.run_dir, setup.manifest
    manifest["summary"] = summary
    manifest["seconds"] = time.perf_counter() - setup.started
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(setup.cfg)))
    write_json(run_dir / "manifest.json", manifest)
    report = run_dir / "summary.md"
    if print_summary:
        print(report.read_text(), flush=True)
        print(f"Study {setup.cfg.study.name}: tables, figures and summary.md in {run_dir}", flush=True)
    log.info("study %s finished in %.0f s: %s", setup.cfg.study.name, manifest["seconds"], run_dir)
    return report
