"""Writes the paper's notebooks (NN_*.ipynb) from the cell sources below, stored without outputs.

Run `python notebooks/build.py` after editing a cell here; commit the regenerated .ipynb files. Every notebook reads
a finished run (calib.pipeline.load_run, or a study's tables in its run folder), never generates, and writes its
figures as PNG into `out_dir`. The first code cell is tagged `parameters` (papermill).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

SETUP = '''\
import math
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import calib
from calib.plots import COLORS, STYLE, save_figure, undefined_note

print(f"calib from {calib.__file__}, python {sys.executable}")
out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)


def note(text):
    """A visible note: what the run lacks for this figure (the notebook goes on with what it has)."""
    display(Markdown(f"> **Note.** {text}"))


def figure(ncols, nrows=1, width=3.4, height=3.0):
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)


FORMATS = [f.strip() for f in str(formats).split(",") if f.strip()]


def show(fig, name):
    """Save fig as out_dir/<name>.<format> for each of `formats` and show it."""
    paths = save_figure(fig, out / name, FORMATS)
    display(fig)
    print("wrote " + ", ".join(map(str, paths)))
    return paths[0]
'''

GROUPED_METRICS = '''\
from calib.metrics import auroc, bootstrap_ci, ece, prr

METRIC_FNS = {"auroc": auroc, "prr": prr, "ece": ece}


def grouped_metrics(run, estimators, n_resamples=200):
    """metric x estimator x group (all / closed / open_ended) with 95% bootstrap intervals: the run's stored
    evaluate table where it has the row, else computed here from the stored estimates and grades."""
    stored = run.metrics
    q = run.questions.set_index("question_id")
    groups = {"all": np.ones(len(q), bool), "closed": ~q["open_ended"].to_numpy(bool),
              "open_ended": q["open_ended"].to_numpy(bool)}
    rows = []
    for name in estimators:
        conf = run.estimates[run.estimates["estimator"] == name].set_index("question_id")["confidence"]
        conf = conf.reindex(q.index).to_numpy(np.float64)
        correct = q["correct"].to_numpy(np.float64)
        for group, mask in groups.items():
            for metric, fn in METRIC_FNS.items():
                hit = stored[(stored["estimator"] == name) & (stored["group"] == group)
                             & (stored["metric"] == metric)] if len(stored) else stored
                if len(hit):
                    r = hit.iloc[0]
                    rows.append(dict(estimator=name, group=group, metric=metric, value=r["value"],
                                     low=r["low"], high=r["high"], n=int(r["n"]), source="stored"))
                    continue
                keep = mask & np.isfinite(conf)
                value = low = high = math.nan
                if keep.sum() >= 2:
                    try:
                        res = bootstrap_ci(fn, conf[keep], correct[keep], n_resamples=n_resamples)
                        value, low, high = res
                    except Exception as err:  # e.g. a metric undefined on this group
                        print(f"{name} {metric} on {group}: {' '.join(str(err).split())[:120]}")
                rows.append(dict(estimator=name, group=group, metric=metric, value=value, low=low,
                                 high=high, n=int(keep.sum()), source="computed"))
    return pd.DataFrame(rows)


def bars(ax, table, metric, estimators, groups=("closed", "open_ended")):
    """Grouped bars with interval whiskers; a panel with no defined value says why on the axes."""
    part = table[table["metric"] == metric]
    some = np.isfinite(part["value"].to_numpy(np.float64)).any()  # else one note for the whole panel
    width = 0.8 / len(groups)
    x = np.arange(len(estimators))
    for j, group in enumerate(groups):
        rows = part[part["group"] == group].set_index("estimator").reindex(estimators)
        v = rows["value"].to_numpy(np.float64)
        err = np.abs(np.vstack([v - rows["low"].to_numpy(np.float64), rows["high"].to_numpy(np.float64) - v]))
        at = x + (j - (len(groups) - 1) / 2) * width
        ax.bar(at, np.nan_to_num(v), width, color=COLORS[j], yerr=np.nan_to_num(err), capsize=2,
               label=group.replace("_", "-"), alpha=0.85)
        for col in np.flatnonzero(~np.isfinite(v)) if some else []:  # no value is not a value of 0
            ax.text(at[col], 0, " undefined", va="bottom", ha="center", rotation=90, fontsize=5, color="#555555")
    ax.set_xticks(x, estimators, rotation=35, ha="right")
    ax.set_title(metric.upper())
    if not some:
        undefined_note(ax, f"no {metric.upper()} on this run (e.g. every answer has the same grade)")


def hbars(ax, table, metric, estimators, groups=("closed", "open_ended"), labels=True):
    """bars() turned sideways, for many estimators: one row each (top to bottom in the given order)."""
    part = table[table["metric"] == metric]
    some = np.isfinite(part["value"].to_numpy(np.float64)).any()  # else one note for the whole panel
    height = 0.8 / len(groups)
    y = np.arange(len(estimators))[::-1]
    for j, group in enumerate(groups):
        rows = part[part["group"] == group].set_index("estimator").reindex(estimators)
        v = rows["value"].to_numpy(np.float64)
        err = np.abs(np.vstack([v - rows["low"].to_numpy(np.float64), rows["high"].to_numpy(np.float64) - v]))
        at = y - (j - (len(groups) - 1) / 2) * height
        ax.barh(at, np.nan_to_num(v), height, color=COLORS[j], xerr=np.nan_to_num(err), capsize=1.5,
                label=group.replace("_", "-"), alpha=0.85, error_kw=dict(lw=0.6))
        for row in np.flatnonzero(~np.isfinite(v)) if some else []:  # no value is not a value of 0
            ax.text(0, at[row], " undefined", va="center", ha="left", fontsize=5, color="#555555")
    ax.set_yticks(y, estimators if labels else [""] * len(estimators))
    ax.set_ylim(-0.6, len(estimators) - 0.4)
    ax.set_title(metric.upper())
    ax.grid(axis="x", alpha=0.3)
    if not some:
        undefined_note(ax, f"no {metric.upper()} on this run (e.g. every answer has the same grade)")
'''


def nb(title: str, intro: str, params: str, cells: list[str]) -> nbformat.NotebookNode:
    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    parameters = nbformat.v4.new_code_cell(params)
    parameters.metadata["tags"] = ["parameters"]
    book.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{intro}"), parameters]
    for src in cells:
        if src.startswith("#md\n"):
            book.cells.append(nbformat.v4.new_markdown_cell(src[4:]))
        else:
            book.cells.append(nbformat.v4.new_code_cell(src.rstrip("\n")))
    for i, cell in enumerate(book.cells):
        cell.id = f"cell-{i:02d}"  # stable ids: rebuilding changes only the cells whose source changed
    return book


MAIN_PARAMS = '''\
# Parameters (papermill -p NAME VALUE): a finished main-job run folder (holding manifest.json) and where figures go.
run_dir = "out/runs/DATE/TIME"
out_dir = "out/notebooks"
formats = "png"  # figure formats written to out_dir, comma-separated: png, pdf, svg'''

LOAD = '''\
from calib.pipeline import load_run

run = load_run(run_dir)
q = run.questions
print(f"{len(q)} questions ({int(q['open_ended'].sum())} open-ended), greedy accuracy {q['correct'].mean():.3f}, "
      f"K = {run.manifest['summary']['num_samples']} samples, model {run.manifest['summary']['model']}")
print("estimators:", sorted(run.estimates["estimator"].unique()) if len(run.estimates) else "none")
for text in run.notes:
    note(text)'''

NOTEBOOKS = {
    "01_token_overconfidence": nb(
        "Token-level overconfidence",
        "Average token probability of the greedy answer against its accuracy: reliability diagrams of the mean "
        "token probability, its geometric mean (inverse perplexity) and, where the run has them, the stored "
        "token-level estimators. Reads a finished run; generates nothing.",
        MAIN_PARAMS,
        [
            SETUP,
            LOAD,
            '''\
from calib.plots import confidence_histogram, reliability_diagram

greedy = run.answers[run.answers["kind"] == "greedy"].set_index("question_id").reindex(q["question_id"])
probs = [np.exp(np.asarray(lp, np.float64)) for lp in greedy["token_logprobs"]]
table = pd.DataFrame({
    "question_id": q["question_id"].to_numpy(),
    "open_ended": q["open_ended"].to_numpy(),
    "correct": q["correct"].to_numpy(np.float64),
    "num_tokens": greedy["num_tokens"].to_numpy(),
    "mean_token_prob": [p.mean() if p.size else np.nan for p in probs],
    "geometric_mean_prob": [np.exp(np.log(p).mean()) if p.size else np.nan for p in probs],
    "min_token_prob": [p.min() if p.size else np.nan for p in probs],
})
keep = table["mean_token_prob"].notna()
if not keep.all():
    note(f"{(~keep).sum()} greedy answers have no tokens; left out")
table = table[keep]
summary = pd.DataFrame({
    c: {"mean confidence": table[c].mean(), "accuracy": table["correct"].mean(),
        "overconfidence (conf - acc)": table[c].mean() - table["correct"].mean()}
    for c in ("mean_token_prob", "geometric_mean_prob", "min_token_prob")
}).T
summary''',
            '''\
curves = {"mean token prob": table["mean_token_prob"], "geometric mean (1/perplexity)": table["geometric_mean_prob"]}
stored = [e for e in ("msp", "mean_token_prob", "inverse_perplexity") if len(run.estimates)
          and e in set(run.estimates["estimator"])]
if "msp" in stored:
    msp = run.estimates[run.estimates["estimator"] == "msp"].set_index("question_id")["confidence"]
    curves["MSP (stored estimator)"] = msp.reindex(table["question_id"]).to_numpy()
else:
    note("the run has no `msp` estimate; the figure shows the token-probability confidences only")
fig, axes = figure(len(curves) + 1, width=3.6, height=3.4)
with matplotlib.rc_context(STYLE):
    for ax, (name, conf) in zip(axes, curves.items()):
        reliability_diagram(np.asarray(conf, np.float64), table["correct"].to_numpy(), n_bins=10, ax=ax,
                            title=f"{name}", show_counts=True)
    confidence_histogram(table["mean_token_prob"].to_numpy(), table["correct"].to_numpy(), n_bins=10,
                         ax=axes[-1], title="mean token prob vs accuracy")
    axes[-1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, frameon=False)  # below, clear of the lines
show(fig, "token_overconfidence")''',
            '''\
# Average token probability against accuracy, per answer length (tokens): is the gap larger for longer answers?
fig, axes = figure(1, width=4.2, height=3.2)
with matplotlib.rc_context(STYLE):
    ax = axes[0]
    for i, (kind, part) in enumerate(table.groupby("open_ended")):
        ax.scatter(part["mean_token_prob"], part["correct"] + (0.02 * i), s=12, color=COLORS[i], alpha=0.7,
                   label="open-ended" if kind else "closed")
    ax.plot([0, 1], [0, 1], "--", color="#555555", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(-0.05, 1.08), xlabel="average token probability", ylabel="grade (1 = correct)",
           title="Average token probability vs grade")
    ax.legend(frameon=False)
show(fig, "token_prob_vs_grade")''',
        ],
    ),
    "02_temperature_tradeoff": nb(
        "The temperature trade-off: decoding vs post-hoc",
        "Accuracy beside ECE against temperature T, sampling at T (decoding) and re-tempering the greedy "
        "answer's probabilities (post-hoc, accuracy fixed), and the fitted calibrators. Reads the tables a "
        "`calib experiment=temperature_sweep` run wrote into its folder; generates nothing.",
        '''\
# Parameters: a finished `calib experiment=temperature_sweep` run folder and where figures go.
temperature_dir = "out/runs/DATE/TIME"
out_dir = "out/notebooks"
formats = "png"  # figure formats written to out_dir, comma-separated: png, pdf, svg''',
        [
            SETUP,
            '''\
folder = Path(temperature_dir)
tables = {}
for name in ("sweep_decoding", "sweep_posthoc", "calibrators"):
    path = folder / f"{name}.csv"
    if path.is_file():
        tables[name] = pd.read_csv(path)
    else:
        note(f"{path} is missing: is {folder} a finished `calib experiment=temperature_sweep` run?")
sweep = pd.concat([tables[k] for k in ("sweep_decoding", "sweep_posthoc") if k in tables], ignore_index=True)
sweep''',
            '''\
fig, axes = figure(2, width=3.6, height=3.2)
with matplotlib.rc_context(STYLE):
    if sweep.empty:
        for ax in axes:
            undefined_note(ax, "no sweep tables in the run folder")
    styles = {("decoding", "model"): ("-", COLORS[0]), ("decoding", "sampling"): (":", COLORS[0]),
              ("posthoc", "model"): ("--", COLORS[1])}
    for (mode, conf), rows in sweep.groupby(["mode", "confidence"], sort=False):
        rows = rows.sort_values("T")
        style, color = styles.get((mode, conf), ("-.", COLORS[2]))
        label = f"{mode} ({conf} MSP)" if mode == "decoding" else "post-hoc"
        for ax, metric in zip(axes, ("accuracy", "ece")):
            if metric == "accuracy" and conf == "sampling":
                continue  # same answers as the model-MSP row
            ax.plot(rows["T"], rows[metric], style, color=color, marker="o", markersize=3, label=label)
            ax.fill_between(rows["T"], rows[f"{metric}_low"], rows[f"{metric}_high"], color=color, alpha=0.12)
    for ax, metric in zip(axes, ("accuracy", "ECE")):
        ax.set(xlabel="temperature T", ylabel=metric, title=f"{metric} vs T")
        ax.legend(frameon=False)
show(fig, "temperature_tradeoff")''',
            '''\
if "calibrators" in tables:
    cal = tables["calibrators"]
    display(cal[[c for c in ("method", "fitted", "n_calibration", "n_test", "ece", "ece_low", "ece_high",
                             "brier", "auroc", "ece_change") if c in cal]])
    usable = cal[cal["ece"].notna()]
    if len(usable) < len(cal):
        note("calibrators without a test ECE could not be fitted on this run: "
             + "; ".join(f"{m}: {f}" for m, f in zip(cal["method"], cal["fitted"]) if isinstance(f, str)
                         and not f.replace(".", "").replace("-", "").isdigit())[:600])
    fig, axes = figure(1, width=4.0, height=3.0)
    with matplotlib.rc_context(STYLE):
        ax = axes[0]
        if usable.empty:
            undefined_note(ax, "no calibrator could be fitted on this run")
        else:
            v = usable["ece"].to_numpy(np.float64)
            err = np.abs(np.vstack([v - usable["ece_low"], usable["ece_high"] - v]))
            x = np.arange(len(usable))
            ax.bar(x, v, yerr=np.nan_to_num(err), capsize=2, color=COLORS[0], alpha=0.85)
            ax.set_xticks(x, usable["method"], rotation=30, ha="right")  # labels end under their bars
        ax.set(ylabel="test ECE", title="Post-hoc calibrators (test split)")
    show(fig, "temperature_calibrators")''',
        ],
    ),
    "03_closed_vs_open": nb(
        "Estimators on closed vs open-ended questions",
        "AUROC, PRR and ECE of every estimator, closed and open-ended questions apart, with 95% bootstrap "
        "intervals (the run's stored evaluate table where it grouped by kind, else recomputed here from the stored "
        "estimates and grades). Reads a finished run; generates nothing.",
        MAIN_PARAMS,
        [
            SETUP,
            LOAD,
            GROUPED_METRICS,
            '''\
estimators = sorted(run.estimates["estimator"].unique()) if len(run.estimates) else []
if not estimators:
    note("the run stored no estimates")
if q["open_ended"].all() or (~q["open_ended"]).all():
    note("the run has only one kind of question, so one of the two groups is empty")
table = grouped_metrics(run, estimators)
wide = table.assign(cell=[f"{v:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(v) else "undef"
                          for v, lo, hi in zip(table["value"], table["low"], table["high"])])
wide.pivot_table(index="estimator", columns=["metric", "group"], values="cell", aggfunc="first")''',
            '''\
# one row per estimator, best AUROC over all questions first; the three metrics side by side share the rows
overall = table[(table["metric"] == "auroc") & (table["group"] == "all")].set_index("estimator")["value"]
order = sorted(estimators, key=lambda e: -np.nan_to_num(overall.get(e, np.nan), nan=-1.0))
fig, axes = figure(3, width=2.9, height=0.2 * len(order) + 1.3)
with matplotlib.rc_context(STYLE):
    for i, (ax, metric) in enumerate(zip(axes, METRIC_FNS)):
        hbars(ax, table, metric, order, labels=i == 0)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
show(fig, "closed_vs_open")''',
        ],
    ),
    "04_semantic_entropy_vs_multi_hypothesis": nb(
        "Semantic entropy vs multi-hypothesis confidence on questions with many valid answers",
        "Semantic entropy spreads confidence over the clusters of sampled answers, so a question with many valid "
        "answers looks uncertain even when every sample is right; multi-hypothesis confidence scores the clusters "
        "(P(True) of each cluster's representative). Compared on open-ended vs closed questions, and against the "
        "number of distinct clusters and of gold answer groups. Reads a finished run; generates nothing.",
        MAIN_PARAMS,
        [
            SETUP,
            LOAD,
            GROUPED_METRICS,
            '''\
PAIR = ("semantic_entropy", "multi_hypothesis")
have = [e for e in PAIR if len(run.estimates) and e in set(run.estimates["estimator"])]
if len(have) < 2:
    note(f"this run lacks {', '.join(sorted(set(PAIR) - set(have)))}; rerun it with "
         "`estimators.names=[...,semantic_entropy,multi_hypothesis]` (the store keeps the generations)")
conf = (run.estimates[run.estimates["estimator"].isin(have)]
        .pivot_table(index="question_id", columns="estimator", values="confidence")
        if have else pd.DataFrame(index=q["question_id"]))
per_q = q.set_index("question_id")[["open_ended", "correct", "num_clusters", "sample_accuracy"]].copy()
per_q["gold_groups"] = [len(g) if g is not None else np.nan for g in q["gold"]]
per_q = per_q.join(conf)
if q["gold"].isna().all():
    note("gold answers unknown for this run (see the notes above): the number of valid answers is not shown")
per_q.head(20)''',
            '''\
table = grouped_metrics(run, have) if have else pd.DataFrame(columns=["estimator", "group", "metric", "value",
                                                                     "low", "high", "n", "source"])
display(table)
fig, axes = figure(3, width=3.0, height=3.2)
with matplotlib.rc_context(STYLE):
    for ax, metric in zip(axes, METRIC_FNS):
        if have:
            bars(ax, table, metric, have)
        else:
            undefined_note(ax, "the run has neither estimator")
    if have:  # one legend below the panels, off the bars
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=2, frameon=False)
show(fig, "se_vs_mh_metrics")''',
            '''\
fig, axes = figure(2, width=3.6, height=3.2)
with matplotlib.rc_context(STYLE):
    for ax, x, xlabel in zip(axes, ("num_clusters", "gold_groups"),
                             ("distinct answer clusters among the samples", "valid answers (gold answer groups)")):
        if not have or per_q[x].isna().all():
            undefined_note(ax, f"no {xlabel} or no estimates in this run")
        for i, name in enumerate(have):
            jitter = (i - 0.5) * 0.15
            ax.scatter(per_q[x] + jitter, per_q[name], s=14, color=COLORS[i], alpha=0.75, label=name)
            # gold answer groups run to dozens with few questions each: mean per power-of-two bin (1, 2-3, 4-7, ...)
            bins = np.floor(np.log2(per_q[x].clip(lower=1))) if x == "gold_groups" else per_q[x]
            means = per_q.groupby(bins.rename("bin"))[[x, name]].mean()
            ax.plot(means[x] + jitter, means[name], color=COLORS[i], linewidth=1.2, marker="o", markersize=3)
        if x == "gold_groups" and per_q[x].max() > 16:
            ax.set_xscale("log", base=2)
        ax.set(xlabel=xlabel, ylabel="confidence", ylim=(-0.03, 1.03), title="confidence vs " + xlabel.split(" (")[0])
    if have:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(have), frameon=False)
show(fig, "se_vs_mh_many_answers")''',
            '''\
from calib.plots import reliability_diagram

open_rows = per_q[per_q["open_ended"]]
fig, axes = figure(max(len(have), 1), width=3.6, height=3.4)
with matplotlib.rc_context(STYLE):
    if not have or open_rows.empty:
        undefined_note(axes[0], "no open-ended questions or no estimates in this run")
    for ax, name in zip(axes, have):
        if open_rows.empty:
            break
        reliability_diagram(open_rows[name].to_numpy(np.float64), open_rows["correct"].to_numpy(np.float64),
                            n_bins=10, ax=ax, title=f"{name}, open-ended (n = {len(open_rows)})")
show(fig, "se_vs_mh_reliability_open")''',
        ],
    ),
    "05_inference_scaling": nb(
        "Inference-time scaling: confidence quality vs compute",
        "AUROC, PRR, ECE and accuracy against compute (GFLOPs per question) over samples K and pause-and-revise "
        "passes R, and the adaptive-revision trade-off (revise only the least confident questions). Reads the "
        "tables a `calib experiment=scaling` run wrote into its folder; generates nothing.",
        '''\
# Parameters: a finished `calib experiment=scaling` run folder and where figures go.
scaling_dir = "out/runs/DATE/TIME"
n_best = 3  # estimators drawn against compute besides MSP, semantic entropy and self-consistency: the best by AUROC
out_dir = "out/notebooks"
formats = "png"  # figure formats written to out_dir, comma-separated: png, pdf, svg''',
        [
            SETUP,
            '''\
folder = Path(scaling_dir)
tables = {}
for name in ("points", "accuracy", "adaptive", "differences"):
    path = folder / f"{name}.csv"
    if path.is_file():
        tables[name] = pd.read_csv(path)
    else:
        note(f"{path} is missing: is {folder} a finished `calib experiment=scaling` run?")
points = tables.get("points", pd.DataFrame(columns=["K", "R", "group", "estimator", "metric", "value", "low", "high"]))
accuracy = tables.get("accuracy", pd.DataFrame(columns=["K", "R", "accuracy", "accuracy_low", "accuracy_high", "flops"]))
accuracy''',
            '''\
from matplotlib.lines import Line2D

from calib.plots import log_x_at_values

METRICS = [m for m in ("auroc", "prr", "ece", "brier") if m in set(points["metric"])]
grid = points[points["group"] == "all"].merge(accuracy[["K", "R", "flops"]], on=["K", "R"])
grid["gflops"] = grid["flops"] / 1e9
# Every estimator in every panel is unreadable (45 lines): the baselines the claims name, and the best by AUROC at the
# largest compute without revision.
BASELINES = ["msp", "semantic_entropy", "self_consistency"]
last = grid[(grid["metric"] == "auroc") & (grid["R"] == grid["R"].min()) & (grid["K"] == grid["K"].max())]
best = list(last.sort_values("value", ascending=False)["estimator"].head(n_best))
estimators = list(dict.fromkeys([e for e in BASELINES if e in set(grid["estimator"])] + best))
passes = sorted(grid["R"].unique())
panels = len(METRICS) + 1  # accuracy, then one per metric, three to a row: five in one row are too small on a page
ncols = min(panels, 3)
fig, axes = figure(ncols, nrows=-(-panels // ncols), width=3.2, height=2.8)
spare, axes = axes[panels:], axes[:panels]
with matplotlib.rc_context(STYLE):
    ax = axes[0]
    for r, rows in accuracy.groupby("R"):
        rows = rows.sort_values("flops")
        ax.errorbar(rows["flops"] / 1e9, rows["accuracy"], yerr=np.abs(np.vstack(
            [rows["accuracy"] - rows["accuracy_low"], rows["accuracy_high"] - rows["accuracy"]])),
            marker="o", markersize=3, capsize=2, linestyle=["-", "--", ":", "-."][int(r) % 4], color="#555555")
    ax.set(xlabel="GFLOPs per question", ylabel="greedy accuracy", title="accuracy")
    for ax, metric in zip(axes[1:], METRICS):
        part = grid[grid["metric"] == metric]
        for i, name in enumerate(estimators):
            labelled = False
            for r in passes:
                rows = part[(part["estimator"] == name) & (part["R"] == r)].sort_values("K")
                if rows.empty:
                    continue
                ax.plot(rows["gflops"], rows["value"], ["-", "--", ":", "-."][int(r) % 4], marker="o",
                        markersize=3, color=COLORS[i % len(COLORS)], label=None if labelled else name)
                labelled = True
        if not np.isfinite(part["value"].to_numpy(np.float64)).any():
            undefined_note(ax, f"no {metric.upper()} at any point (e.g. every answer has the same grade)")
        ax.set(xlabel="GFLOPs per question", ylabel=metric.upper(), title=f"{metric.upper()} vs compute")
    for ax in axes:  # every compute point labelled (a log axis within one decade has no major tick to label)
        log_x_at_values(ax, accuracy["flops"] / 1e9)
    handles, labels = axes[1].get_legend_handles_labels() if len(axes) > 1 else ([], [])
    handles += [Line2D([], [], color="#555555", linestyle=["-", "--", ":", "-."][int(r) % 4]) for r in passes]
    labels += [f"R = {r}" for r in passes]
    for ax in spare:
        ax.set_axis_off()
    if len(spare):  # the legend fills the empty slot of the grid
        spare[0].legend(handles, labels, loc="center", frameon=False)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), frameon=False)
show(fig, "scaling_vs_compute")''',
            '''\
adaptive = tables.get("adaptive", pd.DataFrame())
fig, axes = figure(2, width=3.6, height=3.2)
with matplotlib.rc_context(STYLE):
    if adaptive.empty:
        note("no adaptive.csv rows: the run had no `study.scaling.gates` or a single pass")
        for ax in axes:
            undefined_note(ax, "no adaptive-revision rows in this run")
    else:
        display(adaptive)
        gates = list(dict.fromkeys(adaptive["gate"]))
        for i, ((gate, k), rows) in enumerate(adaptive.groupby(["gate", "K"])):
            rows = rows.sort_values("fraction")
            # two gates that revise the same answers draw the same curve: marker and line style tell them apart
            style = dict(color=COLORS[i % len(COLORS)], marker="osD^v"[gates.index(gate) % 5],
                         linestyle=["-", "--", ":", "-."][gates.index(gate) % 4], markersize=4, fillstyle="none",
                         label=f"gate {gate}, K = {k}")
            axes[0].errorbar(rows["flops"] / 1e9, rows["accuracy"], yerr=np.abs(np.vstack(
                [rows["accuracy"] - rows["accuracy_low"], rows["accuracy_high"] - rows["accuracy"]])),
                capsize=2, **style)
            axes[1].plot(rows["fraction"], rows["compute_saved"], **style)
        axes[0].set(xlabel="GFLOPs per question", ylabel="accuracy", title="adaptive revision: accuracy vs compute")
        axes[1].set(xlabel="share of questions revised", ylabel="share of revision compute saved",
                    title="compute saved")
        for ax in axes:
            ax.legend(frameon=False, fontsize=6)
show(fig, "scaling_adaptive")''',
        ],
    ),
    "06_full_ece_vs_answer_ece": nb(
        "Full-ECE vs answer-level ECE",
        "Full-ECE (Liu et al. 2024) bins every vocabulary probability at every position of reference answers; "
        "answer-level ECE bins one confidence per question. The temperature sweep stores both per T; a main-job "
        "run stores only each generated token's own log-probability, so its Full-ECE cannot be computed (see the "
        "note below) and the notebook shows its answer-level ECE and the token probabilities it does have.",
        '''\
# Parameters: a finished main-job run folder, a finished `calib experiment=temperature_sweep` run folder (for the
# Full-ECE it stores per T; "" to skip) and where figures go.
run_dir = "out/runs/DATE/TIME"
temperature_dir = "out/runs/DATE/TIME"
out_dir = "out/notebooks"
formats = "png"  # figure formats written to out_dir, comma-separated: png, pdf, svg''',
        [
            SETUP,
            '''\
sweep = pd.DataFrame()
if temperature_dir:
    parts = [pd.read_csv(p) for p in (Path(temperature_dir) / "sweep_decoding.csv",
                                      Path(temperature_dir) / "sweep_posthoc.csv") if p.is_file()]
    sweep = pd.concat(parts, ignore_index=True) if parts else sweep
if sweep.empty or "full_ece" not in sweep or sweep["full_ece"].isna().all():
    note("no Full-ECE in the temperature sweep's tables (pass `temperature_dir`, a finished "
         "`calib experiment=temperature_sweep` run)")
else:
    display(sweep[["mode", "confidence", "T", "n", "accuracy", "ece", "ece_low", "ece_high", "full_ece"]])''',
            '''\
fig, axes = figure(2, width=3.6, height=3.2)
with matplotlib.rc_context(STYLE):
    if sweep.empty or "full_ece" not in sweep or sweep["full_ece"].isna().all():
        for ax in axes:
            undefined_note(ax, "no temperature sweep with Full-ECE")
    else:
        rows_model = sweep[sweep["confidence"] == "model"]
        for i, (mode, rows) in enumerate(rows_model.groupby("mode", sort=False)):
            rows = rows.sort_values("T")
            axes[0].plot(rows["T"], rows["ece"], "-", marker="o", markersize=3, color=COLORS[i],
                         label=f"answer ECE ({mode})")
            axes[0].fill_between(rows["T"], rows["ece_low"], rows["ece_high"], color=COLORS[i], alpha=0.12)
            axes[1].scatter(rows["full_ece"], rows["ece"], color=COLORS[i], s=16, label=mode)
            for t, x, y in zip(rows["T"], rows["full_ece"], rows["ece"]):
                axes[1].annotate(f"T={t:g}", (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        # Full-ECE is measured on the reference answers, so it is one curve whichever answers are graded
        full = rows_model.groupby("T")["full_ece"].first()
        axes[0].plot(full.index, full.to_numpy(), "--", marker="s", markersize=3, color="#555555",
                     label="Full-ECE (reference answers)")
        axes[0].set(xlabel="temperature T", ylabel="calibration error", title="Full-ECE and answer ECE vs T")
        axes[1].set(xlabel="Full-ECE (token level)", ylabel="answer-level ECE", title="do they rank T alike?")
        for ax in axes:
            ax.legend(frameon=False, fontsize=6)
show(fig, "full_ece_vs_answer_ece")''',
            '''\
from calib.pipeline import load_run

note("Full-ECE of a main-job run needs, at every position of a reference answer, the whole next-token "
     "distribution (or the Full-ECE bin sums count / sum_prob / sum_hit / n_positions of "
     "`calib.decode.FullECEStats`); the runner stores only each generated token's own log-probability, so this "
     "part shows the run's answer-level ECE per estimator and the distribution of its token probabilities.")
run = load_run(run_dir)
for text in run.notes:
    note(text)
m = run.metrics
answer_ece = (m[(m["metric"] == "ece") & (m["group"] == "all")][["estimator", "value", "low", "high", "n"]]
              if len(m) else pd.DataFrame(columns=["estimator", "value", "low", "high", "n"]))
display(answer_ece)
tokens = np.exp(np.concatenate([np.asarray(lp, np.float64) for lp in
                                run.answers[run.answers["kind"] == "greedy"]["token_logprobs"]] or [np.zeros(0)]))
answer_ece = answer_ece.sort_values("value", na_position="last")  # best calibrated on top
fig = Figure(figsize=(7.6, max(3.2, 0.18 * len(answer_ece) + 1.2)), layout="constrained")
FigureCanvasAgg(fig)
axes = fig.subplots(1, 2, width_ratios=[1.1, 1])
with matplotlib.rc_context(STYLE):
    ax = axes[0]
    if answer_ece.empty:
        undefined_note(ax, "no ECE in the run's evaluate table")
    else:
        v = answer_ece["value"].to_numpy(np.float64)
        err = np.abs(np.vstack([v - answer_ece["low"].to_numpy(np.float64), answer_ece["high"].to_numpy(np.float64) - v]))
        y = np.arange(len(answer_ece))[::-1]  # one row per estimator: dozens stay readable
        ax.barh(y, np.nan_to_num(v), xerr=np.nan_to_num(err), capsize=1.5, color=COLORS[0], alpha=0.85,
                error_kw=dict(lw=0.6))
        ax.set_yticks(y, answer_ece["estimator"], fontsize=6)
        ax.set_ylim(-0.6, len(answer_ece) - 0.4)
    ax.set(xlabel="answer-level ECE", title="answer-level ECE (this run)")
    ax = axes[1]
    if tokens.size:
        ax.hist(tokens, bins=np.linspace(0, 1, 21), weights=np.full(tokens.size, 1 / tokens.size), color=COLORS[1],
                alpha=0.85)
    else:
        undefined_note(ax, "no generated tokens")
    ax.set(xlabel="probability of each generated token (greedy answers)", ylabel="share of tokens",
           title=f"token probabilities (n = {tokens.size})")
show(fig, "run_answer_ece_and_tokens")''',
        ],
    ),
    "07_calibration_tuning_vs_labels": nb(
        "Calibration-tuning vs the number of labels",
        "How much does training on N graded answers (a LoRA adapter on the P(True) question, or a probe on hidden "
        "states) improve confidence over untuned P(True), and from which N? Each point is one "
        "`calib experiment=calibration_tuning` run; untuned P(True), MSP and semantic entropy of the same evaluation "
        "runs are the horizontal bands. Read through `calib.tuning.report` (the same table as "
        "`calib tuning-report`); generates nothing.",
        '''\
# Parameters: calibration-tuning study run folders (each holding tuning.json and eval/), or folders containing them,
# and where figures go.
tuning_dirs = ["out/runs/DATE/TIME"]
out_dir = "out/notebooks"
formats = "png"  # figure formats written to out_dir, comma-separated: png, pdf, svg''',
        [
            SETUP,
            '''\
from calib.tuning.report import gather, markdown, plot

dirs = [tuning_dirs] if isinstance(tuning_dirs, str) else list(tuning_dirs)
table = gather(dirs)
table.to_csv(out / "tuning_report.csv", index=False)
tuned = table[table["N"].notna()]
print(f"{tuned[['method', 'N']].drop_duplicates().shape[0]} tuned runs: "
      + ", ".join(f"{m} N={int(n)}" for m, n in tuned[["method", "N"]].drop_duplicates().itertuples(index=False)))
if tuned["N"].nunique() < 2:
    note("only one label budget N among these runs: the figure shows points, not a trend")
display(Markdown(markdown(table)))''',
            '''\
from IPython.display import Image

paths = plot(table, out / "tuning_vs_labels", FORMATS)
print("wrote " + ", ".join(map(str, paths)))
png = [p for p in paths if p.suffix == ".png"]
if png:
    display(Image(filename=str(png[0])))''',
            '''\
# The label budget: per method and metric, the smallest N whose paired difference to untuned P(True) has an
# interval on the better side of 0 (ECE and Brier: lower is better), else none at these N.
from calib.pipeline.evaluate import METRICS

rows = []
for (method, metric), part in tuned.groupby(["method", "metric"]):
    better = METRICS[metric].higher_is_better if metric in METRICS else True
    part = part.sort_values("N")
    ok = part[(part["diff_low"] > 0) if better else (part["diff_high"] < 0)]
    rows.append(dict(method=method, metric=metric, N_tried=", ".join(str(int(n)) for n in part["N"]),
                     smallest_N_better_than_p_true=int(ok["N"].iloc[0]) if len(ok) else None))
budget = pd.DataFrame(rows)
budget''',
        ],
    ),
}


def main() -> None:
    for name, book in NOTEBOOKS.items():
        nbformat.validate(book)
        path = HERE / f"{name}.ipynb"
        path.write_text(nbformat.writes(book))
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
