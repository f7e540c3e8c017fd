"""Calibration-tuning against the label budget: several `calib experiment=calibration_tuning` runs (N x method) in
one tidy table and one figure.

    calib tuning-report RUN [RUN ...] --out DIR     (a RUN may be a folder holding several study runs)

Each study run leaves `tuning.json` (what was trained, on how many labels) and its evaluation, a main-job run in
`eval/` (calib.tuning.study). Read from there, never recomputed:
- the tuned estimator's metrics with their bootstrap intervals (`eval/metrics.csv`), one row per (method, N,
  metric); the untuned baselines P(True), MSP and semantic entropy of the same evaluation runs as rows with N empty
  (they need no labels);
- computed here: each row's paired difference to untuned P(True) on the same questions and grades
  (calib.metrics.paired_bootstrap over `eval/results.parquet`, with the evaluation run's metric settings), so an
  interval excluding 0 says the tuning changed the metric on these questions; for multi-hypothesis with a tuned
  judge also the paired difference to multi-hypothesis with the untuned one (P(True)), the judge's own effect;
  and every row's paired difference to MSP, the strongest label-free baseline on closed questions here.

Runs are compared only on one evaluation: two runs of the same eval kind that answered different questions (another
eval_limit, model or decoding) are refused, as are two runs of the same method and N.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from calib.errors import CalibError

BASELINES = (
    "p_true",
    "msp",
    "semantic_entropy",
    "multi_hypothesis",
)  # untuned, from every evaluation that has them
TUNED = {"lora": "calibration_tuned", "probe": "probe"}  # method -> the tuned estimator's name in eval/
JUDGED = "multi_hypothesis_tuned"  # multi-hypothesis with the run's tuned judge ...
UNTUNED_JUDGE = "multi_hypothesis"  # ... beside the same with untuned P(True) as its judge
JUDGED_PREFIX = "multi_hypothesis, "  # the table's method for JUDGED rows: this + "<run's method> judge"
REFERENCE = "p_true"
STRONGEST = "msp"  # the label-free baseline a tuned estimator has to beat to be worth its labels
COLUMNS = [
    "method",
    "N",
    "eval",
    "metric",
    "value",
    "low",
    "high",
    "n_questions",
    "diff_p_true",
    "diff_low",
    "diff_high",
    "diff_untuned_judge",  # multi-hypothesis with the tuned judge only: minus the untuned judge's, paired
    "judge_low",
    "judge_high",
    "diff_msp",  # minus MSP's, paired
    "msp_low",
    "msp_high",
    "run",
]


@dataclass(frozen=True)
class TuningRun:
    """One finished calibration-tuning study run."""

    folder: Path
    method: str
    n_labels: int
    eval_dir: Path
    eval_kind: str
    eval_key: str  # the evaluation's generate key: same key = same questions and answers


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Study run folders (holding tuning.json) at or below each path, in order."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "tuning.json").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("tuning.json"))
        else:
            raise CalibError(f"tuning-report: {path} does not exist; pass calibration-tuning run folders")
    if not found:
        raise CalibError(
            f"tuning-report: no calibration-tuning runs (folders with tuning.json) under {', '.join(map(str, paths))};"
            " make them with `calib experiment=calibration_tuning study.calibration_tuning.n=N`"
        )
    return list(dict.fromkeys(found))


def read_run(folder: Path) -> TuningRun:
    """What one study run trained and where its evaluation is (tuning.json, eval/config.yaml, eval/manifest.json)."""
    from omegaconf import OmegaConf

    record = json.loads((folder / "tuning.json").read_text())
    eval_dir = folder / "eval"
    missing = [
        f
        for f in ("manifest.json", "config.yaml", "metrics.csv", "results.parquet")
        if not (eval_dir / f).is_file()
    ]
    if missing:
        raise CalibError(
            f"tuning-report: {eval_dir} lacks {', '.join(missing)}; rerun that study's command to finish its evaluation"
        )
    cfg = OmegaConf.to_container(OmegaConf.load(eval_dir / "config.yaml")) or {}
    tuning = (cfg.get("study") or {}).get("calibration_tuning") or {}
    manifest = json.loads((eval_dir / "manifest.json").read_text())
    method = str(tuning.get("method", ""))
    if method not in TUNED:
        raise CalibError(
            f"tuning-report: {eval_dir / 'config.yaml'} names method {method!r}, not lora or probe"
        )
    return TuningRun(
        folder=folder,
        method=method,
        n_labels=int(record["n"]),
        eval_dir=eval_dir,
        eval_kind=str(tuning.get("eval_kind", "closed")),
        eval_key=str(manifest["stages"]["generate"]["key"]),
    )


def _check(runs: list[TuningRun]) -> None:
    seen: dict[tuple, Path] = {}
    keys: dict[str, TuningRun] = {}
    for r in runs:
        other = seen.setdefault((r.method, r.n_labels, r.eval_kind), r.folder)
        if other != r.folder:
            raise CalibError(
                f"tuning-report: {other} and {r.folder} are both {r.method} with N={r.n_labels} on {r.eval_kind}; "
                "pass one of them"
            )
        first = keys.setdefault(r.eval_kind, r)
        if first.eval_key != r.eval_key:
            raise CalibError(
                f"tuning-report: {first.folder} and {r.folder} evaluate {r.eval_kind} questions differently "
                "(another eval_limit, model or decoding); report them separately"
            )


def _paired(
    fn, wide: pd.DataFrame, correct: pd.Series, name: str, opts: dict, reference: str = REFERENCE
) -> tuple[float, float, float]:
    """metric(name) - metric(reference) on the questions where both have a confidence, with its paired interval.
    wide: confidences [question, estimator]; correct: the grades by question."""
    from calib.metrics import paired_bootstrap

    if name not in wide or reference not in wide:
        return math.nan, math.nan, math.nan
    both = wide[[name, reference]].dropna()
    y = correct.reindex(both.index).to_numpy(np.float64)
    a, b = both[name].to_numpy(np.float64), both[reference].to_numpy(np.float64)
    with (
        warnings.catch_warnings()
    ):  # undefined (e.g. AUROC on one grade) is reported as NaN, not as a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        defined = len(both) >= 2 and math.isfinite(float(fn(a, y))) and math.isfinite(float(fn(b, y)))
    if not defined:
        return math.nan, math.nan, math.nan
    d = paired_bootstrap(fn, a, b, y, **opts)
    return d.point, d.low, d.high


def _rows(run: TuningRun, names: Sequence[str], group: str, metrics: Sequence[str] | None) -> list[dict]:
    from calib.pipeline.compare_paired import metrics_config
    from calib.pipeline.evaluate import METRICS, metric_functions

    wide = pd.read_csv(run.eval_dir / "metrics.csv")
    wide = wide[wide["group"] == group]
    if wide.empty:
        raise CalibError(
            f"tuning-report: {run.eval_dir / 'metrics.csv'} has no {group!r} rows (groups: all, closed, open_ended)"
        )
    present = [m for m in METRICS if m in wide.columns]
    chosen = [m for m in (metrics or present) if m in present]
    if not chosen:
        raise CalibError(
            f"tuning-report: none of {list(metrics or [])} in {run.eval_dir / 'metrics.csv'} (it has {present})"
        )
    results = pd.read_parquet(
        run.eval_dir / "results.parquet",
        columns=["question_id", "open_ended", "estimator", "confidence", "correct"],
    )
    if group != "all":
        results = results[results["open_ended"].astype(bool) == (group == "open_ended")]
    cfg = metrics_config(run.eval_dir)
    cfg.names = chosen
    fns = metric_functions(cfg)
    opts = dict(n_resamples=max(cfg.n_resamples, 2), alpha=cfg.alpha, seed=cfg.seed)
    confidences = results.pivot_table(
        index="question_id", columns="estimator", values="confidence", aggfunc="first"
    )
    correct = results.drop_duplicates("question_id").set_index("question_id")["correct"]
    paired = functools.partial(_paired, wide=confidences, correct=correct, opts=opts)
    rows = []
    for name in names:
        part = wide[wide["estimator"] == name]
        if part.empty:
            continue
        r = part.iloc[0]
        tuned = name in (TUNED[run.method], JUDGED)
        label = f"{JUDGED_PREFIX}{run.method} judge" if name == JUDGED else run.method if tuned else name
        for metric in chosen:
            fn, undefined = fns[metric], (math.nan,) * 3
            diff = undefined if name == REFERENCE else paired(fn, name=name)
            judge = paired(fn, name=name, reference=UNTUNED_JUDGE) if name == JUDGED else undefined
            strongest = (
                undefined if name in (STRONGEST, REFERENCE) else paired(fn, name=name, reference=STRONGEST)
            )
            rows.append(
                {
                    "method": label,
                    "N": run.n_labels if tuned else None,
                    "eval": run.eval_kind,
                    "metric": metric,
                    "value": float(r[metric]),
                    "low": float(r[f"{metric}_low"]),
                    "high": float(r[f"{metric}_high"]),
                    "n_questions": int(r["n"]),
                    "diff_p_true": diff[0],
                    "diff_low": diff[1],
                    "diff_high": diff[2],
                    "diff_untuned_judge": judge[0],
                    "judge_low": judge[1],
                    "judge_high": judge[2],
                    "diff_msp": strongest[0],
                    "msp_low": strongest[1],
                    "msp_high": strongest[2],
                    "run": str(run.folder),
                }
            )
    return rows


def gather(
    paths: Sequence[str | Path], metrics: Sequence[str] | None = None, group: str = "all"
) -> pd.DataFrame:
    """The tidy table (COLUMNS) of every calibration-tuning run at or below paths: tuned rows by (method, N) (and
    multi-hypothesis with that run's tuned judge, where the evaluation ran it), then the untuned baselines once per
    evaluation."""
    runs = [read_run(p) for p in find_runs(paths)]
    _check(runs)
    rows: list[dict] = []
    baselines_done: set[str] = set()
    for run in sorted(runs, key=lambda r: (r.eval_kind, r.method, r.n_labels)):
        rows += _rows(run, [TUNED[run.method], JUDGED], group, metrics)
    for run in runs:
        if run.eval_kind not in baselines_done:
            baselines_done.add(run.eval_kind)
            rows += _rows(run, BASELINES, group, metrics)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["N"] = table["N"].astype("Int64")
    return table


def plot(table: pd.DataFrame, out_base: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Metric vs N (log axis), one line per method with interval bars; each baseline a horizontal band (its
    interval) with its point as a dashed line. One column per metric, one row per evaluation kind."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from calib.pipeline.evaluate import METRICS
    from calib.plots import COLORS, STYLE, save_figure, undefined_note

    metrics = list(dict.fromkeys(table["metric"]))
    kinds = list(dict.fromkeys(table["eval"]))
    # one colour per method in every panel: tuned methods first, then the baselines
    names = sorted(set(table.loc[table["N"].notna(), "method"])) + [
        b for b in dict.fromkeys(table.loc[table["N"].isna(), "method"])
    ]
    color = {name: COLORS[i % len(COLORS)] for i, name in enumerate(names)}
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(3.3 * max(len(metrics), 1), 2.9 * max(len(kinds), 1)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = np.atleast_2d(fig.subplots(max(len(kinds), 1), max(len(metrics), 1), squeeze=False))
        for i, kind in enumerate(kinds):
            for j, metric in enumerate(metrics):
                ax = axes[i, j]
                part = table[(table["eval"] == kind) & (table["metric"] == metric)]
                tuned = part[part["N"].notna()]
                ns = sorted({int(n) for n in tuned["N"]})
                groups = list(tuned.groupby("method", sort=True))
                for c, (method, rows) in enumerate(groups):
                    rows = rows.sort_values("N")
                    v = rows["value"].to_numpy(np.float64)
                    # methods side by side at each N (a few % apart on the log axis), so bars do not hide each other
                    x = rows["N"].to_numpy(np.float64) * 1.06 ** (c - (len(groups) - 1) / 2)
                    err = np.abs(
                        np.vstack(
                            [v - rows["low"].to_numpy(np.float64), rows["high"].to_numpy(np.float64) - v]
                        )
                    )
                    ax.errorbar(x, v, yerr=np.nan_to_num(err), marker="o", markersize=4, capsize=3,
                                color=color[method], label=f"{method} (tuned)")  # fmt: skip
                for _, r in part[part["N"].isna()].iterrows():
                    if not math.isfinite(r["value"]):
                        continue
                    ax.axhspan(r["low"], r["high"], color=color[r["method"]], alpha=0.12, linewidth=0)
                    ax.axhline(r["value"], color=color[r["method"]], linestyle="--", linewidth=1,
                               label=f"{r['method']} (untuned)")  # fmt: skip
                if ns:
                    ax.set_xscale("log")
                    ax.set_xticks(ns, [str(n) for n in ns])
                    ax.minorticks_off()
                    ax.set_xlim(min(ns) / 1.6, max(ns) * 1.6)
                info = METRICS.get(metric)
                label = info.label if info else metric
                if not np.isfinite(part["value"].to_numpy(np.float64)).any():
                    undefined_note(ax, f"no {label} on these runs (e.g. every answer has the same grade)")
                arrow = "" if info is None else (" ↑" if info.higher_is_better else " ↓")
                ax.set(xlabel="N (training labels)", ylabel=label + arrow, title=f"{label}, {kind} questions")
        # one legend for every panel, below them: in the panels it covered the points and bands
        entries = {}
        for ax in axes.flat:
            for handle, name in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(name, handle)
        if entries:
            names = sorted(entries, key=lambda n: (n.endswith("(untuned)"), n))
            fig.legend([entries[n] for n in names], names, loc="outside lower center", ncols=min(4, len(names)),
                       frameon=False, fontsize=7)  # fmt: skip
        return save_figure(fig, out_base, list(formats))


def write(table: pd.DataFrame, out_dir: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """tuning_report.csv, tuning_report.md and the tuning_vs_labels figure in out_dir."""
    from calib.cache import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "tuning_report.csv", table.to_csv(index=False, float_format="%.6g"))
    atomic_write_text(out / "tuning_report.md", markdown(table) + "\n")
    return [
        out / "tuning_report.csv",
        out / "tuning_report.md",
        *plot(table, out / "tuning_vs_labels", formats),
    ]


def costs(paths: Sequence[str | Path]) -> pd.DataFrame:
    """What each trained artifact cost, from each run's tuning.json: training seconds (LoRA: the steps; probe: the
    hidden-state pass and the fits; not the generation of the training answers, a stage of its own), steps, the
    training's peak RSS (LoRA) and the training answers' accuracy. Runs sharing an artifact count once."""
    rows = []
    for folder in find_runs(paths):
        record = json.loads((folder / "tuning.json").read_text())
        run = read_run(folder)
        rows.append(
            {
                "method": run.method,
                "N": run.n_labels,
                "train_seconds": record.get("train_seconds", float("nan")),
                "steps": record.get("steps"),
                "peak_rss_gib": record.get("peak_rss_bytes", float("nan")) / 2**30,
                "train_accuracy": record.get("accuracy", float("nan")),
                "artifact": record.get("key", ""),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.drop_duplicates("artifact").sort_values(["method", "N"]).reset_index(drop=True)


def cost_markdown(table: pd.DataFrame) -> str:
    lines = [
        "## what training cost",
        "",
        "| method | N | train time | steps | peak RSS | training accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in table.iterrows():
        steps = "" if pd.isna(r["steps"]) else str(int(r["steps"]))
        rss = "" if pd.isna(r["peak_rss_gib"]) else f"{r['peak_rss_gib']:.2f} GiB"
        lines.append(
            f"| {r['method']} | {int(r['N'])} | {r['train_seconds'] / 60:.1f} min | {steps} | {rss} | "
            f"{r['train_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def _cell(value: float, low: float, high: float, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "undef"
    fmt = "+.3f" if sign else ".3f"
    if not (math.isfinite(low) and math.isfinite(high)):
        return format(value, fmt)
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def _versus_msp(r: pd.Series) -> str:
    if r["method"] == STRONGEST:
        return "reference"
    if r["method"] == REFERENCE:
        return ""
    return _cell(r["diff_msp"], r["msp_low"], r["msp_high"], True)


def markdown(table: pd.DataFrame) -> str:
    """One Markdown table per evaluation kind: value [interval] and the paired differences to untuned P(True) and
    to MSP; then, where multi-hypothesis ran with a tuned judge, its paired difference to the untuned judge."""
    blocks = []
    for kind, part in table.groupby("eval", sort=False):
        lines = [
            f"## {kind} evaluation questions",
            "",
            "| method | N | metric | n | value [95%] | − P(True) [95%, paired] | − MSP [95%, paired] |",
            "|---|---:|---|---:|---|---|---|",
        ]
        for _, r in part.iterrows():
            n = "" if pd.isna(r["N"]) else str(int(r["N"]))
            diff = (
                "reference"
                if r["method"] == REFERENCE
                else _cell(r["diff_p_true"], r["diff_low"], r["diff_high"], True)
            )
            lines.append(
                f"| {r['method']} | {n} | {r['metric']} | {r['n_questions']} | "
                f"{_cell(r['value'], r['low'], r['high'])} | {diff} | {_versus_msp(r)} |"
            )
        blocks.append("\n".join(lines))
        judged = part[part["diff_untuned_judge"].notna()]
        if not judged.empty:
            lines = [
                f"Multi-hypothesis on {kind} questions, tuned judge − untuned judge (P(True)), paired:",
                "",
                "| judge | N | metric | difference [95%, paired] |",
                "|---|---:|---|---|",
            ]
            for _, r in judged.iterrows():
                cell = _cell(r["diff_untuned_judge"], r["judge_low"], r["judge_high"], True)
                lines.append(
                    f"| {r['method'].removeprefix(JUDGED_PREFIX)} | {int(r['N'])} | {r['metric']} | {cell} |"
                )
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def main(argv: Sequence[str]) -> None:
    """`calib tuning-report RUN... --out DIR`."""
    parser = argparse.ArgumentParser(
        prog="calib tuning-report",
        description="Calibration-tuning vs the number of labels: the tuned estimator of several "
        "`calib experiment=calibration_tuning` runs (N x method) next to untuned P(True), MSP and semantic entropy "
        "of the same evaluation runs, with bootstrap intervals and paired differences to untuned P(True). Writes "
        "tuning_report.csv, tuning_report.md and tuning_vs_labels figures.",
    )
    parser.add_argument("paths", nargs="+", help="study run folders, or folders containing them")
    parser.add_argument("--out", required=True, help="folder for the outputs")
    parser.add_argument(
        "--metric", action="append", help="metric to report (repeatable; default: every one the runs have)"
    )
    parser.add_argument(
        "--group", default="all", help="question group: all, closed or open_ended (default all)"
    )
    parser.add_argument(
        "--formats", default="png,pdf", help="figure formats, comma-separated (default png,pdf)"
    )
    args = parser.parse_args(list(argv))
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if not formats or set(formats) - {"png", "pdf", "svg"}:
        parser.error(f"--formats: got {args.formats!r}; pass a comma-separated list of png, pdf, svg")
    table = gather(args.paths, args.metric, args.group)
    written = write(table, args.out, formats)
    cost = costs(args.paths)
    if not cost.empty:
        from calib.cache import atomic_write_text

        atomic_write_text(Path(args.out) / "tuning_cost.csv", cost.to_csv(index=False, float_format="%.6g"))
        written.append(Path(args.out) / "tuning_cost.csv")
    for path in written:
        print(f"wrote {path}")
    print(markdown(table))
    if not cost.empty:
        print()
        print(cost_markdown(cost))
