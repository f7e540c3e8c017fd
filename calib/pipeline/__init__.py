"""The experiment runner: configs, cached resumable stages (generate, grade, estimate, evaluate, report), comparison.

    from calib.pipeline import RunConfig, run
    cfg = RunConfig(); cfg.model.name = "tiny-llama"; cfg.task.limit = 8
    result = run(cfg, "out/runs/try")          # result.report -> out/runs/try/report.md

The `calib` command (calib/cli.py) composes RunConfig from configs/ with Hydra and calls run().
"""

from calib.pipeline.config import RunConfig, validate
from calib.pipeline.run import RunResult, run
from calib.pipeline.store import ArtifactStore, artifact_key

__all__ = ["ArtifactStore", "RunConfig", "RunResult", "artifact_key", "run", "validate"]
