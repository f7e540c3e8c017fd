"""Revise passes in the runner: every answer is revised R times, the revision estimators run on the passes, the
final pass is what gets graded, and a lost shard is regenerated bit for bit."""

import shutil

import numpy as np
import pandas as pd

from calib.pipeline import RunConfig, generation, run
from calib.pipeline.store import ArtifactStore

REVISION = [
    "revision_agreement",
    "revision_final_confidence",
    "revision_sample_stability",
    "revision_stability",
]


def test_revise_passes_feed_the_revision_estimators(tmp_path):
    cfg = RunConfig()
    cfg.model.name = "tiny-llama"
    cfg.task.limit = 4
    cfg.decoding.num_samples = 2
    cfg.decoding.max_new_tokens = 5
    cfg.decoding.shard_size = 2
    cfg.decoding.revise_passes = 1
    cfg.estimators.names = [*REVISION, "msp"]
    cfg.estimators.semantic = "exact"
    cfg.metrics.names = ["brier", "ece"]
    cfg.metrics.show = ["brier"]
    cfg.metrics.n_resamples = 0
    cfg.report.figures = False
    cfg.artifacts_dir = str(tmp_path / "artifacts")
    cfg.progress = False
    result = run(cfg, tmp_path / "run", print_summary=False)

    results = pd.read_parquet(tmp_path / "run" / "results.parquet")
    assert set(results["estimator"]) == {*REVISION, "msp"}
    assert results["confidence"].between(0, 1).all()
    assert result.manifest["summary"]["revise_passes"] == 1

    store = ArtifactStore(cfg.artifacts_dir)
    key = result.manifest["stages"]["generate"]["key"]
    passes, record = generation.run_generate(store, key, {}, None, [], None, 2, progress=False)
    assert record["cached"] and len(passes) == 2 and passes[1].num_prompts == 4
    graded = results[results["estimator"] == "msp"]["answer"].tolist()
    assert graded == [row[0] for row in passes[1].texts]  # the final pass's greedy answer is graded

    # Lose one shard of a finished run: the rerun regenerates it bit for bit (revise passes included).
    folder = store.path("generate", key)
    (folder / "meta.json").unlink()
    shutil.rmtree(generation.shard_folder(folder, 2, 4))
    again = run(cfg, tmp_path / "again", print_summary=False)
    assert again.manifest["stages"]["generate"]["generated_shards"] == 1
    resumed, _ = generation.run_generate(store, key, {}, None, [], None, 2, progress=False)
    for before, after in zip(passes, resumed):
        assert before.texts == after.texts
        for a, b in zip(before.token_logprobs, after.token_logprobs):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(results, pd.read_parquet(tmp_path / "again" / "results.parquet"))
