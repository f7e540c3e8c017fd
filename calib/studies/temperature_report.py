"""What the temperature sweep leaves in its run folder, next to manifest.json and config.yaml (every file written
whole or not at all).

sweep_decoding.csv/.md  per T: accuracy, ECE, Brier, AUROC with bootstrap intervals, Full-ECE, generated tokens;
                        confidence = MSP under the model ("model") and under the sampling distribution ("sampling")
sweep_posthoc.csv/.md   the same for the greedy answers re-tempered at each T (accuracy fixed)
calibrators.csv/.md     test-split ECE/Brier/AUROC of the greedy MSP uncalibrated and after each calibrator
answers.csv             every question's greedy answer and its answer sampled at each T, with grades
sweep.png               accuracy and ECE against T, both modes (redrawn from the tables by draw_figure(run_dir))
summary.md              the tables above with the run's conditions and the fitted temperature
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calib.cache import atomic_write_text
from calib.plots import COLORS, STYLE, save_figure

METRICS = ("accuracy", "ece", "brier", "auroc")


def _cell(value: float, low: float = math.nan, high: float = math.nan, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return (
        f"{value:.{digits}f}"
        if math.isnan(low)
        else f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    )


def sweep_frame(table: Any, **columns: Any) -> pd.DataFrame:
    """A SweepTable as one flat row per T (metric, metric_low, metric_high), with extra constant columns first."""
    rows = []
    for r in table.to_records():
        row = {**columns, "T": r["temperature"], "n": r["n"]}
        for name in METRICS:
            row[name], row[f"{name}_low"], row[f"{name}_high"] = r[name]
        row["full_ece"], row["generated_tokens"] = r["full_ece"], r["generated_tokens"]
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_markdown(frame: pd.DataFrame, questions: int) -> str:
    """T | n | accuracy | ECE | Brier | AUROC | Full-ECE | tokens per answer."""
    head = "| T | n | accuracy | ECE | Brier | AUROC | token Full-ECE | tokens / answer |"
    lines = [head, "|---" * 8 + "|"]
    for r in frame.itertuples(index=False):
        cells = [_cell(getattr(r, m), getattr(r, f"{m}_low"), getattr(r, f"{m}_high")) for m in METRICS]
        fe = _cell(r.full_ece) if r.full_ece is not None else "n/a"
        tokens = "n/a" if pd.isna(r.generated_tokens) else f"{r.generated_tokens / questions:.1f}"
        lines.append(f"| {r.T:g} | {r.n} | " + " | ".join(cells) + f" | {fe} | {tokens} |")
    return "\n".join(lines)


def _describe(cal: Any) -> str:
    """A fitted calibrator's parameters in a few characters."""
    parts = [f"{k}={v:.3g}" for k, v in cal.params().items() if isinstance(v, float)]
    parts += [f"{len(v)} {k}" for k, v in cal.arrays().items()]
    return ", ".join(parts)


def calibrator_table(
    calibrated: dict[str, Any], confidence: np.ndarray, correct: np.ndarray, split, metrics
) -> pd.DataFrame:
    """Test rows only: the uncalibrated confidence, then each calibrator's output (a fitted Calibrator, an array of
    already recalibrated confidences for every row, or the reason it could not be fitted). ECE change is paired."""
    from calib.errors import CalibError
    from calib.metrics import auroc, bootstrap_ci, brier, ece, paired_bootstrap

    if split.test.size == 0:
        raise CalibError(
            "the test split is empty; lower study.temperature_sweep.calibration_fraction or use more questions"
        )
    test = split.test
    y = np.asarray(correct, np.float64)[test]
    before = np.asarray(confidence, np.float64)[test]
    opts = dict(n_resamples=metrics.n_resamples, alpha=metrics.alpha, seed=metrics.seed)
    fns = {"ece": lambda c, t: ece(c, t, n_bins=metrics.n_bins), "brier": brier, "auroc": auroc}
    rows = []
    for method, cal in {"uncalibrated": None, **calibrated}.items():
        row = {
            "method": method,
            "fitted": "",
            "n_calibration": int(split.calibration.size),
            "n_test": int(test.size),
        }
        if isinstance(cal, str):
            rows.append({**row, "fitted": cal})
            continue
        if cal is None:
            after = before
        elif isinstance(cal, np.ndarray):
            after, row["fitted"] = np.clip(cal[test], 0, 1), "token temperature, calibration-question tokens"
        else:
            after, row["fitted"] = cal.transform(before), _describe(cal)
            if getattr(
                cal, "degenerate", None
            ):  # posthoc.degenerate: a near-step fit or too few rows per class
                row["fitted"] += f" (DEGENERATE: {cal.degenerate.split(': ', 1)[1]})"
        for name, fn in fns.items():
            if name == "auroc" and y.min() == y.max():
                row[name], row[f"{name}_low"], row[f"{name}_high"] = math.nan, math.nan, math.nan
                continue
            row[name], row[f"{name}_low"], row[f"{name}_high"] = bootstrap_ci(fn, after, y, **opts)
        diff = paired_bootstrap(fns["ece"], after, before, y, **opts)
        row["ece_change"], row["ece_change_low"], row["ece_change_high"] = diff
        rows.append(row)
    return pd.DataFrame(rows)


def calibrator_markdown(frame: pd.DataFrame) -> str:
    lines = ["| method | fitted | ECE | ECE change (paired) | Brier | AUROC |", "|---" * 6 + "|"]
    for r in frame.to_dict("records"):
        cells = [
            _cell(r.get(m, math.nan), r.get(f"{m}_low", math.nan), r.get(f"{m}_high", math.nan))
            for m in ("ece", "ece_change", "brier", "auroc")
        ]
        fitted = str(r["fitted"]).replace("|", "/")
        lines.append(f"| {r['method']} | {fitted} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def answers_table(examples: list, grades: dict, confidence: dict) -> pd.DataFrame:
    """One row per question: the greedy answer and the answer sampled at each T, with grades and model MSP."""
    table = pd.DataFrame(
        {
            "question_id": [ex.id for ex in examples],
            "question": [ex.question for ex in examples],
            "category": [ex.category for ex in examples],
            "open_ended": [bool(ex.open_ended) for ex in examples],
        }
    )
    for t in [None, *sorted(k for k in grades if k is not None)]:
        name = "greedy" if t is None else f"T{t:g}"
        table[name] = grades[t]["answer"].values
        table[f"{name}_correct"], table[f"{name}_msp"] = grades[t]["correct"].values, confidence[t]
    return table


def sweep_figure(decoding: pd.DataFrame, posthoc: pd.DataFrame) -> Figure:
    """Accuracy (left) and ECE (right) against T with their intervals; token Full-ECE dashed on the right."""
    curves = [(f"decoding, {c} MSP", rows) for c, rows in decoding.groupby("confidence", sort=False)]
    curves.append(("post-hoc (greedy answers)", posthoc))
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.4, 3.2), layout="constrained")
        FigureCanvasAgg(fig)
        left, right = fig.subplots(1, 2)
        for i, (label, rows) in enumerate(curves):
            rows = rows.sort_values("T")
            for ax, metric in ((left, "accuracy"), (right, "ece")):
                if ax is left and label.startswith("decoding, sampling"):
                    continue  # the same answers as the model-MSP curve: same accuracy
                name = "decoding (re-sampled)" if ax is left and label.startswith("decoding") else label
                ax.plot(rows["T"], rows[metric], marker="o", color=COLORS[i], label=name)
                ax.fill_between(
                    rows["T"], rows[f"{metric}_low"], rows[f"{metric}_high"], color=COLORS[i], alpha=0.15
                )
        fe = posthoc.sort_values("T")
        if fe["full_ece"].notna().any():
            right.plot(
                fe["T"], fe["full_ece"], "--", color="#555555", label="token Full-ECE (reference answers)"
            )
        left.set(xlabel="temperature T", ylabel="accuracy", title="Accuracy")
        right.set(xlabel="temperature T", ylabel="ECE", title="Calibration")
        left.legend(frameon=False, fontsize=7)
        right.legend(frameon=False, fontsize=7)
    return fig


def draw_figure(out: Path) -> list[Path]:
    """sweep.png from the tables in out (so it can be redrawn without rerunning the study)."""
    fig = sweep_figure(pd.read_csv(out / "sweep_decoding.csv"), pd.read_csv(out / "sweep_posthoc.csv"))
    return save_figure(fig, out / "sweep", ["png"])


def _best(frame: pd.DataFrame, metric: str) -> str:
    """The T of the lowest metric among the temperatures with non-zero accuracy, with its accuracy beside it: at
    accuracy 0 a confidence of 0 has ECE 0, a calibrated but useless model."""
    rows = frame.dropna(subset=[metric])
    if rows.empty:
        return "undefined (no value at any T)"
    useful = rows[rows["accuracy"] > 0]
    if useful.empty:
        return "none (accuracy 0 at every T)"
    best = useful.loc[useful[metric].idxmin()]
    dropped = len(rows) - len(useful)
    note = f", {dropped} T with accuracy 0 excluded" if dropped else ""
    return f"T = {best['T']:g} (accuracy {best['accuracy']:.3f}{note})"


def summary(result: Any, frames: dict[str, pd.DataFrame], cfg: Any) -> str:
    meta, m, d = result.meta, cfg.metrics, cfg.decoding
    n = meta["questions"]
    dec = frames["decoding"]
    out = [
        f"# Temperature sweep: {meta['model']} on {meta['task']} ({n} questions)",
        "",
        f"T in {meta['temperatures']}; seed {d.seed}, at most {d.max_new_tokens} new tokens, stop {list(d.stop)}, "
        f"{meta['style']} prompts. Intervals: {100 * (1 - m.alpha):.0f}% percentile bootstrap over questions "
        f"({m.n_resamples} resamples, the same questions at every T); ECE with {m.n_bins} equal-width bins. "
        f"Token Full-ECE: teacher-forced reference answers of {meta['reference_questions']} closed questions "
        f"({meta['reference_tokens']} tokens), the same tokens at every T. Time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in meta["timings"].items()),
        "",
        "## Decoding temperature: one answer sampled at T per question",
        "",
        "Confidence = MSP under the model (untempered token log-probs, what the estimators read):",
        "",
        sweep_markdown(dec[dec["confidence"] == "model"], n),
        "",
        "Confidence = MSP under the distribution sampled from, softmax(z / T):",
        "",
        sweep_markdown(dec[dec["confidence"] == "sampling"], n),
        "",
        "## Post-hoc temperature: the greedy answers re-tempered at T (accuracy fixed)",
        "",
        sweep_markdown(frames["posthoc"], n),
        "",
        f"Lowest ECE: decoding (model MSP) {_best(dec[dec['confidence'] == 'model'], 'ece')}, decoding "
        f"(sampling MSP) {_best(dec[dec['confidence'] == 'sampling'], 'ece')}, post-hoc "
        f"{_best(frames['posthoc'], 'ece')}; lowest token Full-ECE {_best(frames['posthoc'], 'full_ece')}.",
        "",
        "## Fitted token temperature",
        "",
    ]
    f = result.fitted
    if f is None:
        out.append("Not fitted: no reference tokens on one side of the split.")
    else:
        out.append(
            f"T = {f.temperature:.3f}, fitted by NLL on {f.calibration_tokens} reference tokens of the calibration "
            f"questions; on {f.test_tokens} test-question tokens: NLL {f.test_nll[0]:.3f} -> {f.test_nll[1]:.3f}, "
            f"Full-ECE {f.test_full_ece[0]:.3f} -> {f.test_full_ece[1]:.3f} (T = 1 -> fitted)."
        )
    cal = frames["calibrators"]
    out += [
        "",
        f"## Post-hoc calibrators of the greedy MSP ({cal['n_calibration'].iloc[0]} calibration questions, "
        f"{cal['n_test'].iloc[0]} test questions)",
        "",
        "Fitted on the calibration questions only (split by question id), scored on the test questions; ECE change "
        "= after minus uncalibrated, paired bootstrap.",
        "",
        calibrator_markdown(cal),
        "",
        "Figure: [sweep.png](sweep.png)",
    ]
    return "\n".join(out) + "\n"


def write_outputs(result: Any, cfg: Any) -> None:
    out: Path = result.run_dir
    frames = {
        "decoding": pd.concat(
            [sweep_frame(t, mode="decoding", confidence=c) for c, t in result.decoding.items()],
            ignore_index=True,
        ),
        "posthoc": sweep_frame(result.posthoc, mode="posthoc", confidence="model"),
        "calibrators": result.metrics,
    }
    n = result.meta["questions"]
    for name, frame in frames.items():
        stem = "calibrators" if name == "calibrators" else f"sweep_{name}"
        atomic_write_text(out / f"{stem}.csv", frame.to_csv(index=False))
        if name == "calibrators":
            text = calibrator_markdown(frame)
        else:
            text = "\n\n".join(
                f"{name}, confidence = {c} MSP\n\n" + sweep_markdown(rows, n)
                for c, rows in frame.groupby("confidence", sort=False)
            )
        atomic_write_text(out / f"{stem}.md", text + "\n")
    atomic_write_text(out / "answers.csv", result.answers.to_csv(index=False))
    draw_figure(out)
    atomic_write_text(out / "summary.md", summary(result, frames, cfg))
