"""Temperature sweep (issue 9): what a decoding temperature and a post-hoc temperature each do to accuracy and
calibration, next to a fitted token temperature and the post-hoc calibrators, for one model and task.

    calib experiment=temperature_sweep task.limit=100 study.temperature_sweep.temperatures=[0.7,1.0,1.3]

At each T of the grid:
- decoding: one answer per question sampled at T (the same seed at every T), graded; its confidence is the MSP
  under the model (untempered token log-probs, what the estimators read) and under the distribution sampled from;
- post-hoc: the greedy answers (generated once) re-tempered at T, so accuracy cannot move;
- Full-ECE: token-level Full-ECE of softmax(z / T) on teacher-forced reference answers (closed questions, capped).
On a stable split of the questions by id, a token temperature is fitted on the calibration questions' reference
tokens and Platt/beta/isotonic/histogram on their greedy MSP; everything is scored on the test questions only.

The greedy answers and each T's answers are generate-stage artifacts of the artifact store, keyed by their decoding
settings, so a rerun with the same settings generates nothing. Tables and the figure go into the run folder
(calib.studies.temperature_report).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.decode.types import Generations
from calib.errors import CalibError
from calib.pipeline.config import RunConfig
from calib.pipeline.run import RunResult
from calib.studies import common

log = logging.getLogger("calib")

CALIBRATORS = ("platt", "beta", "isotonic", "histogram")


# ---- generation: greedy once, one sample per T, each a generate artifact ----------------------------------------
def generate_all(setup: common.Setup) -> tuple[Generations, dict[float, Generations]]:
    """(greedy answers, {T: one answer sampled at T}), each read back from the store when it holds it."""
    study = setup.cfg.study.temperature_sweep
    top = study.top_logprobs
    once = dict(revise_passes=0, top_logprobs=top)  # one pass, more top tokens for post-hoc re-tempering
    (greedy,), _ = common.generate(setup, "greedy", num_samples=0, temperature=1.0, **once)
    sampled = {}
    for t in study.temperatures:
        (gens,), _ = common.generate(
            setup, f"T={t:g}", num_samples=1, temperature=float(t), include_greedy=False, **once
        )
        sampled[float(t)] = gens
    return greedy, sampled


def msp(gens: Generations, which: str = "token_logprobs") -> np.ndarray:
    """Sequence probability of each question's first answer (NaN for an empty answer: it has no confidence)."""
    rows = getattr(gens, which)
    return np.array([np.exp(np.sum(r[0], dtype=np.float64)) if len(r[0]) else np.nan for r in rows])


# ---- token level: teacher-forced reference answers --------------------------------------------------------------
def reference_questions(examples: list) -> list[int]:
    """Questions whose reference answer is teacher-forced: the closed ones (an open-ended question's reference is one
    of many valid answers, not a draw from the truth), or all when there are none."""
    closed = [i for i, ex in enumerate(examples) if not ex.open_ended]
    return closed or list(range(len(examples)))


def reference_logits(
    lm: Any, examples: list, prompts: list[str], style: str, max_tokens: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits [n, V], labels [n], question index [n]) of the reference answers, stopping before max_tokens."""
    from calib.recalibrate import token_logits

    chosen, conts, counts, total = [], [], [], 0
    for i in reference_questions(examples):
        answer = examples[i].answer_groups[0][0]
        cont = answer if style == "chat" else f" {answer}"  # a completion prompt ends in "A:"
        n = len(lm.tokenizer(cont, add_special_tokens=False)["input_ids"])
        if total + n > max_tokens and chosen:
            break
        chosen.append(i)
        conts.append(cont)
        counts.append(n)
        total += n
    logits, labels = token_logits(lm, [prompts[i] for i in chosen], conts)
    return logits, labels, np.repeat(np.asarray(chosen), counts)


@dataclass
class FittedTemperature:
    """A token temperature fitted on calibration questions' reference tokens, judged on the test questions'."""

    temperature: float
    calibration_tokens: int
    test_tokens: int
    test_nll: tuple[float, float]  # at T = 1, at the fitted T
    test_full_ece: tuple[float, float]


def fit_token_temperature(
    logits: np.ndarray, labels: np.ndarray, question: np.ndarray, split: Any, n_bins: int
) -> FittedTemperature | None:
    """Fit on the calibration questions' tokens only; None when either side has no reference tokens."""
    from calib.recalibrate import TemperatureScaler, full_ece_by_temperature

    cal = np.isin(question, split.calibration)
    test = np.isin(question, split.test)
    if not cal.any() or not test.any():
        log.warning("no reference tokens on one side of the split: the token temperature is not fitted")
        return None
    scaler = TemperatureScaler().fit(logits[cal], labels[cal])
    t = scaler.temperature
    fe = full_ece_by_temperature(logits[test], labels[test], sorted({1.0, t}), n_bins=n_bins)
    nll = (TemperatureScaler(1.0).nll(logits[test], labels[test]), scaler.nll(logits[test], labels[test]))
    return FittedTemperature(t, int(cal.sum()), int(test.sum()), nll, (fe[1.0], fe[t]))


# ---- post-hoc calibrators on the greedy MSP ---------------------------------------------------------------------
def fit_calibrators(kinds: Sequence[Any], confidence: Any, correct: Any, split: Any) -> dict[str, Any]:
    """{kind: calibrator fitted on the calibration rows, or why it could not be} (test labels are never read).

    A kind is a name of make_calibrator or an unfitted Calibrator."""
    from calib.recalibrate import fit_on_split

    fitted: dict[str, Any] = {}
    for kind in kinds:
        name = kind if isinstance(kind, str) else kind.kind or type(kind).__name__
        try:
            fitted[name] = fit_on_split(kind, confidence, correct, split)
        except CalibError as err:  # e.g. Platt with only wrong answers in the calibration split
            fitted[name] = str(err)
    return fitted


# ---- the study ---------------------------------------------------------------------------------------------------
@dataclass
class StudyResult(RunResult):
    """RunResult (metrics = the calibrator table, report = summary.md) plus the sweep's tables."""

    decoding: dict[str, Any]  # {"model": SweepTable, "sampling": SweepTable}: MSP under the model / sampler
    posthoc: Any  # SweepTable of the re-tempered greedy answers
    fitted: FittedTemperature | None
    answers: pd.DataFrame  # question, greedy and per-T answers with grades
    meta: dict


def run_study(cfg: RunConfig, run_dir: Path, print_summary: bool = True) -> StudyResult:
    """Generate (or reuse), grade, sweep both modes, fit on the calibration split, write everything to run_dir."""
    from calib.pipeline import stages
    from calib.recalibrate import SweepPoint, full_ece_by_temperature, posthoc_points, split_by_ids
    from calib.recalibrate import temperature_sweep as sweep
    from calib.studies import temperature_report as report

    study, m = cfg.study.temperature_sweep, cfg.metrics
    setup = common.prepare(cfg, run_dir, cfg.decoding.max_new_tokens)
    lm, examples = setup.lm, setup.examples
    timings = {"setup": time.perf_counter() - setup.started}

    t0 = time.perf_counter()
    greedy, sampled = generate_all(setup)
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    grading = dict(cfg.task.grading)
    grades = {None: stages.grade_table(examples, greedy, None, grading)}
    grades.update({t: stages.grade_table(examples, g, None, grading) for t, g in sampled.items()})
    correct = {t: g["correct"].to_numpy(np.float64) for t, g in grades.items()}
    timings["grade"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    temps = sorted(sampled)
    prompts = setup.prompts
    logits, labels, question = reference_logits(
        lm, examples, prompts, setup.style, study.max_reference_tokens
    )
    full_ece = full_ece_by_temperature(logits, labels, temps, n_bins=m.n_bins)
    timings["token_logits"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    options = dict(n_bins=m.n_bins, n_resamples=m.n_resamples, alpha=m.alpha, seed=m.seed)
    decoding = {}
    for name, which in (("model", "token_logprobs"), ("sampling", "sample_logprobs")):
        points = {}
        for t in temps:
            c = msp(sampled[t], which)
            keep = np.isfinite(c)
            points[t] = SweepPoint(
                np.clip(c[keep], 0, 1), correct[t][keep], full_ece[t], sampled[t].num_generated_tokens()
            )
        decoding[name] = sweep(points, mode="decoding", **options)
    vocab = lm.config.vocab_size
    points = posthoc_points(greedy, correct[None], temps, vocab)
    for t, point in points.items():
        point.full_ece, point.generated_tokens = full_ece[t], greedy.num_generated_tokens()
    posthoc = sweep(points, mode="posthoc", **options)
    timings["sweep"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    split = split_by_ids([ex.id for ex in examples], study.calibration_fraction)
    fitted = fit_token_temperature(logits, labels, question, split, m.n_bins)
    base = msp(greedy)
    keep = np.isfinite(base)
    rows = np.flatnonzero(keep)
    kept_split = split_by_ids([examples[i].id for i in rows], study.calibration_fraction)
    calibrated = fit_calibrators(study.calibrators, base[keep], correct[None][keep], kept_split)
    if fitted is not None:
        from calib.recalibrate import temper_generations

        calibrated[f"temperature (T = {fitted.temperature:.3f})"] = msp(
            temper_generations(greedy, fitted.temperature, vocab)
        )[keep]
    table = report.calibrator_table(calibrated, base[keep], correct[None][keep], kept_split, m)
    timings["calibrate"] = time.perf_counter() - t0

    meta = {
        "model": cfg.model.name,
        "task": cfg.task.name,
        "questions": len(examples),
        "style": setup.style,
        "temperatures": temps,
        "calibration_fraction": study.calibration_fraction,
        "calibration_questions": int(split.calibration.size),
        "test_questions": int(split.test.size),
        "reference_tokens": int(labels.size),
        "reference_questions": len(np.unique(question)),
        "vocab_size": vocab,
        "decoding": asdict(cfg.decoding),
        "metrics": asdict(m),
        "top_logprobs": study.top_logprobs,
        "fitted_temperature": None if fitted is None else asdict(fitted),
        "greedy_generated_tokens": greedy.num_generated_tokens(),
        "timings": timings,
    }
    answers = report.answers_table(examples, grades, {None: base, **{t: msp(g) for t, g in sampled.items()}})
    result = StudyResult(
        run_dir, run_dir / "summary.md", table, setup.manifest, decoding, posthoc, fitted, answers, meta
    )
    t0 = time.perf_counter()
    report.write_outputs(result, cfg)
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - setup.started
    common.finish(setup, meta, print_summary)
    return result
