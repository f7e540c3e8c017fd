"""The experiment runner: configs, cached resumable stages (generate, grade, estimate, evaluate, report), comparison.

    from calib.pipeline import compose, run
    cfg = compose(["model=tiny-llama", "task.limit=8"])   # the config `calib model=tiny-llama task.limit=8` runs
    result = run(cfg, "out/runs/try")                      # result.report -> out/runs/try/report.md
    tables = load_run("out/runs/try")                      # questions, answers, clusters, estimates, metrics
    run_generations("vllm.jsonl", "out/runs/byo")          # answers made elsewhere (docs/generations.md)

The `calib` command (calib/cli.py) composes RunConfig from configs/ with Hydra and calls run().
"""

from calib.pipeline.config import RunConfig, compose, validate
from calib.pipeline.inspect import RunTables, load_run
from calib.pipeline.outside import read_generations_file, run_generations
from calib.pipeline.run import RunResult, run
from calib.pipeline.store import ArtifactStore, artifact_key

__all__ = [
    "ArtifactStore",
    "RunConfig",
    "RunResult",
    "RunTables",
    "artifact_key",
    "compose",
    "load_run",
    "read_generations_file",
    "run",
    "run_generations",
    "validate",
]
