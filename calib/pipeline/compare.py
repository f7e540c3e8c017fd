"""`calib compare`: one table (and plot) of the metrics of many runs, e.g. every run of a sweep.

A run is any folder holding the `metrics.csv` and `manifest.json` a calib run writes (a study run, e.g.
`calib experiment=scaling`, writes its own tables instead and is not compared). Runs are labelled by the
overrides in which they differ (read from Hydra's `.hydra/overrides.yaml`), so a sweep over
decoding.num_samples=1,5,10 gives columns `decoding.num_samples=1`, `...=5`, `...=10`. After a multirun the
`CompareCallback` (configs/config.yaml) writes compare.csv / compare.md / compare.png into the sweep folder.
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


def pivot(long: pd.DataFrame, metric: str, group: str = "all") -> pd.DataFrame:
    """estimator x run-label values of one metric, best estimator (mean over runs) first."""
    part = long[(long["metric"] == metric) & (long["group"] == group)]
    if part.empty:
        raise CalibError(f"compare: no values of metric {metric!r} for group {group!r} in these runs")
    labels = list(dict.fromkeys(part["label"]))
    part = part.drop_duplicates(["estimator", "label"])
    table = part.pivot(index="estimator", columns="label", values="value").reindex(columns=labels)
    ascending = not METRICS[metric].higher_is_better
    return table.loc[table.mean(axis=1).sort_values(ascending=ascending, na_position="last").index]


def _numeric_axis(labels: Sequence[str]) -> list[float] | None:
    """x values when every label is one `key=number` of the same key."""
    keys = {label.split("=", 1)[0] for label in labels if "=" in label and "," not in label}
    if len(keys) != 1 or any("=" not in label or "," in label for label in labels):
        return None
    try:
        return [float(label.split("=", 1)[1]) for label in labels]
    except ValueError:
        return None


def plot(table: pd.DataFrame, metric: str, path: Path, top: int = 8) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from calib.plots import COLORS, save_figure

    labels = list(table.columns)
    x = _numeric_axis(labels)
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    positions = x if x is not None else list(range(len(labels)))
    for i, (name, row) in enumerate(table.head(top).iterrows()):
        ax.plot(positions, row.to_numpy(np.float64), marker="o", color=COLORS[i % len(COLORS)], label=name)
    if x is None:
        ax.set_xticks(positions, labels, rotation=30, ha="right")
    else:
        ax.set_xlabel(labels[0].split("=", 1)[0])
    ax.set_ylabel(METRICS[metric].label)
    ax.legend(fontsize=7, frameon=False)
    return save_figure(fig, path)


def markdown(table: pd.DataFrame) -> str:
    header = "| estimator | " + " | ".join(map(str, table.columns)) + " |"
    lines = [header, "|---|" + "---:|" * len(table.columns)]
    for name, row in table.iterrows():
        cells = ["n/a" if (v is None or math.isnan(v)) else f"{v:.3f}" for v in row.to_numpy(np.float64)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare(
    paths: Sequence[str | Path],
    metrics: Sequence[str] = ("auroc", "ece"),
    group: str = "all",
    out: str | Path | None = None,
    figures: bool = True,
) -> dict[str, pd.DataFrame]:
    """Write compare.csv (long), compare.md (one table per metric) and compare_<metric>.png into `out`
    (default: the first path); return the per-metric tables."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise CalibError(f"compare: unknown metric {unknown[0]!r}; metrics: {', '.join(METRICS)}")
    runs = find_runs(paths)
    long = collect(runs)
    out = Path(out or paths[0])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.csv", long.to_csv(index=False, float_format="%.6g"))
    tables = {m: pivot(long, m, group) for m in metrics if not long[long["metric"] == m].empty}
    if not tables:
        raise CalibError(f"compare: none of the metrics {', '.join(metrics)} were computed in these runs")
    blocks = [f"# Comparison of {len(runs)} runs ({group} questions)"]
    blocks += [f"## {METRICS[m].label}\n\n{markdown(t)}" for m, t in tables.items()]
    atomic_write_text(out / "compare.md", "\n\n".join(blocks) + "\n")
    if figures:
        for m, t in tables.items():
            plot(t, m, out / f"compare_{m}")
    return tables


def print_tables(tables: dict[str, pd.DataFrame], where: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(120, Console().width))
    for metric, frame in tables.items():
        table = Table(title=f"{METRICS[metric].label} by run", title_justify="left")
        table.add_column("estimator", no_wrap=True)
        for label in frame.columns:
            table.add_column(str(label), justify="right")
        for name, row in frame.iterrows():
            table.add_row(name, *("n/a" if math.isnan(v) else f"{v:.3f}" for v in row.to_numpy(np.float64)))
        console.print(table)
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
        try:
            tables = compare([sweep_dir], self.metrics)
        except CalibError as err:
            log.warning("no comparison written: %s", err)
            return
        print_tables(tables, sweep_dir)
