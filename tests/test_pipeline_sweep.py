"""A Hydra multirun sweep: one run per value, each in its own folder, then one comparison table of all of them."""

import pandas as pd

from calib.cli import main


def test_sweep_over_num_samples_writes_runs_and_a_comparison(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    main(
        [
            "-m",
            "experiment=smoke",
            "estimators=token",
            "report.figures=false",
            "progress=false",
            # In-process Hydra must not configure logging: its dictConfig closes pytest's capture handlers.
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
            "task.limit=4",
            "decoding.num_samples=0,2",
            f"artifacts_dir={tmp_path / 'artifacts'}",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    runs = sorted(p.parent for p in sweep.glob("*/metrics.csv"))
    assert [p.name for p in runs] == ["0", "1"]
    assert len(list((tmp_path / "artifacts" / "generate").iterdir())) == 2  # K changes the generation key
    compare = (sweep / "compare.md").read_text()
    assert "decoding.num_samples=0" in compare and "decoding.num_samples=2" in compare
    long = pd.read_csv(sweep / "compare.csv")
    assert set(long["label"]) == {"decoding.num_samples=0", "decoding.num_samples=2"}
    assert set(long["estimator"]) >= {"msp", "mean_token_entropy"}
    assert "Comparison:" in capsys.readouterr().out
    paired = pd.read_csv(sweep / "compare_paired.csv")  # num_samples=2 minus 0, on the same 4 questions
    assert set(paired["label"]) == {"decoding.num_samples=2"} and (paired["n"] == 4).all()
    assert "Paired differences" in compare and not list(sweep.glob("compare_*.p*"))  # report.figures=false
