"""`calib experiment=calibration_tuning` end to end on the tiny random Llama: the trained artifact is stored under a
content key and reused, the evaluation run scores the tuned estimator, the probe and multi_hypothesis with the tuned
judge next to the untuned ones, and an adapter is refused on other weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from calib.errors import CalibError
from calib.pipeline.config import compose
from calib.pipeline.run import run
from calib.tasks.tuning import evaluation_examples


def _cfg(tmp_path, method: str, extra=()):
    return compose(
        [
            "experiment=calibration_tuning",
            "model=tiny-llama",
            f"study.calibration_tuning.method={method}",
            "study.calibration_tuning.n=16",
            "study.calibration_tuning.eval_limit=12",
            "study.calibration_tuning.batch_size=8",
            "study.calibration_tuning.layers=1",
            "study.calibration_tuning.probe_layers=[1,2]",
            "decoding.num_samples=2",
            "decoding.max_new_tokens=4",
            "metrics.n_resamples=20",
            "report.figures=false",
            "progress=false",
            f"artifacts_dir={tmp_path / 'artifacts'}",
            *extra,
        ]
    )


@pytest.mark.slow
def test_lora_and_probe_studies_train_store_and_evaluate(tmp_path):
    names = "estimators.names=[msp,p_true,multi_hypothesis,multi_hypothesis_tuned]"
    result = run(_cfg(tmp_path, "lora", [names]), tmp_path / "lora", print_summary=False)
    record = json.loads((tmp_path / "lora" / "tuning.json").read_text())
    assert not record["cached"] and record["n"] == 16 and record["steps"] == 2
    meta = json.loads((tmp_path / "artifacts" / "tune" / record["key"] / "adapter.json").read_text())
    eval_ids = {ex.id for ex in evaluation_examples("all")}
    assert len(meta["train_ids"]) == 16 and not set(meta["train_ids"]) & eval_ids
    metrics = result.metrics
    assert {"calibration_tuned", "p_true", "multi_hypothesis_tuned"} <= set(metrics["estimator"])
    tuned = metrics[metrics["estimator"] == "calibration_tuned"]["value"].to_numpy()
    assert np.isfinite(tuned).any()
    # a rerun trains nothing: the artifact is read back by its key
    run(_cfg(tmp_path, "lora", [names]), tmp_path / "lora2", print_summary=False)
    assert json.loads((tmp_path / "lora2" / "tuning.json").read_text())["cached"]
    # the probe: layer and token chosen on validation among the candidates
    run(_cfg(tmp_path, "probe"), tmp_path / "probe", print_summary=False)
    rec = json.loads((tmp_path / "probe" / "tuning.json").read_text())
    probe = json.loads((tmp_path / "artifacts" / "tune" / rec["key"] / "probe.json").read_text())
    assert probe["layer"] in (1, 2) and probe["token"] in ("mean", "last")
    assert len(probe["search"]) == 4


def test_bad_method_and_missing_path(tmp_path):
    from calib.estimators import get_estimator
    from calib.estimators.base import Need

    with pytest.raises(CalibError, match="method"):
        run(_cfg(tmp_path, "forest"), tmp_path / "x", print_summary=False)
    est = get_estimator("calibration_tuned")
    assert Need.TRAINED in est.needs  # so "all" skips it rather than failing
    with pytest.raises(CalibError, match=r"no adapter\.json"):
        from calib.tuning.estimators import tuned_model

        tuned_model(str(tmp_path))


def test_the_tune_key_follows_the_training_code_not_the_report():
    """A trained artifact's key covers every module of calib.tuning that trains (a new one included by listing the
    package), and not the report that only reads finished runs: editing a figure never retrains."""
    import pkgutil

    import calib.tuning
    from calib.tuning.study import REPORT_MODULE, training_modules

    every = {f"calib.tuning.{m.name}" for m in pkgutil.iter_modules(calib.tuning.__path__)}
    assert REPORT_MODULE in every and REPORT_MODULE not in training_modules()
    assert set(training_modules()) == every - {REPORT_MODULE}
    assert {"calib.tuning.lora", "calib.tuning.train", "calib.tuning.probe"} <= set(training_modules())
