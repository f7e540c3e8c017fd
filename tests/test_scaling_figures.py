"""Scaling-study figures from hand-made tables: the compute axis is labelled in GFLOPs with tick labels, and a
panel whose metric has no value says so on the axes."""

import math

import numpy as np
import pandas as pd

from calib.studies import scaling_report


def tables(auroc: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A K in {1, 2} x R in {0, 1} grid spanning less than a decade of compute (no major log tick of its own)."""
    grid = [(k, r) for k in (1, 2) for r in (0, 1)]
    accuracy = pd.DataFrame({"K": [k for k, _ in grid], "R": [r for _, r in grid]})
    accuracy["flops"] = [2.1e10 * k * (1 + r) for k, r in grid]
    accuracy["accuracy"] = 0.5
    points = pd.DataFrame(
        [
            {"K": k, "R": r, "group": "all", "estimator": name, "metric": metric, "value": value}
            for k, r in grid
            for name in ("msp", "p_true")
            for metric, value in (("ece", 0.1 * k), ("auroc", auroc))
        ]
    )
    return points, accuracy


def tick_labels(ax) -> list[str]:
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def test_metric_vs_compute_has_gflops_tick_labels():
    points, accuracy = tables(0.7)
    fig = scaling_report.metric_vs_compute(points, accuracy, "ece")
    for ax in fig.axes:
        assert ax.get_xlabel() == "GFLOPs per question"
        assert tick_labels(ax) == ["21", "42", "84"]
        assert not ax.texts


def test_undefined_auroc_is_a_note_on_the_axes():
    points, accuracy = tables(math.nan)
    fig = scaling_report.metric_vs_compute(points, accuracy, "auroc")
    for ax in fig.axes:
        (note,) = ax.texts
        assert " ".join(note.get_text().split()).startswith("undefined: every answer has the same grade")
        assert ax.get_legend() is None and np.isnan(ax.lines[0].get_ydata()).all()
