"""Figures: each plot draws what it claims, returns a Figure, and save_figure writes PNG + PDF atomically."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve as sk_roc_curve

from calib import plots
from calib.errors import CalibError
from calib.metrics import aurc, auroc, ece


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    c = rng.beta(4, 2, 500)
    y = (rng.random(500) < c**1.5).astype(int)
    return c, y


def test_reliability_diagram_shows_accuracy_gap_and_counts(data):
    c, y = data
    fig = plots.reliability_diagram(c, y, n_bins=10)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    bins = plots.reliability_bins(c, y, n_bins=10)
    filled = bins["count"] > 0
    accuracy_bars = ax.containers[0]
    np.testing.assert_allclose([b.get_height() for b in accuracy_bars], bins["accuracy"][filled], atol=1e-6)
    counts = sorted(int(t.get_text()) for t in ax.texts)
    assert counts == sorted(bins["count"][filled].astype(int).tolist())
    assert f"{ece(c, y, n_bins=10):.3f}" in ax.get_title()


def test_draws_into_a_given_axis(data):
    c, y = data
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plots.reliability_diagram(c, y, ax=axes[0]) is fig
    assert plots.confidence_histogram(c, y, ax=axes[1]) is fig
    assert len(axes[0].containers) == 2 and len(axes[1].patches) == 15


def test_confidence_histogram_shares_sum_to_one(data):
    c, y = data
    fig = plots.confidence_histogram(c, y, n_bins=20)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert len(heights) == 20
    assert sum(heights) == pytest.approx(1.0)
    assert any("accuracy" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_roc_points_match_sklearn(data):
    c, y = data
    fpr, tpr = plots.roc_points(c, y)
    ref_fpr, ref_tpr, _ = sk_roc_curve(y, c, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-9)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-9)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(c, y), abs=1e-6)


def test_curves_take_several_estimators(data):
    c, y = data
    rng = np.random.default_rng(1)
    fig = plots.roc_curve({"model": c, "noise": rng.random(500)}, y)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == f"model (AUROC {auroc(c, y):.3f})"
    assert len(labels) == 3  # two estimators and the chance line
    fig = plots.risk_coverage_curve({"model": c}, y)
    line = fig.axes[0].lines[0]
    assert np.mean(line.get_ydata()) == pytest.approx(aurc(c, y), abs=1e-5)
    assert line.get_xdata()[-1] == 1.0
    assert line.get_ydata()[-1] == pytest.approx(1 - y.mean(), abs=1e-6)
    with pytest.raises(CalibError, match="empty"):
        plots.roc_curve({}, y)


def test_save_figure_writes_png_and_pdf(tmp_path, data):
    c, y = data
    written = plots.save_figure(plots.reliability_diagram(c, y), tmp_path / "figs" / "reliability")
    assert [p.name for p in written] == ["reliability.png", "reliability.pdf"]
    assert written[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert written[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["reliability.pdf", "reliability.png"]
    # an explicit extension is dropped, not doubled
    assert plots.save_figure(plots.roc_curve(c, y), tmp_path / "roc.png")[1].name == "roc.pdf"


def test_save_figure_leaves_no_partial_file_on_failure(tmp_path, data, monkeypatch):
    c, y = data
    fig = plots.reliability_diagram(c, y)
    (tmp_path / "old.png").write_bytes(b"previous figure")

    def broken(path, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a figure")
        raise OSError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(CalibError, match=r"^cannot write .*old\.png: disk full$"):
        plots.save_figure(fig, tmp_path / "old")
    assert (tmp_path / "old.png").read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.png"]


def test_pdf_output_is_reproducible(tmp_path, data):
    c, y = data
    fig = plots.reliability_diagram(c, y)
    first = plots.save_figure(fig, tmp_path / "a", formats=("pdf",))[0].read_bytes()
    second = plots.save_figure(fig, tmp_path / "b", formats=("pdf",))[0].read_bytes()
    assert first == second


def test_quantile_reliability_diagram_has_equal_mass_bins(data):
    c, y = data
    fig = plots.reliability_diagram(c, y, n_bins=5, binning="quantile")
    counts = [int(t.get_text()) for t in fig.axes[0].texts]
    assert counts == [100] * 5
    assert "quantile" in fig.axes[0].get_title()


def test_pdf_saving_silences_fonttools_and_restores_its_level(tmp_path, data, caplog):
    import logging

    c, y = data
    logger = logging.getLogger("fontTools")
    logger.setLevel(logging.INFO)
    try:
        with caplog.at_level(logging.INFO):
            plots.save_figure(plots.reliability_diagram(c, y), tmp_path / "r", formats=("pdf",))
        assert not [r for r in caplog.records if r.name.startswith("fontTools")]
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(logging.NOTSET)


def test_roc_with_one_class_draws_an_undefined_note(data):
    c, _ = data
    ax = plots.roc_curve({"a": c, "b": 1 - c}, np.ones_like(c)).axes[0]
    notes = [t.get_text() for t in ax.texts]
    assert len(notes) == 1 and " ".join(notes[0].split()).startswith("undefined: every answer is correct")
    assert len(ax.lines) == 1  # only the chance diagonal
