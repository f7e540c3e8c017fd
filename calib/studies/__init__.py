"""Named studies that go beyond one runner job, each an experiment preset run by `calib experiment=NAME`
(see experiments/<name>/README.md): the preset sets `study.name`, and calib.pipeline.run.run() hands the run here.

- scaling: confidence quality against compute, sweeping samples K and pause-and-revise passes R.
- temperature_sweep: decoding against post-hoc temperature (accuracy, ECE, token Full-ECE per T), fitted calibrators.

A study generates through the main job's generate stage and artifact store (calib.studies.common), and writes its
tables, figures, summary.md and manifest.json into the run folder.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

MODULES = {
    "scaling": "calib.studies.scaling",
    "temperature_sweep": "calib.studies.temperature",
    "calibration_tuning": "calib.tuning.study",  # issue 22
}


def run_study(cfg, run_dir: str | Path, print_summary: bool = True):
    """Run (or resume) the study named by cfg.study.name into run_dir; returns its result (a RunResult)."""
    from calib.pipeline.config import validate

    validate(cfg)
    return import_module(MODULES[cfg.study.name]).run_study(cfg, Path(run_dir), print_summary)
