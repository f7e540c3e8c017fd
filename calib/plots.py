"""Figures for calibration results: reliability diagram, confidence histogram, risk-coverage and ROC curves.

Every function draws with one shared style, returns the matplotlib Figure (draw into an existing `ax` to
compose panels) and never calls plt.show(): figures are built on matplotlib's Agg canvas without touching
pyplot's global state, so library code works headless and in notebooks alike. `save_figure` writes PNG and
PDF atomically (temporary name, then rename), so a crash never leaves a half-written figure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from calib.cache import writing
from calib.errors import CalibError
from calib.metrics import aurc, auroc, ece, reliability_bins, validate
from calib.metrics._ranking import topk_expected_sums

STYLE: dict[str, Any] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.5,
    "figure.dpi": 150,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # embed TrueType so the paper's PDF stays editable and searchable
}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
ACCENT, GAP, NEUTRAL = COLORS[0], COLORS[1], "#555555"
FIGSIZE = (3.6, 3.4)


def _canvas(ax: Axes | None, figsize: tuple[float, float] = FIGSIZE) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _named(confidences: Any) -> dict[str, Any]:
    """One array or a mapping name -> array, as a mapping (one curve per estimator)."""
    if isinstance(confidences, Mapping):
        if not confidences:
            raise CalibError("confidences: the mapping is empty; pass at least one estimator's confidences")
        return dict(confidences)
    return {"": confidences}


def reliability_diagram(
    confidence: Any,
    correct: Any,
    n_bins: int = 15,
    binning: str = "uniform",
    ax: Axes | None = None,
    title: str | None = None,
    show_counts: bool = True,
) -> Figure:
    """Accuracy per confidence bin against the diagonal, with the gap to mean confidence and per-bin counts."""
    bins = reliability_bins(confidence, correct, n_bins=n_bins, binning=binning)
    value = ece(confidence, correct, n_bins=n_bins, binning=binning)
    with matplotlib.rc_context(STYLE):
        fig, ax = _canvas(ax)
        edges, count = bins["edges"], bins["count"]
        left, width = edges[:-1], np.diff(edges)
        filled = count > 0
        acc, conf = np.nan_to_num(bins["accuracy"]), np.nan_to_num(bins["confidence"])
        ax.bar(
            left[filled],
            acc[filled],
            width=width[filled],
            align="edge",
            color=ACCENT,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.5,
            label="accuracy",
        )
        ax.bar(
            left[filled],
            (conf - acc)[filled],
            bottom=acc[filled],
            width=width[filled],
            align="edge",
            color=GAP,
            alpha=0.25,
            edgecolor=GAP,
            linewidth=0.5,
            hatch="///",
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "--", color=NEUTRAL, linewidth=1, label="perfect calibration")
        if show_counts:
            for x, w, a, cf, cnt in zip(
                left[filled], width[filled], acc[filled], conf[filled], count[filled]
            ):
                ax.text(
                    x + w / 2,
                    min(max(a, cf), 0.93) + 0.015,
                    f"{int(cnt)}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90 if len(edges) > 11 else 0,
                    color=NEUTRAL,
                )
        ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence", ylabel="accuracy")
        ax.set_title(title or f"Reliability ({binning}, {n_bins} bins), ECE = {value:.3f}")
        ax.legend(loc="upper left", frameon=False)
    return fig


def confidence_histogram(
    confidence: Any,
    correct: Any | None = None,
    n_bins: int = 15,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Share of predictions per confidence bin, with mean confidence (and accuracy when `correct` is given)."""
    validate.positive_int(n_bins, "n_bins")
    c = validate.unit_interval(confidence, "confidence")
    with matplotlib.rc_context(STYLE):
        fig, ax = _canvas(ax)
        ax.hist(
            c,
            bins=np.linspace(0, 1, n_bins + 1),
            weights=np.full(c.shape, 1 / c.size),
            color=ACCENT,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.5,
        )
        ax.axvline(float(c.mean()), color=NEUTRAL, linestyle="--", label=f"mean confidence {c.mean():.3f}")
        if correct is not None:
            _, y = validate.pair(c, correct, soft=True)
            ax.axvline(float(y.mean()), color=GAP, label=f"accuracy {y.mean():.3f}")
        ax.set(xlim=(0, 1), xlabel="confidence", ylabel="share of predictions")
        ax.set_title(title or f"Confidence histogram (n = {c.size})")
        ax.legend(loc="upper left", frameon=False)
    return fig


def risk_coverage_curve(
    confidences: Any, correct: Any, ax: Axes | None = None, title: str | None = None
) -> Figure:
    """Selective risk (1 - accuracy of the kept rows) against coverage, one curve per estimator, with AURC."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _canvas(ax)
        for i, (name, conf) in enumerate(_named(confidences).items()):
            c, y = validate.pair(conf, correct, soft=True)
            n = c.size
            risk = 1 - np.asarray(topk_expected_sums(jnp.asarray(c), jnp.asarray(y))) / np.arange(1, n + 1)
            label = f"{name} (AURC {aurc(c, y):.3f})" if name else f"AURC {aurc(c, y):.3f}"
            ax.plot(np.arange(1, n + 1) / n, risk, color=COLORS[i % len(COLORS)], label=label)
        ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage", ylabel="selective risk")
        ax.set_title(title or "Risk-coverage")
        ax.legend(loc="upper left", frameon=False)
    return fig


def undefined_note(ax: Axes, why: str) -> None:
    """Write "undefined: <why>" in the middle of the axes, for a panel whose value does not exist (e.g. AUROC when
    every answer has the same grade), so an empty panel reads as a finding rather than a failure to draw."""
    ax.text(
        0.5,
        0.5,
        textwrap.fill(f"undefined: {why}", 28),
        transform=ax.transAxes,
        ha="center",
        va="center",
        fontsize=8,
        color=NEUTRAL,
        bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": NEUTRAL, "alpha": 0.9},
    )


def log_x_at_values(ax: Axes, values: Any, max_ticks: int = 6) -> None:
    """Log x axis ticked at the values drawn (e.g. compute per question), at most max_ticks of them and none closer
    than 1/max_ticks of the axis to the next, the smallest and largest always: a grid that spans less than a
    decade has no major log tick, so the default locator would leave the axis unlabelled, and its minor labels
    overlap."""
    ax.set_xscale("log")
    v = np.asarray(values, np.float64)
    logs = np.log10(np.unique(v[np.isfinite(v) & (v > 0)]))
    if not logs.size:
        return
    gap = (logs[-1] - logs[0]) / max_ticks
    kept = [logs[0]]
    for x in logs[1:]:
        if x - kept[-1] >= max(gap, 1e-12):
            kept.append(x)
    if len(kept) > 1 and logs[-1] - kept[-1] < gap:
        kept[-1] = logs[-1]  # the largest value beats its near neighbour
    elif kept[-1] != logs[-1]:
        kept.append(logs[-1])
    kept = np.asarray(kept)
    if kept.size > max_ticks:
        kept = kept[np.unique(np.round(np.linspace(0, kept.size - 1, max_ticks)).astype(int))]
    ticks = 10.0**kept
    labels = [f"{t:.3g}" for t in ticks]
    ax.set_xticks(ticks, labels, rotation=30 if len("".join(labels)) > 12 else 0)
    ax.set_xlim(10.0 ** logs[0] / 1.15, 10.0 ** logs[-1] * 1.15)
    ax.xaxis.set_minor_formatter(NullFormatter())


def roc_points(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) at every distinct confidence threshold, from (0, 0) to (1, 1)."""
    c, y = validate.pair(confidence, correct)
    order = np.argsort(-c.astype(np.float64), kind="stable")
    c, y = c[order], y[order].astype(np.float64)
    last = np.r_[c[1:] != c[:-1], True]  # end of each group of equal confidences
    tp, fp = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    pos, neg = max(tp[-1], 1.0), max(fp[-1], 1.0)
    return np.r_[0.0, fp / neg], np.r_[0.0, tp / pos]


def roc_curve(confidences: Any, correct: Any, ax: Axes | None = None, title: str | None = None) -> Figure:
    """ROC curve of confidence separating correct from wrong answers, one curve per estimator, with AUROC."""
    with matplotlib.rc_context(STYLE):
        fig, ax = _canvas(ax)
        _, y = validate.pair(next(iter(_named(confidences).values())), correct)
        if y.min() == y.max():  # one class: no ROC curve and no AUROC
            undefined_note(ax, f"every answer is {'correct' if y.min() else 'wrong'}, so AUROC has no value")
        else:
            for i, (name, conf) in enumerate(_named(confidences).items()):
                fpr, tpr = roc_points(conf, correct)
                score = auroc(conf, correct)
                label = f"{name} (AUROC {score:.3f})" if name else f"AUROC {score:.3f}"
                ax.plot(fpr, tpr, color=COLORS[i % len(COLORS)], label=label, drawstyle="default")
        ax.plot([0, 1], [0, 1], "--", color=NEUTRAL, linewidth=1, label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate")
        ax.set_title(title or "ROC")
        ax.legend(loc="lower right", frameon=False)
    return fig


roc_curves = roc_curve
risk_coverage_curves = risk_coverage_curve


@contextlib.contextmanager
def quiet_fonttools() -> Iterator[None]:
    """Raise the `fontTools` logger to WARNING while a PDF is written (its font subsetting logs every glyph table at
    INFO), then restore its level: scoped, so no logging setting changes at import."""
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def save_figure(
    fig: Figure, path_without_ext: str | os.PathLike, formats: Sequence[str] = ("png", "pdf")
) -> list[Path]:
    """Write fig as <path>.png and <path>.pdf, each to a temporary name first and then renamed into place."""
    base = Path(path_without_ext)
    if base.suffix.lower() in {".png", ".pdf"}:
        base = base.with_suffix("")
    with writing(base.parent):
        base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        final = base.parent / f"{base.name}.{fmt}"
        tmp = base.parent / f".{base.name}.{fmt}.{os.getpid()}.tmp"
        # A fixed PDF creation date keeps regenerated figures byte-identical.
        metadata = {"CreationDate": None} if fmt == "pdf" else None
        try:
            with writing(final), matplotlib.rc_context(STYLE), quiet_fonttools():
                fig.savefig(tmp, format=fmt, metadata=metadata)
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(final)
    return written
