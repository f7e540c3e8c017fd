"""`calib compare`: one table (and plot) of the metrics of many runs, e.g. every run of a sweep.

A run is any folder holding the `metrics.csv` and `manifest.json` a calib run writes (a study run, e.g.
`calib experiment=scaling`, writes its own tables instead and is not compared). Runs are labelled by the
overrides in which they differ (read from Hydra's `.hydra/overrides.yaml`), so a sweep over
decoding.num_samples=1,5,10 gives columns `decoding.num_samples=1`, `...=5`, `...=10`. After a multirun the
`CompareCallback` (configs/config.yaml) writes compare.csv / compare_paired.csv / compare.md / compare_<metric>
figures (in the sweep's report.formats) into the sweep folder.

Cells show each run's value with its own bootstrap interval; `–` means the run did not compute that estimator and
`undef` that it did but the metric has no value (AUROC when every answer has the same grade). Below each metric's
table, the paired difference of every run against the first (reference) run, per estimator, over the questions both
answered (calib.pipeline.compare_paired). Figures join runs with lines only for an ordered numeric sweep value.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.cache import atomic_write_text
from calib.errors import CalibError
from calib.pipeline.evaluate import METRICS

log = logging.getLogger("calib")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Every run folder at or below the given paths, in a stable order."""
    runs: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise CalibError(f"compare: {path} does not exist; pass run or sweep folders")
        found = [
            p.parent for p in sorted(path.rglob("metrics.csv")) if (p.parent / "manifest.json").is_file()
        ]
        runs += [r for r in found if r not in runs]
    if not runs:
        studies = sorted({s for path in map(Path, paths) for s in study_names(path)})
        why = (
            f"; these are {', '.join(studies)} study runs, whose tables are in each run folder"
            if studies
            else ""
        )
        raise CalibError(
            f"compare: no finished runs (folders with metrics.csv) under {', '.join(map(str, paths))}{why}"
        )
    return runs


def study_names(path: Path) -> list[str]:
    """Studies (calib.studies) run at or below path: they write their own tables, no metrics.csv to compare."""
    import json

    manifests = [p for p in [path / "manifest.json", *path.rglob("*/manifest.json")] if p.is_file()]
    return [name for p in manifests if (name := json.loads(p.read_text()).get("study"))]


def _overrides(run: Path) -> dict[str, str]:
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    from omegaconf import OmegaConf

    items = OmegaConf.to_container(OmegaConf.load(path)) or []
    pairs = (str(item).split("=", 1) for item in items if "=" in str(item))
    return {k.lstrip("+~"): v for k, v in pairs if not k.startswith("hydra")}


def run_labels(runs: Sequence[Path]) -> dict[Path, str]:
    """Label each run by the overrides that differ between runs (else by its folder name)."""
    overrides = {run: _overrides(run) for run in runs}
    keys = sorted({k for o in overrides.values() for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides.values()}) > 1]
    labels = {}
    for run in runs:
        label = ",".join(f"{k}={overrides[run].get(k, '-')}" for k in varying)
        labels[run] = label or run.name
    if len(set(labels.values())) < len(runs):  # same overrides (e.g. reruns): fall back to the folder names
        labels = {run: str(run) for run in runs}
    return labels


def collect(runs: Sequence[Path]) -> pd.DataFrame:
    """Long table of every run's metrics: run, label, group, estimator, metric, value, low, high."""
    labels = run_labels(runs)
    parts = []
    for run in runs:
        wide = pd.read_csv(run / "metrics.csv")
        for metric in [c for c in wide.columns if c in METRICS]:
            part = wide[["group", "estimator", metric]].rename(columns={metric: "value"})
            part["low"] = wide.get(f"{metric}_low", np.nan)
            part["high"] = wide.get(f"{metric}_high", np.nan)
            part["metric"] = metric
            part["run"] = str(run)
            part["label"] = labels[run]
            parts.append(part)
    return pd.concat(parts, ignore_index=True)[
        ["run", "label", "group", "estimator", "metric", "value", "low", "high"]
    ]


NOT_RUN, UNDEFINED = "–", "undef"  # a cell of an estimator the run did not compute / a metric with no value


def pivot(long: pd.DataFrame, metric: str, group: str = "all", column: str = "value") -> pd.DataFrame:
    """estimator x run-label values (or `column`: low, high) of one metric, best estimator (mean over runs) first."""
    part = long[(long["metric"] == metric) & (long["group"] == group)]
    if part.empty:
        raise CalibError(f"compare: no values of metric {metric!r} for group {group!r} in these runs")
    labels = list(dict.fromkeys(part["label"]))
    part = part.drop_duplicates(["estimator", "label"])
    values = part.pivot(index="estimator", columns="label", values="value").reindex(columns=labels)
    table = part.pivot(index="estimator", columns="label", values=column).reindex(columns=labels)
    ascending = not METRICS[metric].higher_is_better
    return table.loc[values.mean(axis=1).sort_values(ascending=ascending, na_position="last").index]


def cell(value: float, low: float = math.nan, high: float = math.nan, sign: bool = False) -> str:
    """`value [low, high]`, `undef` when the value is NaN (the metric has no value, e.g. AUROC with one grade)."""
    if value is None or math.isnan(value):
        return UNDEFINED
    f = "+.3f" if sign else ".3f"
    if math.isnan(low) or math.isnan(high):
        return f"{value:{f}}"
    return f"{value:{f}} [{low:{f}}, {high:{f}}]"


def cells(long: pd.DataFrame, metric: str, group: str = "all") -> pd.DataFrame:
    """estimator x run-label strings: value with the run's own bootstrap interval, `–` where not run."""
    part = long[(long["metric"] == metric) & (long["group"] == group)].drop_duplicates(["estimator", "label"])
    order = pivot(long, metric, group)
    text = pd.DataFrame(NOT_RUN, index=order.index, columns=order.columns)
    for r in part.itertuples(index=False):
        text.loc[r.estimator, r.label] = cell(r.value, r.low, r.high)
    return text


def difference_cells(diffs: pd.DataFrame, metric: str, order: Sequence[str]) -> pd.DataFrame:
    """estimator x run-label strings of the paired differences to the reference run, `–` where not paired."""
    part = diffs[diffs["metric"] == metric]
    labels = list(dict.fromkeys(part["label"]))
    text = pd.DataFrame(NOT_RUN, index=list(order), columns=labels)
    for r in part.itertuples(index=False):
        if r.estimator in text.index:
            text.loc[r.estimator, r.label] = cell(r.difference, r.low, r.high, sign=True)
    return text


def short_label(label: str, width: int = 18) -> str:
    """`decoding.num_samples=5,task=x` -> `num_samples=5` / `task=x` on two lines; long parts wrapped."""
    import textwrap

    short = []
    for part in label.split(","):
        key, eq, value = part.partition("=")
        short.append(f"{key.rsplit('.', 1)[-1]}={value}" if eq else part)
    return "\n".join(textwrap.fill(p, width) for p in short)


def _numeric_axis(labels: Sequence[str]) -> list[float] | None:
    """x values when every label is one `key=number` of the same key."""
    keys = {label.split("=", 1)[0] for label in labels if "=" in label and "," not in label}
    if len(keys) != 1 or any("=" not in label or "," in label for label in labels):
        return None
    try:
        return [float(label.split("=", 1)[1]) for label in labels]
    except ValueError:
        return None


def plot(
    long: pd.DataFrame,
    metric: str,
    path: Path,
    group: str = "all",
    top: int = 8,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """The `top` estimators' values with their intervals per run: joined by lines only when the runs are an
    ordered numeric sweep (one `key=number` each), markers otherwise; the legend outside, on the right."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from calib.plots import COLORS, save_figure

    values, low, high = (pivot(long, metric, group, c).head(top) for c in ("value", "low", "high"))
    labels = list(values.columns)
    x = _numeric_axis(labels)
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    n = len(values)
    if x is None:  # unordered runs: dodge the estimators sideways so their intervals do not overlap
        positions = np.arange(len(labels), dtype=np.float64)
        offsets = (np.arange(n) - (n - 1) / 2) * min(0.08, 0.7 / max(n, 1))
    else:
        positions, offsets = np.asarray(x), np.zeros(n)
        order = np.argsort(positions)
        positions, labels = positions[order], [labels[i] for i in order]
        values, low, high = (t[labels] for t in (values, low, high))
    for i, name in enumerate(values.index):
        v, lo, hi = (t.loc[name].to_numpy(np.float64) for t in (values, low, high))
        err = np.nan_to_num(np.vstack([v - lo, hi - v]))
        ax.errorbar(
            positions + offsets[i],
            v,
            yerr=err,
            marker="o",
            markersize=4,
            capsize=2,
            linestyle="-" if x is not None else "none",
            color=COLORS[i % len(COLORS)],
            label=name,
        )
    if x is None:
        ax.set_xticks(positions, [short_label(label) for label in labels], fontsize=7)
        ax.set_xlim(positions[0] - 0.5, positions[-1] + 0.5)
    else:
        ax.set_xticks(positions, [f"{v:g}" for v in positions])
        ax.set_xlabel(labels[0].split("=", 1)[0])
    ax.set_ylabel(METRICS[metric].label)
    ax.set_title(
        f"{METRICS[metric].label} per run, {group} questions (bars: bootstrap intervals)", fontsize=9
    )
    fig.legend(loc="outside right upper", fontsize=7, frameon=False)
    return save_figure(fig, path, formats)


def markdown(text: pd.DataFrame) -> str:
    """A table of already formatted cells, estimators down, runs across."""
    header = "| estimator | " + " | ".join(map(str, text.columns)) + " |"
    lines = [header, "|---|" + "---:|" * len(text.columns)]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in zip(text.index, text.to_numpy(str))]
    return "\n".join(lines)


LEGEND = (
    f"Cells: value [low, high], each run's own bootstrap interval over its questions. `{NOT_RUN}` = the run did not "
    f"compute that estimator; `{UNDEFINED}` = computed, but the metric has no value (e.g. AUROC when every answer has "
    "the same grade)."
)


def paired_note(diffs: pd.DataFrame, metric: str) -> str:
    part = diffs[diffs["metric"] == metric]
    n = sorted(set(part["n"].astype(int)))
    shared = f"{n[0]}" if len(n) == 1 else f"{n[0]}–{n[-1]}"
    return (
        f"Paired differences: run minus the reference run `{part['reference'].iloc[0]}`, per estimator, over the "
        f"{shared} questions both answered (matched by question id); each bootstrap resample draws the same questions "
        "for both runs, each run keeping its own grades. An interval excluding 0 is a difference these questions "
        "support."
    )


def compare(
    paths: Sequence[str | Path],
    metrics: Sequence[str] = ("auroc", "ece"),
    group: str = "all",
    out: str | Path | None = None,
    figures: bool = True,
    formats: Sequence[str] | None = None,
) -> dict[str, dict[str, pd.DataFrame]]:
    """Write compare.csv (long), compare_paired.csv, compare.md (per metric: values with intervals, then paired
    differences to the first run) and compare_<metric>.<format> into `out` (default: the first path). Figure formats:
    `formats`, else the first run's report.formats, else png. Returns per metric {"values", "cells", "differences"}."""
    from calib.pipeline.compare_paired import paired_differences

    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CalibError(f"compare: unknown metric {unknown[0]!r}; metrics: {', '.join(METRICS)}")
    runs = find_runs(paths)
    long = collect(runs)
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", long.to_csv(index=False, float_format="%.6g"))
    present = [m for m in metrics if not long[long["metric"] == m].empty]
    if not present:
        raise CalibError(f"compare: none of the metrics {', '.join(metrics)} were computed in these runs")
    diffs = paired_differences(runs, run_labels(runs), present, group)
    atomic_write_text(out / "compare_paired.csv", diffs.to_csv(index=False, float_format="%.6g"))
    tables, blocks = {}, [f"# Comparison of {len(runs)} runs ({group} questions)", LEGEND]
    for m in present:
        values = pivot(long, m, group)
        text = cells(long, m, group)
        paired = difference_cells(diffs, m, values.index) if (diffs["metric"] == m).any() else None
        tables[m] = {"values": values, "cells": text, "differences": paired}
        blocks.append(f"## {METRICS[m].label}\n\n{markdown(text)}")
        if paired is not None:
            blocks.append(f"{paired_note(diffs, m)}\n\n{markdown(paired)}")
    atomic_write_text(out / "compare.md", "\n\n".join(blocks) + "\n")
    if figures:
        formats = list(formats or run_formats(runs[0]))
        for m in present:
            plot(long, m, out / f"compare_{m}", group, formats=formats)
    return tables


def run_formats(run: Path) -> list[str]:
    """report.formats of a run (its config.yaml), else png."""
    path = run / "config.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        saved = (OmegaConf.to_container(OmegaConf.load(path)) or {}).get("report", {}) or {}
        if saved.get("formats"):
            return list(saved["formats"])
    return ["png"]


def print_tables(tables: dict[str, dict[str, pd.DataFrame]], where: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    for metric, parts in tables.items():
        for key, title in (("cells", "by run"), ("differences", "minus the reference run (paired)")):
            frame = parts[key]
            if frame is None:
                continue
            table = Table(title=f"{METRICS[metric].label} {title}", title_justify="left")
            table.add_column("estimator", no_wrap=True)
            for label in frame.columns:
                table.add_column(str(label), justify="right")
            for name, row in zip(frame.index, frame.to_numpy(str)):
                table.add_row(name, *row)
            console.print(table)
    console.print(
        f"{NOT_RUN} = not run, {UNDEFINED} = no value (e.g. AUROC with one grade); intervals: bootstrap"
    )
    console.print(f"Comparison: {where / 'compare.md'}")


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object  # type: ignore[assignment,misc]


class CompareCallback(Callback):
    """After a multirun: compare every finished run of the sweep and print the tables."""

    def __init__(self, metrics: Sequence[str] = ("auroc", "ece")) -> None:
        self.metrics = tuple(metrics)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        report = config.get("report") or {}
        try:
            tables = compare(
                [sweep_dir],
                self.metrics,
                figures=bool(report.get("figures", True)),
                formats=list(report.get("formats") or ["png"]),
            )
        except CalibError as err:
            log.warning("no comparison written: %s", err)
            return
        print_tables(tables, sweep_dir)
