"""Estimators that read a trained artifact of calib.tuning: `calibration_tuned` (base model + LoRA adapter asked the
P(True) question) and `probe` (a probe on the answer's hidden state). Each takes `path`, the artifact's folder (what
`calib experiment=calibration_tuning` prints and records); without one it needs `trained`, so "all" skips it.

Both also act as a judge for multi_hypothesis: `judge(bundle, items)` gives the validity of (question index, answer)
pairs, as `reflexive.p_true` does for the untuned model.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from calib.errors import CalibError
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.reflexive import p_true_prompt
from calib.estimators.registry import register_estimator
from calib.semantic.judge import binary_choice_probability

ADAPTER_JSON = "adapter.json"
ADAPTER_FILE = "adapter.safetensors"


def read_meta(path: str | Path, name: str, what: str) -> dict:
    meta = Path(path) / name
    if not meta.is_file():
        raise CalibError(f"{what}: no {name} in {path}; pass the folder a calibration_tuning run wrote")
    return json.loads(meta.read_text())


@functools.lru_cache(maxsize=2)
def _base_model(name: str, dtype: str):
    from calib.models import load_model

    return load_model(name, dtype=dtype)


@functools.lru_cache(maxsize=2)
def tuned_model(path: str):
    """The base model named in adapter.json with the adapter merged into its weights (digest checked)."""
    from calib.pipeline.store import read_arrays
    from calib.tuning.lora import merged_lm

    meta = read_meta(path, ADAPTER_JSON, "calibration_tuned")
    lm = _base_model(meta["model"], meta["dtype"])
    if lm.digest != meta["model_digest"]:
        raise CalibError(
            f"calibration_tuned: adapter {path} was trained on weights {meta['model_digest'][:12]}, but "
            f"{meta['model']} now loads {lm.digest[:12]}; retrain it"
        )
    adapters = read_arrays(Path(path) / ADAPTER_FILE)
    return merged_lm(
        lm, adapters, float(meta["lora"]["alpha"]) / int(meta["lora"]["rank"]), f"lora-{meta['key']}"
    )


class _Trained:
    """Shared: the artifact path, and needs that say `trained` until a path is given."""

    base_needs: frozenset[Need] = frozenset()

    def __init__(self, path: str | None = None):
        self.path = None if path in (None, "") else str(path)
        self.needs = self.base_needs if self.path else self.base_needs | {Need.TRAINED}

    def _require(self) -> str:
        if self.path is None:
            raise CalibError(f"{self.name}: no path; {Need.TRAINED.fix}")
        return self.path


@register_estimator
class CalibrationTuned(_Trained):
    """P(True) of the greedy answer asked of the base model + a calibration-tuned LoRA adapter (Kapoor et al. 2024)."""

    name = "calibration_tuned"
    base_needs = frozenset({Need.GREEDY, Need.QUESTIONS, Need.SCORE})

    def judge(self, bundle: Bundle, items: Sequence[tuple[int, str]]) -> np.ndarray:
        from calib.decode import score

        lm = tuned_model(self._require())
        prompts = [bundle.wrap_prompt(p_true_prompt(bundle.questions[i], a)) for i, a in items]
        return binary_choice_probability(lambda p, c: score(lm, p, c), prompts, " (A)", " (B)")

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        p = self.judge(bundle, list(enumerate(bundle.greedy_texts)))
        return EstimatorResult(confidence=p, raw=p, higher_raw_means="confident")


@register_estimator
class ProbeEstimator(_Trained):
    """A trained probe's P(correct) from the greedy answer's hidden state (layer and token as trained)."""

    name = "probe"
    base_needs = frozenset({Need.GREEDY, Need.SCORE})

    def judge(self, bundle: Bundle, items: Sequence[tuple[int, str]]) -> np.ndarray:
        from calib.tuning.forward import answer_states
        from calib.tuning.probe import Probe

        path = self._require()
        probe = Probe.load(path)
        lm = _base_model(probe.info["model"], probe.info["dtype"])
        if lm.digest != probe.info["model_digest"]:
            raise CalibError(
                f"probe: {path} was trained on other weights of {probe.info['model']}; retrain it"
            )
        prompts = [bundle.greedy.prompts[i] for i, _ in items]
        states = answer_states(
            lm, prompts, [a for _, a in items], [probe.info["layer"]], progress=bundle.progress
        )
        token = 0 if probe.info["token"] == "mean" else 1
        return probe.predict_proba(states[:, 0, token])

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        p = self.judge(bundle, list(enumerate(bundle.greedy_texts)))
        return EstimatorResult(confidence=p, raw=p, higher_raw_means="confident")


JUDGES = {"calibration_tuned": CalibrationTuned, "probe": ProbeEstimator}
