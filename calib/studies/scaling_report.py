"""What the scaling study leaves in its run folder (next to manifest.json and config.yaml).

points.csv         K, R, estimator, metric, value and bootstrap interval (every estimator at every grid point)
accuracy.csv       K, R: greedy and majority-vote accuracy with intervals, tokens and FLOPs per question
differences.csv    metric at R minus at R = 0 (same K), paired bootstrap interval
transitions.csv    answers fixed / broke / left alone between passes
adaptive.csv       revising only the least confident questions: accuracy and compute kept
answers.csv        every question's answer, extraction and grade on every pass
confidences.parquet every confidence at every point
figures/           metric vs compute (GFLOPs) per estimator family, accuracy and ECE per pass, transitions, adaptive
                   (redrawn from the tables of a finished study by draw_figures(run_dir))
summary.md         the headline tables
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from calib.cache import atomic_write_text
from calib.pipeline.evaluate import METRICS
from calib.pipeline.store import write_table
from calib.plots import COLORS, STYLE, log_x_at_values, save_figure, undefined_note
from calib.studies.scaling_tables import family_of

LINESTYLES = ("-", "--", ":", "-.")


def _figure(ncols: int, nrows: int = 1, width: float = 3.2, height: float = 2.8) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)


def metric_vs_compute(points: pd.DataFrame, accuracy: pd.DataFrame, metric: str) -> Figure:
    """One panel per estimator family: metric against GFLOPs per question (log x); colour = estimator,
    line style = revise passes R, points along a line = K. A panel with no defined value says so on the axes."""
    part = points[(points["group"] == "all") & (points["metric"] == metric)].merge(
        accuracy[["K", "R", "flops"]], on=["K", "R"]
    )
    part = part.assign(gflops=part["flops"] / 1e9)
    names = list(dict.fromkeys(part["estimator"]))
    families: dict[str, list[str]] = {}
    for name in names:
        families.setdefault(family_of(name), []).append(name)
    with matplotlib.rc_context(STYLE):
        ncols = min(3, len(families))
        fig, axes = _figure(ncols, -(-len(families) // ncols))
        for ax in axes[len(families) :]:
            fig.delaxes(ax)
        for ax, (family, members) in zip(axes, families.items()):
            for i, name in enumerate(members):
                for j, (r, rows) in enumerate(part[part["estimator"] == name].groupby("R")):
                    rows = rows.sort_values("gflops")
                    ax.plot(
                        rows["gflops"],
                        rows["value"],
                        LINESTYLES[int(r) % 4],
                        marker="o",
                        markersize=2.5,
                        color=COLORS[i % len(COLORS)],
                        label=None if j else name,
                    )
            log_x_at_values(ax, part["gflops"])
            ax.set(xlabel="GFLOPs per question", ylabel=METRICS[metric].label, title=family)
            values = part[part["estimator"].isin(members)]["value"]
            if values.notna().any():
                ax.legend(frameon=False, fontsize=6)
            else:
                why = "every answer has the same grade" if metric in ("auroc", "prr") else "no finite value"
                undefined_note(ax, f"{why} at every point")
                ax.set_ylim(0, 1)
        fig.suptitle(f"{METRICS[metric].label} against compute (line style: R = 0 solid, 1 dashed, 2 dotted)")
    return fig


def per_pass(accuracy: pd.DataFrame, points: pd.DataFrame, k: int, top: int = 6) -> Figure:
    """Accuracy (with intervals) and ECE of the estimators present on every pass, against the pass, at K = k."""
    with matplotlib.rc_context(STYLE):
        fig, (left, right) = _figure(2)
        for col, label, color in (
            ("accuracy", "greedy answer", COLORS[0]),
            ("vote_accuracy", "majority vote", COLORS[1]),
        ):
            rows = accuracy[accuracy["K"] == k].sort_values("R")
            err = np.nan_to_num(np.vstack([rows[col] - rows[f"{col}_low"], rows[f"{col}_high"] - rows[col]]))
            left.errorbar(rows["R"], rows[col], yerr=err, marker="o", capsize=3, color=color, label=label)
        left.set(xlabel="revise pass R", ylabel="accuracy", title=f"Accuracy per pass (K = {k})")
        left.set_xticks(sorted(accuracy["R"].unique()))
        left.legend(frameon=False)
        ece = points[(points["group"] == "all") & (points["metric"] == "ece") & (points["K"] == k)]
        every = [n for n, g in ece.groupby("estimator") if g["R"].nunique() == ece["R"].nunique()]
        best = ece[ece["R"] == 0].set_index("estimator")["value"].reindex(every).sort_values().index[:top]
        for i, name in enumerate(best):
            rows = ece[ece["estimator"] == name].sort_values("R")
            err = np.nan_to_num(np.vstack([rows["value"] - rows["low"], rows["high"] - rows["value"]]))
            right.errorbar(
                rows["R"] + 0.04 * i,
                rows["value"],
                yerr=err,
                marker="o",
                capsize=2,
                color=COLORS[i % len(COLORS)],
                label=name,
            )
        right.set(xlabel="revise pass R", ylabel="ECE", title=f"ECE per pass (K = {k})")
        right.set_xticks(sorted(accuracy["R"].unique()))
        right.legend(frameon=False, fontsize=6)
    return fig


def transitions_figure(transitions: pd.DataFrame) -> Figure:
    """Pass pair x {fixed, broke, unchanged} counts as an annotated heat map."""
    columns = ["fixed", "broke", "unchanged"]
    values = np.stack(
        [transitions["fixed"], transitions["broke"], transitions["kept_correct"] + transitions["kept_wrong"]],
        axis=1,
    )
    labels = [f"pass {a} → {b}" for a, b in zip(transitions["from"], transitions["to"])]
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1, width=3.6, height=0.6 + 0.5 * len(labels))
        ax.imshow(values, cmap="Blues", aspect="auto")
        ax.set_xticks(range(3), columns)
        ax.set_yticks(range(len(labels)), labels)
        ax.grid(False)
        for (i, j), v in np.ndenumerate(values):
            sub = ""
            if j == 2:
                sub = f"\n({transitions['kept_correct'].iloc[i]} right, {transitions['kept_wrong'].iloc[i]} wrong)"
            ax.text(
                j,
                i,
                f"{v}{sub}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > values.max() * 0.6 else "black",
            )
        ax.set_title("What revision did to the greedy answers")
    return fig


def adaptive_figure(adaptive: pd.DataFrame, accuracy: pd.DataFrame) -> Figure:
    """Accuracy against FLOPs when revising the least confident share of questions, per gate and K."""
    with matplotlib.rc_context(STYLE):
        fig, (ax,) = _figure(1, width=4.2, height=3.2)
        for i, ((gate, k), rows) in enumerate(adaptive.groupby(["gate", "K"], sort=False)):
            rows = rows.sort_values("fraction")
            ax.plot(
                rows["flops"] / 1e9,
                rows["accuracy"],
                marker="o",
                color=COLORS[i % len(COLORS)],
                label=f"gate {gate}, K = {k}",
            )
        uniform = accuracy[accuracy["K"].isin(adaptive["K"].unique())]
        ax.scatter(
            uniform["flops"] / 1e9,
            uniform["accuracy"],
            marker="x",
            color="#555555",
            label="every question, R passes",
        )
        log_x_at_values(ax, np.r_[adaptive["flops"], uniform["flops"]] / 1e9)
        ax.set(xlabel="GFLOPs per question", ylabel="accuracy", title="Adaptive revision (0 to 100% revised)")
        ax.legend(frameon=False, fontsize=6)
    return fig


def _cell(value: float, low: float = math.nan, high: float = math.nan) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if math.isnan(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def _table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def summary(result, cfg) -> str:
    """The headline tables as Markdown."""
    meta, acc, pts, g, m = result.meta, result.accuracy, result.points, cfg.study.scaling, cfg.metrics
    kmax = max(g.samples)
    out = [
        f"# Scaling study: {meta['model']} on {meta['task']} ({meta['questions']} questions)",
        "",
        f"Cue `{g.cue}` ({meta['style']} style), K in {list(g.samples)}, R = 0..{g.passes}; intervals: "
        f"{100 * (1 - m.alpha):.0f}% percentile bootstrap over questions "
        f"({m.n_resamples} resamples). Time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in meta["timings"].items()),
        "",
        "## Accuracy and compute",
        "",
    ]
    rows = acc.assign(
        accuracy=[_cell(*v) for v in acc[["accuracy", "accuracy_low", "accuracy_high"]].values],
        vote=[_cell(*v) for v in acc[["vote_accuracy", "vote_accuracy_low", "vote_accuracy_high"]].values],
        tokens=acc["generated_tokens"].round(1),
        GFLOPs=(acc["flops"] / 1e9).round(1),
    )
    out += [_table(rows[["K", "R", "accuracy", "vote", "tokens", "GFLOPs"]]), ""]
    diffs = result.differences
    out += ["## Revising: R minus R = 0 (paired)", ""]
    acc_rows = diffs[diffs["estimator"] == "accuracy"]
    out += [f"- accuracy, R = {int(r.R)}: {_cell(r.value, r.low, r.high)}" for r in acc_rows.itertuples()] + [
        ""
    ]
    for metric in [m for m in ("ece", "auroc", "brier", "prr") if m in set(pts["metric"])]:
        part = pts[(pts["group"] == "all") & (pts["metric"] == metric) & (pts["K"] == kmax)]
        wide = part.pivot_table(index="estimator", columns="R", values="value")
        d = diffs[(diffs["metric"] == metric) & (diffs["K"] == kmax)]
        table = pd.DataFrame({"estimator": wide.index})
        for r in wide.columns:
            table[f"R={r}"] = [_cell(v) for v in wide[r]]
        for r in sorted(d["R"].unique()):
            dr = d[d["R"] == r].set_index("estimator")
            table[f"R={r} − R=0"] = [
                _cell(*dr.loc[n, ["value", "low", "high"]]) if n in dr.index else "n/a" for n in wide.index
            ]
        out += [f"### {METRICS[metric].label} at K = {kmax}", "", _table(table), ""]
    out += ["## Transitions of the greedy answer", "", _table(result.transitions), ""]
    if not result.adaptive.empty:
        a = result.adaptive.copy()
        a["accuracy"] = [_cell(*v) for v in a[["accuracy", "accuracy_low", "accuracy_high"]].values]
        a["GFLOPs"] = (a["flops"] / 1e9).round(1)
        cols = [
            "gate",
            "K",
            "fraction",
            "threshold",
            "accuracy",
            "accuracy_kept",
            "GFLOPs",
            "compute_saved",
            "gate_ece",
            "gate_auroc",
        ]
        out += ["## Adaptive revision", "", _table(a[cols].round(3)), ""]
    out += [
        "Figures: "
        + ", ".join(
            f"[{p.name}](figures/{p.name})" for p in sorted((result.run_dir / "figures").glob("*.png"))
        )
    ]
    return "\n".join(out) + "\n"


def answers_table(grades: list[pd.DataFrame]) -> pd.DataFrame:
    base = grades[0][["question_id", "question", "category", "open_ended"]].copy()
    for r, g in enumerate(grades):
        base[f"answer_{r}"], base[f"extracted_{r}"], base[f"correct_{r}"] = (
            g["answer"],
            g["extracted"],
            g["correct"],
        )
    return base


def draw_figures(out: Path, formats=("png",)) -> list[Path]:
    """Every figure, drawn from the tables in `out` (so figures can be redrawn without rerunning the study)."""
    read = lambda name: pd.read_csv(out / f"{name}.csv")  # noqa: E731
    points, accuracy, transitions = read("points"), read("accuracy"), read("transitions")
    adaptive = read("adaptive") if (out / "adaptive.csv").stat().st_size > 1 else pd.DataFrame()
    figures, written = out / "figures", []
    for metric in [m for m in ("auroc", "prr", "ece", "brier") if m in set(points["metric"])]:
        fig = metric_vs_compute(points, accuracy, metric)
        written += save_figure(fig, figures / f"{metric}_vs_compute", formats)
    if "ece" in set(points["metric"]):
        written += save_figure(
            per_pass(accuracy, points, int(accuracy["K"].max())), figures / "per_pass", formats
        )
    if not transitions.empty:
        written += save_figure(transitions_figure(transitions), figures / "transitions", formats)
    if not adaptive.empty:
        written += save_figure(adaptive_figure(adaptive, accuracy), figures / "adaptive", formats)
    return written


def write_outputs(result, grades: list[pd.DataFrame], cfg) -> None:
    out: Path = result.run_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in ("points", "accuracy", "differences", "transitions", "adaptive"):
        atomic_write_text(out / f"{name}.csv", getattr(result, name).to_csv(index=False))
    atomic_write_text(out / "answers.csv", answers_table(grades).to_csv(index=False))
    write_table(out / "confidences.parquet", result.confidences)
    if cfg.report.figures:
        draw_figures(out, cfg.report.formats)
    atomic_write_text(out / "summary.md", summary(result, cfg))
