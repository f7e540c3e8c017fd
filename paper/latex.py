"""LaTeX tables and claim sentences for paper/main.tex, written from the result CSVs (paper/results.py), never typed.

    python -m paper.latex --results paper/results --out paper/generated

Writes, into --out: `table_<run>.tex` (one per result table the paper shows), `claims.tex` (one macro per claim of the
mission, `\\claimTokenOverconfidence` ..., each a sentence whose wording follows from the interval: supported, not
supported, or contradicted at this scale) and `scale.tex` (`\\resultsScale`: what the numbers were run on; a tiny
mode's CSVs say so in bold). Missing CSVs give a sentence saying the run is missing, so the PDF always builds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from calib.cache import atomic_write_text


class Claim(NamedTuple):
    """One of the mission's claims as the paper words it: its LaTeX macro, its title in the summary table, and what
    each verdict of a test says."""

    macro: str
    title: str
    yes: str
    undetermined: str
    no: str


CLAIMS = {  # the mission's claims, in its order (paper/results.py orders claims.csv by this)
    "token_overconfidence": Claim(
        "claimTokenOverconfidence",
        "token probabilities are overconfident",
        "the token probability is overconfident (the interval lies above 0)",
        "the interval includes 0, so this scale does not show token overconfidence",
        "the token probability is underconfident here, contrary to the claim",
    ),
    "temperature_tradeoff": Claim(
        "claimTemperature",
        "temperature trades accuracy against calibration",
        "the interval lies above 0, supporting the trade-off",
        "the interval includes 0, so this scale does not support it",
        "the interval lies below 0, contrary to the claim",
    ),
    "sampling_vs_token": Claim(
        "claimSampling",
        "sampling-based estimators beat token baselines",
        "the sampling-based estimator discriminates better than MSP",
        "the paired interval includes 0: no difference at this scale",
        "MSP, a token baseline, discriminates better",
    ),
    "semantic_entropy_open_ended": Claim(
        "claimSemanticEntropy",
        "semantic entropy misfires on open-ended questions",
        "semantic entropy ranks open-ended answers worse than multi-hypothesis confidence, as claimed",
        "the paired interval includes 0: this scale does not show semantic entropy misfiring",
        "semantic entropy ranks open-ended answers better, contrary to the claim",
    ),
    "revise_calibration": Claim(
        "claimRevise",
        "revising changes calibration",
        "one revision pass lowers ECE",
        "the paired interval includes 0: no change at this scale",
        "one revision pass raises ECE: calibration changes, for the worse",
    ),
    "label_budget": Claim(
        "claimLabelBudget",
        "calibration-tuning pays off within a small label budget",
        "the tuned estimator beats untuned P(True)",
        "the paired interval includes 0: no gain over untuned P(True) at this N",
        "untuned P(True) is better",
    ),
}
MAX_SENTENCES = 3  # a claim tested more often than this reads as a count and a table, not a wall of sentences
METRIC_LABELS = {"auroc": "AUROC", "prr": "PRR", "ece": "ECE", "brier": "Brier", "accuracy": "Acc."}


def tex(text: object) -> str:
    """Escape LaTeX's special characters in a name or number."""
    out = str(text)
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("_", r"\_"),
        ("%", r"\%"),
        ("&", r"\&"),
        ("#", r"\#"),
        ("$", r"\$"),
    ):
        out = out.replace(a, b)
    return out


def cell(value: float, low: float = math.nan, high: float = math.nan, sign: bool = False) -> str:
    if value is None or not math.isfinite(float(value)):
        return "undef."
    fmt = "+.3f" if sign else ".3f"
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return f"{value:{fmt}}"
    return f"{value:{fmt}} {{\\scriptsize [{low:{fmt}}, {high:{fmt}}]}}"


def tabular(header: list[str], rows: list[list[str] | str], align: str) -> str:
    """A booktabs table; a row given as a string is a line of its own (a block heading, a rule)."""
    lines = [f"\\begin{{tabular}}{{{align}}}", "\\toprule", " & ".join(header) + r" \\", "\\midrule"]
    lines += [r if isinstance(r, str) else " & ".join(r) + r" \\" for r in rows]
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", ""])


def metrics_table(path: Path) -> str:
    """Estimator rows (best AUROC first), AUROC / PRR / ECE / Brier with intervals, all questions; n: the questions
    the estimator gave a confidence for (a parser that reads few answers shows here, not only in a wide interval)."""
    t = pd.read_csv(path)
    t = t[t["group"] == "all"]
    metrics = [m for m in ("auroc", "prr", "ece", "brier") if m in t.columns]
    if "auroc" in t:
        t = t.sort_values("auroc", ascending=False, na_position="last")
    counts = ["n"] if "n" in t else []
    rows = [
        [tex(r["estimator"]), *(f"{int(r[c])}" for c in counts),
         *(cell(r[m], r[f"{m}_low"], r[f"{m}_high"]) for m in metrics)]
        for _, r in t.iterrows()
    ]  # fmt: skip
    header = ["estimator", *("$n$" for _ in counts), *(METRIC_LABELS[m] for m in metrics)]
    return tabular(header, rows, "l" + "r" * (len(counts) + len(metrics)))


def temperature_table(decoding: Path, posthoc: Path) -> str:
    """Accuracy and ECE (model MSP) per mode and T; n: the answers with a confidence (an empty one has none)."""
    parts = [pd.read_csv(decoding).assign(mode="decoding"), pd.read_csv(posthoc).assign(mode="post-hoc")]
    t = pd.concat(parts, ignore_index=True)
    t = t[t["confidence"] == "model"] if "confidence" in t else t
    rows = [[r["mode"], f"{r['T']:g}", f"{int(r['n'])}", cell(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
             cell(r["ece"], r["ece_low"], r["ece_high"])] for _, r in t.sort_values(["mode", "T"]).iterrows()]  # fmt: skip
    return tabular(["mode", "$T$", "$n$", "accuracy", "ECE"], rows, "lrrrr")


def scaling_table(path: Path) -> str:
    """K, R, accuracy and majority-vote accuracy with intervals, generated tokens and GFLOPs per question."""
    t = pd.read_csv(path)
    rows = [
        [
            f"{int(r['K'])}",
            f"{int(r['R'])}",
            cell(r["accuracy"], r["accuracy_low"], r["accuracy_high"]),
            cell(r["vote_accuracy"], r["vote_accuracy_low"], r["vote_accuracy_high"]),
            f"{r['generated_tokens']:.0f}",
            f"{r['flops'] / 1e9:.1f}",
        ]
        for _, r in t.iterrows()
    ]
    header = ["$K$", "$R$", "accuracy", "vote accuracy", "tokens/q", "GFLOPs/q"]
    return tabular(header, rows, "rrrrrr")


def tuning_table(path: Path) -> str:
    """One row per (question kind, method, N): each metric's value and its paired difference to untuned P(True),
    closed and open-ended questions in two blocks; untuned baselines (no N) close each block."""
    t = pd.read_csv(path)
    metrics = [m for m in ("auroc", "ece", "brier") if m in set(t["metric"])]
    header = ["method", "$N$"]
    for m in metrics:
        header += [METRIC_LABELS[m], "$-$ P(True)"]
    lines: list[list[str] | str] = []
    t = t.assign(_untuned=t["N"].isna(), _n=t["N"].fillna(0))
    for kind, block in t.groupby("eval", sort=True):
        lines.append(
            f"\\multicolumn{{{len(header)}}}{{l}}{{\\emph{{{tex(str(kind).replace('_', '-'))} questions}}}} \\\\"
        )
        for (method, n), rows in block.sort_values(["_untuned", "method", "_n"]).groupby(
            ["method", "N"], sort=False, dropna=False
        ):
            by = rows.set_index("metric")
            cells = [tex(method), "" if pd.isna(n) else f"{int(n)}"]
            for m in metrics:
                if m not in by.index:
                    cells += ["", ""]
                    continue
                r = by.loc[m]
                cells.append(cell(r["value"], r["low"], r["high"]))
                cells.append(
                    "ref."
                    if method == "p_true"
                    else cell(r["diff_p_true"], r["diff_low"], r["diff_high"], sign=True)
                )
            lines.append(cells)
        lines.append("\\midrule")
    return tabular(header, lines[:-1], "ll" + "rr" * len(metrics))  # the last block ends at the bottom rule


def runs_table(path: Path) -> str:
    """Which run made which CSVs: the commit of calib, the day and the minutes (results may come from several
    sessions; COMMANDS.md has the full commands)."""
    t = pd.read_csv(path, dtype=str).fillna("")
    rows = [
        [tex(r["run"]), f"\\texttt{{{tex(r['commit'])}}}", tex(r["made"]), tex(r["minutes"])]
        for _, r in t.iterrows()
    ]
    return tabular(["run", "calib commit", "made", "minutes"], rows, "lllr")


def claim_sentences(claims: pd.DataFrame) -> dict[str, str]:
    out = {}
    for claim, (macro, _, yes, undetermined, no) in CLAIMS.items():
        part = claims[claims["claim"] == claim]
        if part.empty:
            out[macro] = "Not measured: the results hold no run for this claim."
            continue
        verdicts = {
            "yes": yes,
            "yes (worse)": no,  # revise: a change for the worse still supports "revise changes calibration"
            "undetermined": undetermined,
            "no": no,
            "undefined": "undefined on these runs (one grade among the questions, or too few of them)",
            "negligible": "the whole interval is within 0.0005 of 0, so this scale shows no effect",
        }
        if len(part) > MAX_SENTENCES:
            out[macro] = claim_table(part, verdicts)
            continue
        sentences = []
        for _, r in part.iterrows():
            sentences.append(
                f"On \\texttt{{{tex(r['run'])}}}, {tex(r['quantity'])} $=$ {cell(r['value'], r['low'], r['high'], sign=True)} "
                f"($n={int(r['n'])}$): {verdicts[str(r['supported'])]}."
            )
        out[macro] = " ".join(sentences)
    return out


def claim_table(part: pd.DataFrame, verdicts: dict[str, str]) -> str:
    """Many tests of one claim (e.g. every method x N x question kind): a count of verdicts, then one row each."""
    counts = part["supported"].astype(str).value_counts()
    said = [f"{n} {'says' if n == 1 else 'say'} that {verdicts[v]}" for v, n in counts.items()]
    names = list(dict.fromkeys(part["run"]))
    runs = ", ".join(f"\\texttt{{{tex(r)}}}" for r in names)
    rows = [[tex(r["quantity"]), cell(r["value"], r["low"], r["high"], sign=True), f"{int(r['n'])}",
             tex(r["supported"])] for _, r in part.iterrows()]  # fmt: skip
    header, align = ["paired difference", "value [95\\% interval]", "$n$", "supported"], "lrrl"
    if len(names) > 1:  # which run (model) each row is
        rows = [[f"\\texttt{{{tex(r)}}}", *row] for r, row in zip(part["run"], rows)]
        header, align = ["run", *header], "l" + align
    table = tabular(header, rows, align)
    return (f"Of {len(part)} paired comparisons on {runs}, " + "; ".join(said) + ".\n"
            f"\\begin{{center}}\\scriptsize\n{table}\\end{{center}}")  # fmt: skip


def overall_verdict(verdicts: list[str]) -> str:
    """One word for a claim from its tests' verdicts: all 'yes' -> supported; none -> not measured."""
    if not verdicts:
        return "not measured"
    yes = sum(v.startswith("yes") for v in verdicts)
    no = verdicts.count("no")
    if yes == len(verdicts):
        return "supported"
    if yes and not no:
        return "partly supported"
    if no and not yes:
        return "contradicted"
    if yes and no:
        return "mixed"
    return "not shown at this scale"


def summary_table(claims: pd.DataFrame) -> str:
    """The mission's claims, one row each: how many tests, how they came out, and the verdict in one word."""
    rows = []
    for claim, c in CLAIMS.items():
        verdicts = [str(v) for v in claims.loc[claims["claim"] == claim, "supported"]] if len(claims) else []
        counts = pd.Series(verdicts, dtype=str).value_counts()
        detail = ", ".join(f"{n} {v}" for v, n in counts.items()) or "--"
        rows.append([tex(c.title), f"{len(verdicts)}", tex(detail), overall_verdict(verdicts)])
    return tabular(["claim", "tests", "verdicts of the tests", "at this scale"], rows, "lrll")


def write(results: str | Path, out: str | Path) -> list[Path]:
    """Every .tex file main.tex inputs, from the CSVs in results."""
    results, out = Path(results), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def put(name: str, text: str) -> None:
        atomic_write_text(out / name, text)
        written.append(out / name)

    for path in sorted(results.glob("*__metrics.csv")):
        put(f"table_{path.name.split('__')[0]}.tex", metrics_table(path))
    for path in sorted(results.glob("*__sweep_decoding.csv")):
        run = path.name.split("__")[0]
        put(f"table_{run}.tex", temperature_table(path, results / f"{run}__sweep_posthoc.csv"))
    for path in sorted(results.glob("*__accuracy.csv")):
        put(f"table_{path.name.split('__')[0]}.tex", scaling_table(path))
    if (results / "tuning__tuning_report.csv").is_file():  # all tuning runs merged (paper/results.py)
        put("table_tuning.tex", tuning_table(results / "tuning__tuning_report.csv"))
    if (results / "runs.csv").is_file():
        put("table_runs.tex", runs_table(results / "runs.csv"))
    claims_csv = results / "claims.csv"
    claims = pd.read_csv(claims_csv) if claims_csv.is_file() else pd.DataFrame(columns=["claim"])
    put("claims.tex", "".join(f"\\newcommand{{\\{m}}}{{{s}}}\n" for m, s in claim_sentences(claims).items()))
    put("table_claims.tex", summary_table(claims))
    scale_file = results / "SCALE"
    scale = scale_file.read_text().strip() if scale_file.is_file() else "no results yet: run make figures"
    tiny = scale.startswith("tiny")
    shown = f"\\textbf{{{tex(scale)}: a pipeline check, not results}}" if tiny else tex(scale)
    put("scale.tex", f"\\newcommand{{\\resultsScale}}{{{shown}}}\n")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paper.latex", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="paper/results")
    parser.add_argument("--out", default="paper/generated")
    args = parser.parse_args(argv)
    for path in write(args.results, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
