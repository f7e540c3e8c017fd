"""Temperature sweep (issue 9): what a decoding temperature and a post-hoc temperature each do to accuracy and
calibration, next to a fitted token temperature and the post-hoc calibrators, for one model and task.

At each T of the grid:
- decoding: one answer per question sampled at T (the same seed at every T), graded; its confidence is the MSP
  under the model (untempered token log-probs, what the estimators read) and under the distribution sampled from;
- post-hoc: the greedy answers (generated once) re-tempered at T, so accuracy cannot move;
- Full-ECE: token-level Full-ECE of softmax(z / T) on teacher-forced reference answers (closed questions, capped).
On a stable split of the questions by id, a token temperature is fitted on the calibration questions' reference
tokens and Platt/beta/isotonic/histogram on their greedy MSP; everything is scored on the test questions only.

    python -m calib.studies.temperature --out out/temperature_sweep

Defaults come from configs/experiment/temperature_sweep.yaml. Generations are stored under <out>/generations/, so a
rerun with the same settings does not regenerate. Tables and the figure come from calib.studies.temperature_report.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.decode import generate
from calib.decode.types import Generations
from calib.errors import CalibError
from calib.pipeline.config import RunConfig, validate
from calib.pipeline.generation import concat_generations, load_generations, save_generations
from calib.pipeline.store import content_hash, publish, write_json
from calib.recalibrate import _checks

log = logging.getLogger("calib")

VERSION = 1  # bump when what a stored generation contains changes
DEFAULT_TEMPERATURES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
CALIBRATORS = ("platt", "beta", "isotonic", "histogram")


@dataclass
class StudyConfig:
    """The runner's config (model, task, decoding, metrics) plus what this study sweeps and fits."""

    run: RunConfig
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    calibration_fraction: float = 0.5  # share of questions (by id hash) the calibrators are fitted on
    calibrators: tuple[str, ...] = CALIBRATORS
    max_reference_tokens: int = 2000  # teacher-forced logits take tokens x vocabulary x 4 bytes on the host
    top_logprobs: int = 20  # stored per token; post-hoc re-tempering approximates the tail beyond them


def check_config(cfg: StudyConfig) -> None:
    """One CalibError naming the first bad value."""
    from calib.recalibrate import calibrator_kinds

    validate(cfg.run)
    if not cfg.temperatures:
        raise CalibError("temperatures: the list is empty; give at least one, e.g. 0.7,1.0,1.3")
    for t in cfg.temperatures:
        _checks.temperature(t)
    if len(set(cfg.temperatures)) != len(cfg.temperatures):
        raise CalibError(f"temperatures={list(cfg.temperatures)}: each temperature once, please")
    if not 0 < cfg.calibration_fraction < 1:
        raise CalibError(f"calibration_fraction={cfg.calibration_fraction}: use a number strictly in (0, 1)")
    for kind in cfg.calibrators:
        if kind not in calibrator_kinds():
            raise CalibError(f"unknown calibrator {kind!r}; choose from {', '.join(calibrator_kinds())}")
    _checks.positive_int(cfg.max_reference_tokens, "max_reference_tokens")
    _checks.positive_int(cfg.top_logprobs, "top_logprobs")


# ---- generation: greedy once, one sample per T, stored per (T, shard) -------------------------------------------
def generate_all(
    lm: Any, prompts: list[str], cfg: StudyConfig, out: Path, progress: bool
) -> tuple[Generations, dict[float, Generations]]:
    """(greedy answers, {T: one answer sampled at T}), reusing every shard already stored under out."""
    from calib.cache import atomic_dir
    from calib.progress import progress_bar

    d = cfg.run.decoding
    settings = {
        "version": VERSION,
        "model": lm.digest,
        "dtype": cfg.run.model.dtype,
        "prompts": content_hash(prompts),
        "max_new_tokens": d.max_new_tokens,
        "top_p": d.top_p,
        "top_k": d.top_k,
        "min_p": d.min_p,
        "stop": list(d.stop),
        "seed": d.seed,
        "top_logprobs": cfg.top_logprobs,
    }
    folder = out / "generations" / content_hash(settings)[:20]
    write_json(folder / "settings.json", settings)
    starts = range(0, len(prompts), d.shard_size)
    jobs = [(t, s) for t in [None, *cfg.temperatures] for s in starts]
    parts: dict[float | None, list[Generations]] = {}
    for t, start in progress_bar(
        jobs, f"generate ({len(prompts)} questions)", enabled=progress, unit="shard"
    ):
        stop = min(start + d.shard_size, len(prompts))
        target = folder / ("greedy" if t is None else f"T{t:g}") / f"shard-{start:06d}-{stop:06d}"
        if not (target / "texts.json").is_file():
            gens = generate(
                lm,
                prompts[start:stop],
                num_samples=1,
                max_new_tokens=d.max_new_tokens,
                temperature=1.0 if t is None else float(t),
                top_p=d.top_p,
                top_k=d.top_k,
                min_p=d.min_p,
                greedy=t is None,
                stop=tuple(d.stop),
                seed=d.seed,
                prompt_index_offset=start,
                top_logprobs=cfg.top_logprobs,
            )
            with atomic_dir(target) as tmp:
                save_generations(gens, tmp)
                publish(tmp)
        parts.setdefault(t, []).append(load_generations(target))
    joined = {t: concat_generations(p) for t, p in parts.items()}
    greedy = joined.pop(None)
    return greedy, {float(t): g for t, g in joined.items()}


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


# ---- the study --------------------------------------------------------------------------------------------------
@dataclass
class StudyResult:
    out: Path
    decoding: dict[str, Any]  # {"model": SweepTable, "sampling": SweepTable}: MSP under the model / sampler
    posthoc: Any  # SweepTable of the re-tempered greedy answers
    calibrators: pd.DataFrame  # method, fitted, test metrics before/after with intervals
    fitted: FittedTemperature | None
    answers: pd.DataFrame  # question, greedy and per-T answers with grades
    meta: dict = field(default_factory=dict)


def run_study(cfg: StudyConfig, out: str | Path, progress: bool = True) -> StudyResult:
    """Generate (or reuse), grade, sweep both modes, fit on the calibration split, write everything to out."""
    from calib.decode.generate import encode_prompts
    from calib.models import load_model
    from calib.pipeline import stages
    from calib.recalibrate import SweepPoint, full_ece_by_temperature, posthoc_points, split_by_ids
    from calib.recalibrate import temperature_sweep as sweep
    from calib.studies import temperature_report as report

    check_config(cfg)
    out, m = Path(out), cfg.run.metrics
    timings, started = {}, time.perf_counter()
    examples = stages.load_examples(cfg.run.task)
    lm = load_model(cfg.run.model.name, dtype=cfg.run.model.dtype, seed=cfg.run.model.seed)
    style = stages.prompt_style(cfg.run.task, lm)
    prompts = stages.build_prompts(examples, lm, cfg.run.task)
    encode_prompts(lm, prompts, cfg.run.decoding.max_new_tokens)  # a prompt too long fails now
    timings["setup"] = time.perf_counter() - started

    t0 = time.perf_counter()
    greedy, sampled = generate_all(lm, prompts, cfg, out, progress)
    timings["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    grading = dict(cfg.run.task.grading)
    grades = {None: stages.grade_table(examples, greedy, None, grading)}
    grades.update({t: stages.grade_table(examples, g, None, grading) for t, g in sampled.items()})
    correct = {t: g["correct"].to_numpy(np.float64) for t, g in grades.items()}
    timings["grade"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    temps = sorted(sampled)
    logits, labels, question = reference_logits(lm, examples, prompts, style, cfg.max_reference_tokens)
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
    split = split_by_ids([ex.id for ex in examples], cfg.calibration_fraction)
    fitted = fit_token_temperature(logits, labels, question, split, m.n_bins)
    base = msp(greedy)
    keep = np.isfinite(base)
    rows = np.flatnonzero(keep)
    kept_split = split_by_ids([examples[i].id for i in rows], cfg.calibration_fraction)
    calibrated = fit_calibrators(cfg.calibrators, base[keep], correct[None][keep], kept_split)
    if fitted is not None:
        from calib.recalibrate import temper_generations

        calibrated[f"temperature (T = {fitted.temperature:.3f})"] = msp(
            temper_generations(greedy, fitted.temperature, vocab)
        )[keep]
    table = report.calibrator_table(calibrated, base[keep], correct[None][keep], kept_split, m)
    timings["calibrate"] = time.perf_counter() - t0

    meta = {
        "model": cfg.run.model.name,
        "task": cfg.run.task.name,
        "questions": len(examples),
        "style": style,
        "temperatures": temps,
        "calibration_fraction": cfg.calibration_fraction,
        "calibration_questions": int(split.calibration.size),
        "test_questions": int(split.test.size),
        "reference_tokens": int(labels.size),
        "reference_questions": len(np.unique(question)),
        "vocab_size": vocab,
        "decoding": asdict(cfg.run.decoding),
        "metrics": asdict(m),
        "top_logprobs": cfg.top_logprobs,
        "fitted_temperature": None if fitted is None else asdict(fitted),
        "greedy_generated_tokens": greedy.num_generated_tokens(),
        "timings": timings,
    }
    answers = report.answers_table(examples, grades, {None: base, **{t: msp(g) for t, g in sampled.items()}})
    result = StudyResult(out, decoding, posthoc, table, fitted, answers, meta)
    t0 = time.perf_counter()
    report.write_outputs(result, cfg)
    timings["report"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    write_json(out / "meta.json", meta)
    log.info("temperature sweep finished in %.0f s: %s", timings["total"], out)
    return result


# ---- command line -----------------------------------------------------------------------------------------------
def _list(text: str, what: str, cast: type) -> tuple:
    try:
        return tuple(cast(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise CalibError(
            f"{what}: cannot read {text!r}; give a comma-separated list, e.g. 0.7,1.0,1.3"
        ) from None


def parse_args(argv: list[str] | None = None) -> tuple[StudyConfig, Path, bool]:
    """The study's config: configs/experiment/temperature_sweep.yaml, then these options, then Hydra overrides."""
    from calib.pipeline.config import compose

    p = argparse.ArgumentParser(
        prog="python -m calib.studies.temperature", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--out", required=True, help="folder for the tables, the figure and the stored generations"
    )
    p.add_argument("--model", help="model.name (built-in name, gguf:PATH, hf:PATH, tiny-llama)")
    p.add_argument("--task", help="task.name, e.g. mixed")
    p.add_argument("--limit", type=int, help="task.limit: questions to use")
    p.add_argument("--temperatures", default="0.7,0.8,0.9,1.0,1.1,1.2,1.3", help="the T grid")
    p.add_argument("--calibration-fraction", type=float, default=0.5, help="share of questions to fit on")
    p.add_argument("--calibrators", default=",".join(CALIBRATORS), help="post-hoc calibrators to fit")
    p.add_argument("--max-reference-tokens", type=int, default=2000, help="cap on teacher-forced tokens")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of the run config, e.g. decoding.seed=1")
    a = p.parse_args(argv)
    overrides = ["experiment=temperature_sweep"]
    overrides += [f"model.name={a.model}"] if a.model else []
    overrides += [f"task.name={a.task}"] if a.task else []
    overrides += [f"task.limit={a.limit}"] if a.limit else []
    cfg = StudyConfig(
        compose([*overrides, *a.overrides]),
        temperatures=_list(a.temperatures, "--temperatures", float),
        calibration_fraction=a.calibration_fraction,
        calibrators=_list(a.calibrators, "--calibrators", str),
        max_reference_tokens=a.max_reference_tokens,
    )
    return cfg, Path(a.out), not a.quiet


def main(argv: list[str] | None = None) -> None:
    from calib.cache import enable_compilation_cache

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    enable_compilation_cache()  # an entry point: programs compiled once per machine
    try:
        cfg, out, progress = parse_args(argv)
        check_config(cfg)
        result = run_study(cfg, out, progress)
    except CalibError as err:
        print(f"calib.studies.temperature: error: {err}", file=sys.stderr)
        sys.exit(2)
    print((result.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
