"""The run report's figures: the reliability grid keeps per-bin counts and ECE, risk-coverage shows the best
estimators by AUROC and says so."""

import numpy as np
import pandas as pd
import pytest

from calib import plots
from calib.metrics import auroc, ece
from calib.pipeline.report import best_by_auroc, write_figures


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Ten estimators named so that alphabetical order is worst-first; the figures each write_figures saves."""
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    noise = rng.random(200)
    estimates = {
        f"e{i}": {"confidence": np.clip(0.1 * i * y + (1 - 0.1 * i) * noise, 0, 1)} for i in range(10)
    }
    saved = {}

    def capture(fig, path, formats=("png", "pdf")):
        saved[path.name] = fig
        return [path.with_suffix(f".{f}") for f in formats]

    monkeypatch.setattr(plots, "save_figure", capture)
    grades = pd.DataFrame({"correct": y})
    files = write_figures(tmp_path, grades, estimates, sorted(estimates), 10, "uniform", 8, ["png"])
    return saved, files, estimates, y


def test_reliability_grid_draws_counts_and_ece(run):
    saved, files, estimates, y = run
    assert files == ["figures/reliability.png", "figures/risk_coverage.png"]
    panels = [ax for ax in saved["reliability"].axes if ax.get_visible()]
    assert len(panels) == 10
    for ax in panels:
        name = ax.get_title().split(":")[0]
        expected = float(ece(estimates[name]["confidence"], y, n_bins=10))
        assert ax.get_title() == f"{name}: ECE {expected:.3f}"
        counts = [int(t.get_text()) for t in ax.texts]
        assert sum(counts) == 200


def test_risk_coverage_shows_the_best_by_auroc_and_says_so(run):
    saved, _, estimates, y = run
    (ax,) = saved["risk_coverage"].axes
    shown = [t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()]
    by_auroc = sorted(estimates, key=lambda n: -float(auroc(estimates[n]["confidence"], y)))
    assert shown == by_auroc[:8] and "e0" not in shown
    assert ax.get_title() == "Risk-coverage (best 8 of 10 by AUROC)"


def test_best_by_auroc_with_one_grade_keeps_table_order():
    estimates = {n: {"confidence": np.linspace(0, 1, 5)} for n in "abc"}
    chosen, what = best_by_auroc(estimates, ["c", "a", "b"], np.ones(5), 2)
    assert chosen == ["c", "a"] and "AUROC undefined" in what
