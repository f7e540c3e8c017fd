"""The report stage: what a run leaves in its folder, and the table printed at the end.

results.parquet   one row per question x estimator: confidence, raw score, correctness, category
metrics.csv       estimator x metric with bootstrap intervals (one block of rows per question group)
metrics.md        the same as Markdown tables
figures/          reliability diagrams (one panel per estimator, per-bin counts, ECE) and risk-coverage curves of
                  the best estimators by AUROC, in report.formats (PNG + PDF by default)
report.md         ties them together with accuracy per category, stage provenance and the run's config
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calib.cache import atomic_write_text, writing
from calib.pipeline.evaluate import METRICS, wide_table
from calib.pipeline.store import publish, write_table

CODE_MODULES = ("calib.pipeline.report", "calib.plots")  # what the report's code fingerprint covers


def results_table(grades: pd.DataFrame, estimates: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Long per-question table joining the grades with every estimator's confidence and raw score."""
    keep = ["question_id", "question", "category", "open_ended", "answer", "extracted", "correct", "score"]
    parts = []
    for name, arrays in estimates.items():
        part = grades[keep].copy()
        part.insert(4, "estimator", name)
        part["confidence"] = np.asarray(arrays["confidence"], dtype=np.float64)
        part["raw"] = np.asarray(arrays["raw"], dtype=np.float64)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _cell(value: float, low: float, high: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{value:.3f}"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def order_estimators(metrics: pd.DataFrame, by: str | None) -> list[str]:
    """Estimators best first by one metric of the "all" group (NaN last), else in their original order."""
    names = list(dict.fromkeys(metrics["estimator"]))
    if by is None or by not in set(metrics["metric"]):
        return names
    part = metrics[(metrics["group"] == "all") & (metrics["metric"] == by)].set_index("estimator")["value"]
    sign = -1.0 if METRICS[by].higher_is_better else 1.0
    return sorted(names, key=lambda n: (math.isnan(part.get(n, math.nan)), sign * part.get(n, 0.0)))


def markdown_table(
    metrics: pd.DataFrame, group: str, metric_names: Sequence[str], order: Sequence[str]
) -> str:
    part = metrics[metrics["group"] == group]
    header = [
        "estimator",
        "n",
        *(f"{METRICS[m].label} {'↑' if METRICS[m].higher_is_better else '↓'}" for m in metric_names),
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for name in order:
        rows = part[part["estimator"] == name].set_index("metric")
        if rows.empty:
            continue
        n = int(rows["n"].iloc[0])
        missing = int(rows["n_missing"].iloc[0])
        cells = [_cell(*rows.loc[m, ["value", "low", "high"]].astype(float)) for m in metric_names]
        lines.append(
            "| " + " | ".join([name, f"{n}" + (f" ({missing} missing)" if missing else ""), *cells]) + " |"
        )
    return "\n".join(lines)


def write_metrics(
    run_dir: Path, metrics: pd.DataFrame, metric_names: Sequence[str], order: Sequence[str], alpha: float
) -> None:
    wide = wide_table(metrics, list(metric_names))
    wide["estimator"] = pd.Categorical(wide["estimator"], categories=list(order), ordered=True)
    groups = list(dict.fromkeys(metrics["group"]))
    wide["group"] = pd.Categorical(wide["group"], categories=groups, ordered=True)
    wide = wide.sort_values(["group", "estimator"]).astype({"estimator": str, "group": str})
    atomic_write_text(run_dir / "metrics.csv", wide.to_csv(index=False, float_format="%.6g"))
    level = round(100 * (1 - alpha))
    blocks = [f"Values are point estimates with {level}% percentile-bootstrap intervals over questions."]
    for group in groups:
        blocks.append(
            f"## {group.replace('_', '-')} questions\n\n"
            + markdown_table(metrics, group, metric_names, order)
        )
    atomic_write_text(run_dir / "metrics.md", "# Metrics\n\n" + "\n\n".join(blocks) + "\n")


def best_by_auroc(
    estimates: dict, names: Sequence[str], correct: np.ndarray, top: int
) -> tuple[list[str], str]:
    """The `top` names with the highest AUROC (NaN last, ties in the given order) and a sentence saying so; when
    AUROC is undefined (every answer has the same grade) the first `top` in the given order, and why."""
    from calib.metrics import auroc

    if correct.min() == correct.max():
        return list(names[:top]), f"first {min(top, len(names))} in table order (AUROC undefined: one grade)"
    scores = {n: float(auroc(estimates[n]["confidence"], correct)) for n in names}
    ranked = sorted(names, key=lambda n: (math.isnan(scores[n]), -np.nan_to_num(scores[n], nan=0.0)))
    chosen = ranked[:top]
    what = f"best {len(chosen)} of {len(names)} by AUROC" if len(names) > top else "all, by AUROC"
    return chosen, what


def write_figures(
    run_dir: Path,
    grades: pd.DataFrame,
    estimates: dict,
    order: Sequence[str],
    n_bins: int,
    binning: str,
    top: int,
    formats: Sequence[str] = ("png", "pdf"),
) -> list[str]:
    """Reliability diagrams (grid, one panel per estimator, with per-bin counts and ECE) and risk-coverage curves
    of the `top` estimators by AUROC."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from calib.metrics import ece
    from calib.plots import reliability_diagram, risk_coverage_curve, save_figure

    correct = grades["correct"].to_numpy(np.float64)
    usable = [n for n in order if np.isfinite(estimates[n]["confidence"]).any()]
    written = []
    if usable:
        cols = min(5, len(usable))
        rows = math.ceil(len(usable) / cols)
        # A plain grid (no constrained layout): with 25 panels it dominates the drawing time.
        fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.4))
        FigureCanvasAgg(fig)
        axes = np.atleast_1d(fig.subplots(rows, cols, gridspec_kw={"hspace": 0.5, "wspace": 0.35})).reshape(
            -1
        )
        for ax, name in zip(axes, usable):
            conf = estimates[name]["confidence"]
            valid = np.isfinite(conf)
            value = float(ece(conf[valid], correct[valid], n_bins=n_bins, binning=binning))
            reliability_diagram(
                conf[valid],
                correct[valid],
                n_bins=n_bins,
                binning=binning,
                ax=ax,
                title=f"{name}: ECE {value:.3f}",
                show_counts=True,
            )
            ax.get_legend().remove()
        fig.suptitle(
            f"Reliability ({binning}, {n_bins} bins): bars = accuracy, hatched = gap to mean confidence, "
            "dashed = perfect calibration, numbers = questions per bin"
        )
        for ax in axes[len(usable) :]:
            ax.set_visible(False)
        written += save_figure(fig, run_dir / "figures" / "reliability", formats)
    complete = [n for n in usable if np.isfinite(estimates[n]["confidence"]).all()]
    if complete:
        chosen, what = best_by_auroc(estimates, complete, correct, top)
        fig = risk_coverage_curve(
            {n: estimates[n]["confidence"] for n in chosen}, correct, title=f"Risk-coverage ({what})"
        )
        fig.set_size_inches(5.5, 4.5)
        written += save_figure(fig, run_dir / "figures" / "risk_coverage", formats)
    return [str(Path(p).relative_to(run_dir)) for p in written]


def accuracy_table(grades: pd.DataFrame) -> str:
    rows = ["| category | kind | questions | greedy accuracy | sample accuracy |", "|---|---|---:|---:|---:|"]
    for category, part in grades.groupby("category", sort=False):
        kind = "open-ended" if part["open_ended"].iloc[0] else "closed"
        rows.append(
            f"| {category or '-'} | {kind} | {len(part)} | {part['correct'].mean():.3f} | {part['sample_accuracy'].mean():.3f} |"
        )
    rows.append(
        f"| **all** | | {len(grades)} | {grades['correct'].mean():.3f} | {grades['sample_accuracy'].mean():.3f} |"
    )
    return "\n".join(rows)


def write_report(
    run_dir: Path,
    *,
    grades: pd.DataFrame,
    estimates: dict[str, dict[str, np.ndarray]],
    metrics: pd.DataFrame,
    metric_names: Sequence[str],
    order: Sequence[str],
    alpha: float,
    n_bins: int,
    binning: str,
    figures: bool,
    formats: Sequence[str],
    top: int,
    manifest: dict,
    config_yaml: str,
    skipped: dict[str, str],
) -> Path:
    """Write every output of the run into run_dir and return the path of report.md."""
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    write_table(run_dir / "results.parquet", results_table(grades, estimates))
    write_metrics(run_dir, metrics, metric_names, order, alpha)
    figure_files = (
        write_figures(run_dir, grades, estimates, order, n_bins, binning, top, formats) if figures else []
    )
    summary = manifest["summary"]
    parts = [
        f"# calib run: {summary['model']} on {summary['task']}",
        f"{summary['questions']} questions, greedy answer + {summary['num_samples']} samples each "
        f"(temperature {summary['temperature']}, up to {summary['max_new_tokens']} new tokens"
        + (f", revised {summary['revise_passes']} times" if summary.get("revise_passes") else "")
        + "). "
        f"Greedy accuracy **{grades['correct'].mean():.3f}**. "
        f"Outputs: `results.parquet` (per question x estimator), `metrics.csv`, `metrics.md`, `figures/`.",
        "## Accuracy\n\n" + accuracy_table(grades),
        "## Estimators (all questions)\n\n"
        f"Sorted by {METRICS[metric_names[0]].label}; {round(100 * (1 - alpha))}% bootstrap intervals. "
        "Per-group tables: `metrics.md`.\n\n" + markdown_table(metrics, "all", metric_names, order),
    ]
    if figure_files:
        parts.append(
            "## Figures\n\n"
            + "\n".join(f"![{Path(f).stem}]({f})" for f in figure_files if f.endswith((".png", ".svg")))
        )
    if skipped:
        parts.append(
            "## Skipped estimators\n\n" + "\n".join(f"- `{n}`: {why}" for n, why in sorted(skipped.items()))
        )
    parts.append(provenance(manifest))
    parts.append("## Config\n\n```yaml\n" + config_yaml.rstrip() + "\n```")
    path = run_dir / "report.md"
    atomic_write_text(path, "\n\n".join(parts) + "\n")
    for name in ("metrics.csv", "metrics.md", "report.md"):
        publish(run_dir / name)
    return path


def provenance(manifest: dict) -> str:
    """Each stage's key, code fingerprint, reuse and time, each estimator's code, and the library versions: what a
    reader needs to tell whether two reports came from the same code."""
    rows = ["| stage | key | code | reused | seconds |", "|---|---|---|---|---:|"]
    for stage, info in manifest["stages"].items():
        code = info.get("code", "-")
        code = f"`{code}`" if isinstance(code, str) else "per estimator (below)"
        reused = "yes" if info.get("cached") else "no"
        rows.append(
            f"| {stage} | `{info.get('key', '-')}` | {code} | {reused} | {info.get('seconds', 0):.1f} |"
        )
    estimates = manifest["stages"].get("estimate", {})
    per_estimator = [
        f"| {name} | `{estimates['keys'][name]}` | `{code}` | {'no' if name in estimates.get('computed', ()) else 'yes'} |"
        for name, code in sorted(estimates.get("code", {}).items())
    ]
    libraries = ", ".join(f"{k} {v}" for k, v in manifest.get("libraries", {}).items() if v)
    return "\n\n".join(
        [
            "## Provenance",
            f"Artifacts: `{manifest['artifacts_dir']}` (reused when the key matches; a key hashes the stage's inputs "
            "and the fingerprint of its code, so edited code is recomputed).",
            "\n".join(rows),
            "\n".join(["| estimator | key | code | reused |", "|---|---|---|---|", *per_estimator]),
            f"Libraries: {libraries}.",
        ]
    )


def print_table(metrics: pd.DataFrame, show: Sequence[str], order: Sequence[str], title: str) -> None:
    """The estimator x metric table of all questions on the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("estimator", no_wrap=True)
    table.add_column("n", justify="right")
    for m in show:
        table.add_column(f"{METRICS[m].label} {'↑' if METRICS[m].higher_is_better else '↓'}", justify="right")
    part = metrics[metrics["group"] == "all"]
    for name in order:
        rows = part[part["estimator"] == name].set_index("metric")
        if rows.empty:
            continue
        cells = [_cell(*rows.loc[m, ["value", "low", "high"]].astype(float)) for m in show]
        table.add_row(name, str(int(rows["n"].iloc[0])), *cells)
    Console(width=max(120, Console().width)).print(table)
