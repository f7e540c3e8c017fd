"""`calib compare`: intervals in every cell, paired differences against the first run, one meaning each for
`–` (not run) and `undef` (no value), markers-only plots for unordered runs, and the figure formats asked for."""

import json

import numpy as np
import pandas as pd
import pytest

from calib import plots
from calib.cli import main
from calib.metrics import auroc, paired_bootstrap
from calib.pipeline import compare as C

N = 60


def fake_run(folder, overrides, confidences, correct, formats=None):
    """A finished run: overrides, manifest, metrics.csv (AUROC with intervals) and results.parquet."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "manifest.json").write_text(json.dumps({"stages": {}}))
    if formats:
        (folder / "config.yaml").write_text(f"report:\n  formats: {formats}\nmetrics:\n  n_resamples: 50\n")
    rows, results = [], []
    for name, c in confidences.items():
        a = float(auroc(c, correct)) if 0 < correct.mean() < 1 else float("nan")
        rows.append({"group": "all", "estimator": name, "n": N, "n_missing": 0, "auroc": a})
        rows[-1].update(auroc_low=a - 0.1, auroc_high=a + 0.1)
        results.append(
            pd.DataFrame(
                {
                    "question_id": [f"q{i}" for i in range(N)],
                    "open_ended": False,
                    "estimator": name,
                    "confidence": c,
                    "correct": correct,
                }
            )
        )
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)
    pd.concat(results).to_parquet(folder / "results.parquet")


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(N) < 0.5).astype(float)
    good, noise = np.clip(0.6 * y + 0.4 * rng.random(N), 0, 1), rng.random(N)
    fake_run(tmp_path / "0", ["model=a"], {"msp": noise, "p_true": good}, y, formats="[png]")
    fake_run(tmp_path / "1", ["model=b"], {"msp": good}, y)  # p_true not run
    fake_run(tmp_path / "2", ["model=c"], {"msp": good, "p_true": good}, np.ones(N))  # one grade: AUROC undef
    return tmp_path, y, good, noise


def test_compare_prints_intervals_paired_differences_and_one_meaning_per_symbol(sweep, capsys, monkeypatch):
    folder, y, good, noise = sweep
    drawn = {}
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path, formats: drawn.setdefault(path.name, (fig, formats))
    )
    main(["compare", str(folder), "--metric", "auroc"])
    out = capsys.readouterr().out
    md = (folder / "compare.md").read_text()
    a_noise = float(auroc(noise, y))
    assert f"{a_noise:.3f} [{a_noise - 0.1:.3f}, {a_noise + 0.1:.3f}]" in md
    row = next(line for line in md.splitlines() if line.startswith("| p_true |"))
    assert row.split(" | ")[2] == C.NOT_RUN and row.split(" | ")[3].strip(" |") == C.UNDEFINED
    assert "n/a" not in md and "n/a" not in out
    expected = paired_bootstrap(auroc, good, noise, y, n_resamples=50)  # model=b minus model=a, same grades
    paired = pd.read_csv(folder / "compare_paired.csv").set_index(["label", "estimator"])
    got = paired.loc[("model=b", "msp")]
    assert got["n"] == N and got["difference"] == pytest.approx(expected.point, abs=1e-6)
    assert got["low"] == pytest.approx(expected.low, abs=1e-3) and got["high"] == pytest.approx(
        expected.high, abs=1e-3
    )
    assert f"+{expected.point:.3f} [" in md and "paired" in md.lower() and f"over the {N} questions" in md
    assert "minus the reference run (paired)" in out and f"+{expected.point:.3f}" in out
    fig, formats = drawn["compare_auroc"]
    assert formats == ["png"]  # the first run's report.formats
    (ax,) = fig.axes
    assert all(line.get_linestyle() == "None" for line in ax.lines)  # unordered runs: markers only
    assert [t.get_text() for t in ax.get_xticklabels()] == ["model=a", "model=b", "model=c"]
    assert fig.legends and ax.get_legend() is None  # legend outside the axes


def test_numeric_sweep_is_joined_by_lines_and_formats_flag_wins(tmp_path):
    rng = np.random.default_rng(1)
    y = (rng.random(N) < 0.5).astype(float)
    for i, k in enumerate((10, 2, 5)):
        fake_run(tmp_path / str(i), [f"decoding.num_samples={k}"], {"msp": rng.random(N)}, y, formats="[pdf]")
    main(["compare", str(tmp_path), "--metric", "auroc", "--formats", "png"])
    assert (tmp_path / "compare_auroc.png").is_file() and not (tmp_path / "compare_auroc.pdf").exists()
    values = C.collect(C.find_runs([tmp_path]))
    fig_path = C.plot(values, "auroc", tmp_path / "again", formats=["png"])
    assert [p.suffix for p in fig_path] == [".png"]


def test_plot_of_a_numeric_sweep_draws_sorted_lines(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    y = (rng.random(N) < 0.5).astype(float)
    for i, k in enumerate((10, 2, 5)):
        fake_run(tmp_path / str(i), [f"decoding.num_samples={k}"], {"msp": rng.random(N)}, y)
    drawn = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, formats: drawn.setdefault("fig", fig))
    C.plot(C.collect(C.find_runs([tmp_path])), "auroc", tmp_path / "x")
    (ax,) = drawn["fig"].axes
    (line,) = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert list(line.get_xdata()) == [2, 5, 10] and ax.get_xlabel() == "decoding.num_samples"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "5", "10"]


def test_bad_formats_flag_is_a_user_error(sweep):
    folder, *_ = sweep
    with pytest.raises(SystemExit) as info:
        main(["compare", str(folder), "--formats", "jpg"])
    assert info.value.code == 2
