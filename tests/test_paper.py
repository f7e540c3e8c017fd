"""The paper's generated LaTeX (paper/latex.py) and claim verdicts (paper/results.py), without TeX: sentences follow
the intervals, tables carry the CSVs' numbers, a missing run says so, and `make paper` without latexmk is one line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paper import latex, results

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("low", "high", "direction", "verdict"),
    [
        (0.01, 0.2, ">0", "yes"),
        (-0.2, -0.01, ">0", "no"),
        (-0.1, 0.1, ">0", "undetermined"),
        (-0.2, -0.01, "<0", "yes"),
        (0.01, 0.2, "<0", "no"),
        (float("nan"), 0.1, ">0", "undefined"),
        (1e-5, 2e-4, ">0", "negligible"),
    ],
)
def test_verdict_follows_the_interval(low, high, direction, verdict):
    assert results._verdict(low, high, direction) == verdict


def test_claim_sentences_are_worded_from_the_numbers(tmp_path):
    claims = pd.DataFrame(
        [
            results._row(
                "token_overconfidence", "compare_a", "mean MSP - accuracy", (0.21, 0.15, 0.27), 709, ">0"
            ),
            results._row(
                "sampling_vs_token", "compare_a", "AUROC se - AUROC msp", (0.02, -0.03, 0.07), 709, ">0"
            ),
            results._row("label_budget", "tuning", "AUROC lora N=250", (-0.08, -0.12, -0.04), 300, ">0"),
            results._row("semantic_entropy_open_ended", "c", "AUROC se - mh", (np.nan,) * 3, 2, "<0"),
            results._row("temperature_tradeoff", "t", "accuracy", (1e-12, 0.0, 2e-12), 6, ">0"),
        ]
    )
    claims.to_csv(tmp_path / "claims.csv", index=False)
    (tmp_path / "SCALE").write_text("paper scale\n")
    latex.write(tmp_path, tmp_path / "gen")
    text = (tmp_path / "gen" / "claims.tex").read_text()
    macros = dict(
        line.removeprefix("\\newcommand{\\").split("}{", 1)
        for line in text.splitlines()
        if line.startswith("\\new")
    )
    assert set(macros) == {m for m, *_ in latex.CLAIMS.values()}
    assert "+0.210 {\\scriptsize [+0.150, +0.270]}" in macros["claimTokenOverconfidence"]
    assert (
        "overconfident" in macros["claimTokenOverconfidence"]
        and "compare\\_a" in macros["claimTokenOverconfidence"]
    )
    assert "includes 0" in macros["claimSampling"]
    assert "untuned P(True) is better" in macros["claimLabelBudget"]
    assert macros["claimRevise"].startswith("Not measured")  # no run for it in these results
    assert (
        "undef." in macros["claimSemanticEntropy"]
        and "undefined on these runs" in macros["claimSemanticEntropy"]
    )
    assert "shows no effect" in macros["claimTemperature"] and "supporting" not in macros["claimTemperature"]
    assert "paper scale" in (tmp_path / "gen" / "scale.tex").read_text()


def test_revise_either_direction_supports_a_change(tmp_path):
    better = results._row("revise_calibration", "s", "ECE R1-R0", (-0.1, -0.2, -0.05), 50, "<0")
    worse = results._row("revise_calibration", "s", "ECE R1-R0", (0.1, 0.05, 0.2), 50, "<0")
    worse["supported"] = "yes (worse)"  # as scaling_claims marks it
    macros = latex.claim_sentences(pd.DataFrame([better, worse]))
    first, second = macros["claimRevise"].split(". On ")
    assert "lowers ECE" in first and "raises ECE" in second


def test_metrics_table_carries_every_estimator_and_interval(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for name in ("msp", "semantic_entropy", "p_true"):
        v = rng.random(4)
        rows.append({"group": "all", "estimator": name, "n": 100, "n_missing": 0,
                     **{m: v[i] for i, m in enumerate(("auroc", "prr", "ece", "brier"))},
                     **{f"{m}_low": v[i] - 0.05 for i, m in enumerate(("auroc", "prr", "ece", "brier"))},
                     **{f"{m}_high": v[i] + 0.05 for i, m in enumerate(("auroc", "prr", "ece", "brier"))}})  # fmt: skip
    rows[2]["n"] = 4  # an estimator that gave a confidence for 4 questions of 100
    rows.append({**rows[0], "group": "closed", "estimator": "closed_only"})
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / "run_x__metrics.csv", index=False)
    latex.write(tmp_path, tmp_path / "gen")
    tex = (tmp_path / "gen" / "table_run_x.tex").read_text()
    body = [line for line in tex.splitlines() if line.endswith("\\\\") and "estimator" not in line]
    assert [line.split(" & ")[0] for line in body] == [
        latex.tex(n)
        for n in table[table["group"] == "all"].sort_values("auroc", ascending=False)["estimator"]
    ]
    r = table.iloc[1]
    assert f"{r['ece']:.3f} {{\\scriptsize [{r['ece'] - 0.05:.3f}, {r['ece'] + 0.05:.3f}]}}" in tex
    assert "closed\\_only" not in tex
    assert [line.split(" & ")[1] for line in body if line.startswith("p\\_true")] == ["4"]


def test_no_results_still_builds_the_inputs(tmp_path):
    written = latex.write(tmp_path / "none", tmp_path / "gen")
    assert {p.name for p in written} == {"claims.tex", "scale.tex", "table_claims.tex"}
    assert "no results yet" in (tmp_path / "gen" / "scale.tex").read_text()
    assert (tmp_path / "gen" / "table_claims.tex").read_text().count("not measured") == len(latex.CLAIMS)


def test_runs_table_names_each_runs_commit(tmp_path):
    (tmp_path / "runs.csv").write_text(
        "run,commit,made,minutes,command\ncompare_smollm2,53cc512a1b2c,2026-12-06,36.5,calib task=mixed\n"
        "tuning/tuning_probe_250,unknown,,,calib experiment=calibration_tuning\n"
    )
    latex.write(tmp_path, tmp_path / "gen")
    table = (tmp_path / "gen" / "table_runs.tex").read_text()
    assert "compare\\_smollm2 & \\texttt{53cc512a1b2c} & 2026-12-06 & 36.5" in table
    assert "tuning/tuning\\_probe\\_250 & \\texttt{unknown} &  & " in table


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_paper_without_latexmk_names_the_debian_packages(tmp_path):
    done = subprocess.run(
        [shutil.which("make"), "-s", "-C", str(ROOT), "latexmk-check"],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("make paper: latexmk is missing; install: sudo apt-get install -y latexmk")
    assert "texlive-latex-extra" in lines[0] and "texlive-fonts-recommended" in lines[0]


def test_paper_scale_runs_meet_the_issue_sizes(tmp_path, capsys):
    """Every paper-scale run composes, and the sizes are the issue's: the whole built-in mixed suite for both models,
    at least 200 evaluation questions for each study, 1,000 bootstrap resamples everywhere."""
    from calib.pipeline.config import compose
    from calib.tasks import load_task
    from calib.tasks.tuning import evaluation_examples
    from paper.figures import main, runs

    cfgs = {r.name: compose(r.overrides("paper")) for r in runs("paper")}
    compare_models = {c.model.name for n, c in cfgs.items() if n.startswith("compare_")}
    assert compare_models == {"smollm2-135m-instruct", "gemma3-270m"}
    mixed = len(load_task("mixed").examples)
    for name, cfg in cfgs.items():
        assert cfg.metrics.n_resamples >= 1000, name
        if name.startswith("compare_") or name == "temperature":
            assert cfg.task.limit is None and cfg.task.name == "mixed" and mixed >= 200, name
        elif name == "scaling":
            assert cfg.task.limit >= 200
        else:
            t = cfg.study.calibration_tuning
            assert t.eval_limit is None and len(evaluation_examples(t.eval_kind)) >= 200, name
    budgets = sorted(c.study.calibration_tuning.n for n, c in cfgs.items() if n.startswith("tuning_lora"))
    assert len(budgets) >= 3
    main(["--dry-run", "--work", str(tmp_path)])  # nothing runs: each run says what it would do
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(cfgs) and all("would run  calib " in line for line in out)


def test_figures_cli_refuses_unknown_runs_and_unfinished_tuning_folders(tmp_path, capsys):
    """--only with a name that is not a run, or --tuning-runs with a folder that holds no finished study: one line
    naming what is wrong, and nothing runs."""
    from paper.figures import main

    with pytest.raises(SystemExit) as err:
        main(["--work", str(tmp_path), "--only", "compare_llama"])
    assert "no run named compare_llama" in str(err.value) and "compare_smollm2" in str(err.value)
    with pytest.raises(SystemExit) as err:
        main(["--work", str(tmp_path), "--tuning-runs", str(tmp_path), "--dry-run"])
    assert f"{tmp_path} has no tuning.json" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_figures_dry_run_with_tuning_runs_plans_no_tuning(tmp_path, capsys):
    from paper.figures import main, runs

    done = tmp_path / "tuned"
    done.mkdir()
    (done / "tuning.json").write_text("{}")
    main(["--work", str(tmp_path), "--tuning-runs", str(done), "--dry-run"])
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out] == [
        r.name for r in runs("paper") if not r.name.startswith("tuning_")
    ]


def test_a_claim_tested_many_times_reads_as_a_count_and_a_table(tmp_path):
    """Over MAX_SENTENCES tests of one claim: one sentence counting the verdicts, then a row per test."""
    tests = [((0.2, 0.1, 0.3), "yes")] * 3 + [((0.05, -0.02, 0.12), "undetermined")] * 2
    claims = pd.DataFrame(
        [
            results._row("label_budget", "tuning", f"AUROC probe N={n} - AUROC untuned p_true", v, 201, ">0")
            for n, (v, _) in zip((250, 500, 1000, 2000, 4000), tests)
        ]
    )
    assert [r for r in claims["supported"]] == [verdict for _, verdict in tests]
    claims.to_csv(tmp_path / "claims.csv", index=False)
    latex.write(tmp_path, tmp_path / "gen")
    text = (tmp_path / "gen" / "claims.tex").read_text()
    assert "Of 5 paired comparisons on \\texttt{tuning}, 3 say that the tuned estimator beats" in text
    assert "2 say that the paired interval includes 0" in text
    assert text.count("AUROC probe N=") == 5 and "\\begin{tabular}" in text
    assert "run &" not in text  # one run: no run column


def test_a_claim_table_over_several_runs_names_each_rows_run(tmp_path):
    """Tests of one claim from two models' runs: each row says which run it is (the quantities read alike)."""
    claims = pd.DataFrame(
        [
            results._row("sampling_vs_token", run, f"AUROC {e} - AUROC msp", (-0.02, -0.05, 0.01), 709, ">0")
            for run in ("compare_a", "compare_b")
            for e in ("semantic_entropy", "self_consistency")
        ]
    )
    claims.to_csv(tmp_path / "claims.csv", index=False)
    latex.write(tmp_path, tmp_path / "gen")
    text = (tmp_path / "gen" / "claims.tex").read_text()
    rows = [line for line in text.splitlines() if line.endswith("\\\\") and "AUROC" in line]
    assert [r.split(" & ")[0] for r in rows] == ["\\texttt{compare\\_a}"] * 2 + ["\\texttt{compare\\_b}"] * 2


def test_tuning_table_has_a_row_per_method_and_n_and_a_block_per_question_kind(tmp_path):
    rows = []
    for kind in ("closed", "open_ended"):
        for method, n in (("lora", 250), ("lora", 1000), ("p_true", None), ("msp", None)):
            for k, metric in enumerate(("auroc", "ece", "brier")):
                value = 0.5 + 0.01 * k + (0.1 if kind == "open_ended" else 0.0)
                rows.append(dict(method=method, N=n, eval=kind, metric=metric, value=value, low=value - 0.05,
                                 high=value + 0.05, n_questions=201, diff_p_true=0.03, diff_low=-0.01,
                                 diff_high=0.07))  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "tuning__tuning_report.csv", index=False)
    tex = latex.tuning_table(tmp_path / "tuning__tuning_report.csv")
    assert "\\emph{closed questions}" in tex and "\\emph{open-ended questions}" in tex
    body = [line for line in tex.splitlines() if line.endswith("\\\\") and "&" in line][
        1:
    ]  # rows, not the header
    assert len(body) == 8  # (lora 250, lora 1000, msp, p_true) x two kinds, metrics as columns
    first = body[0].split(" & ")
    assert first[:2] == ["lora", "250"] and first[2].startswith("0.500") and first[4].startswith("0.510")
    assert sum("ref." in line for line in body) == 2 and body[4].split(" & ")[2].startswith("0.600")


@pytest.mark.parametrize(
    ("verdicts", "phrase"),
    [
        ([], "not measured"),
        (["yes", "yes (worse)"], "supported"),
        (["yes", "undetermined"], "partly supported"),
        (["no", "undetermined"], "contradicted"),
        (["yes", "no"], "mixed"),
        (["undetermined", "undefined"], "not shown at this scale"),
    ],
)
def test_a_claims_overall_verdict_follows_its_tests(verdicts, phrase):
    assert latex.overall_verdict(verdicts) == phrase


def test_claims_summary_table_has_a_row_per_mission_claim(tmp_path):
    claims = pd.DataFrame([results._row("token_overconfidence", "c", "q", (0.1, 0.05, 0.2), 709, ">0")])
    claims.to_csv(tmp_path / "claims.csv", index=False)
    latex.write(tmp_path, tmp_path / "gen")
    table = (tmp_path / "gen" / "table_claims.tex").read_text()
    rows = [line for line in table.splitlines() if line.count("&") == 3][1:]
    assert len(rows) == len(latex.CLAIMS) == len(results.CLAIM_ORDER)
    assert rows[0].endswith("& 1 & 1 yes & supported \\\\") and rows[-1].endswith(
        "& 0 & -- & not measured \\\\"
    )
