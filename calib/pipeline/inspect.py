"""Look inside a finished run without a model: `load_run(dir)` tables for notebooks, `calib inspect` for one question.

Everything is read from the run folder (manifest.json, config.yaml) and the artifact store it names: generations,
grades, the semantic stage's comparisons and clusters, the stored model calls (P(True) of each cluster's
representative, when multi_hypothesis or p_true asked for it), estimates and metrics. Nothing is recomputed; what a
run did not store shows as missing (NaN, -1, or a note).

    from calib.pipeline import load_run
    run = load_run("outputs/2024-05-01/12-00-00")
    run.answers.query("question_id == 'q3'")   # greedy answer + samples with log-probs and clusters
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from calib.errors import CalibError
from calib.pipeline import generation, semantic_stage
from calib.pipeline.store import ArtifactStore, read_arrays

log = logging.getLogger("calib")


@dataclass
class RunTables:
    """A finished run as tables (one row per question / answer / cluster / question x estimator / metric row)."""

    run_dir: Path
    manifest: dict
    questions: pd.DataFrame  # prompt, gold answers, greedy answer and its grade, P(True) of the greedy answer
    answers: pd.DataFrame  # sample 0 = the greedy answer, 1..K the samples: text, log-probs, cluster
    clusters: pd.DataFrame  # members, mass (share of samples), representative and its P(True)
    estimates: pd.DataFrame  # raw value and confidence of every estimator
    metrics: pd.DataFrame  # the evaluate stage's table (metric x estimator x group)
    notes: list[str] = field(default_factory=list)  # what this run did not store


def load_run(run_dir: str | Path) -> RunTables:
    """The tables of a finished run, read from its folder and the artifact store its manifest names."""
    run_dir = Path(run_dir)
    if (run_dir / "tuning.json").is_file() and not (run_dir / "manifest.json").is_file():
        # a calibration-tuning study folder: its evaluation is a main-job run in eval/ (calib.tuning.study)
        tables = load_run(run_dir / "eval")
        tables.notes.insert(
            0, f"calibration-tuning study {run_dir}: these are the tables of its evaluation run eval/"
        )
        return tables
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        inside = (
            sorted(p.parent.name for p in run_dir.glob("*/manifest.json"))[:3] if run_dir.is_dir() else []
        )
        hint = (
            f"pass one of the runs inside it ({', '.join(inside)}, ...)"
            if inside
            else "pass the folder a run wrote"
        )
        raise CalibError(
            f"{run_dir} is not a finished calib run (manifest.json: {getattr(err, 'strerror', None) or err}); {hint}"
        ) from None
    if manifest.get("study"):
        csvs = ", ".join(sorted(p.name for p in run_dir.glob("*.csv"))) or "none yet"
        raise CalibError(
            f"{run_dir} is a {manifest['study']} study run: read its CSV tables ({csvs}) with pandas, or pass it to "
            "its notebook (notebooks/README.md); load_run reads main-job and calibration-tuning runs"
        )
    store = ArtifactStore(manifest["artifacts_dir"])
    stages = manifest["stages"]
    notes: list[str] = []
    grades = _need(store, "grade", stages["grade"]["key"], lambda f: pd.read_parquet(f / "grades.parquet"))
    passes = _generations(store, stages["generate"]["key"])
    k = int(manifest["summary"]["num_samples"])
    greedy, samples, _ = generation.split_passes(passes, k)
    n = len(grades)

    comparisons = _semantic(store, stages.get("semantic"), n)
    if comparisons is None:
        notes.append("no clusters: no estimator of this run compared answers (semantic stage)")
        labels = np.full((n, k), -1)
        greedy_cluster = np.full(n, -1)
    else:
        labels, greedy_cluster = comparisons["clusters"], comparisons["greedy_cluster"]
    score, wraps = _calls(store, stages.get("calls"))
    gold = _gold(run_dir, grades, notes)

    questions = grades.copy()
    questions.insert(0, "index", np.arange(n))
    questions.insert(3, "prompt", list(greedy.prompts))
    questions.insert(4, "gold", gold)
    questions["greedy_logprob"] = [float(np.sum(row[0])) for row in greedy.token_logprobs]
    questions["greedy_cluster"] = np.asarray(greedy_cluster, np.int64)
    questions["num_clusters"] = [int(row.max()) + 1 if row.size and row.max() >= 0 else 0 for row in labels]
    questions["p_true"] = [
        _p_true(score, wraps, q, a) for q, a in zip(grades["question"], [row[0] for row in greedy.texts])
    ]
    if score and questions["p_true"].isna().all():
        notes.append("no P(True) of the greedy answers among the stored model calls")
    answers = _answers(grades, greedy, samples, labels, greedy_cluster)
    clusters = _clusters(grades, samples, labels, greedy_cluster, score, wraps)
    estimates = _estimates(store, grades, stages["estimate"]["keys"], run_dir, notes)
    metrics = store.load(
        "evaluate", stages["evaluate"]["key"], lambda f: pd.read_parquet(f / "metrics.parquet")
    )
    if metrics is None:
        notes.append("evaluate artifact missing from the store")
        metrics = pd.DataFrame()
    return RunTables(run_dir, manifest, questions, answers, clusters, estimates, metrics, notes)


# ---- readers ----------------------------------------------------------------------------------------------------
def _need(store: ArtifactStore, stage: str, key: str, read) -> Any:
    value = store.load(stage, key, read)
    if value is None:
        raise CalibError(
            f"the {stage} artifact {key} of this run is not in {store.root}; rerun the run's command to recompute it"
        )
    return value


def _generations(store: ArtifactStore, key: str) -> list:
    """Every pass of the run's generations, read in place (a damaged shard is reported, not moved: a rerun of the
    run's command regenerates just that shard)."""
    plan = generation.stored_plan(store, key) if store.has(generation.STAGE, key) else None
    if plan is None:
        raise CalibError(
            f"the generate artifact {key} of this run is not in {store.root}; rerun the run's command to recompute it"
        )
    folder = store.path(generation.STAGE, key)
    parts = []
    for a, b in plan:
        shard = generation.shard_folder(folder, a, b)
        try:
            parts.append(generation.load_shard(shard))
        except Exception as err:
            raise CalibError(
                f"cannot read {shard} ({' '.join(str(err).split())[:120]}); rerun the run's command to regenerate it"
            ) from None
    return [generation.concat_generations([shard[r] for shard in parts]) for r in range(len(parts[0]))]


def _semantic(store: ArtifactStore, record: dict | None, n: int) -> dict | None:
    if not record:
        return None
    key = semantic_stage.part_key(record["key"], "comparisons")
    return store.load(
        semantic_stage.SEMANTIC, key, lambda folder: semantic_stage.read_part("comparisons", folder, n)
    )


def _calls(store: ArtifactStore, record: dict | None) -> tuple[dict, list[tuple[str, str]]]:
    if not record:
        return {}, []
    score, _, metas = semantic_stage.load_calls(store, record["key"])
    wraps = {tuple(m["wrap"]) for m in metas if m.get("wrap")}
    return score, [*sorted(wraps - {("", "")}), ("", "")]


def _gold(run_dir: Path, grades: pd.DataFrame, notes: list[str]) -> list:
    """Gold answer groups per question, from the task the run's config.yaml names (tasks load without a model)."""
    from omegaconf import OmegaConf

    from calib.pipeline.config import to_run_config
    from calib.pipeline.stages import load_examples

    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            break
    else:
        notes.append("no config.yaml in the run folder: gold answers unknown")
        return [None] * len(grades)
    try:
        examples = load_examples(to_run_config(OmegaConf.load(path)).task)
    except Exception as err:  # a task file moved or a dataset no longer cached: show the rest anyway
        notes.append(
            f"gold answers unknown: the task could not be loaded ({' '.join(str(err).split())[:160]})"
        )
        return [None] * len(grades)
    by_id = {str(ex.id): [list(g) for g in ex.answer_groups] for ex in examples}
    if [str(ex.id) for ex in examples] != [str(q) for q in grades["question_id"]]:
        notes.append("gold answers unknown: the task's questions changed since the run")
        return [None] * len(grades)
    return [by_id[str(q)] for q in grades["question_id"]]


def _p_true(score: dict, wraps: list[tuple[str, str]], question: str, answer: str) -> float:
    """P(True) of an answer from the stored score calls (as calib.estimators.reflexive.p_true made them), or NaN."""
    if not score:
        return float("nan")
    from calib.estimators.reflexive import p_true_prompt

    raw = p_true_prompt(str(question), answer)
    for prefix, suffix in wraps:
        yes, no = score.get((prefix + raw + suffix, " (A)")), score.get((prefix + raw + suffix, " (B)"))
        if yes is not None and no is not None:
            return float(1.0 / (1.0 + np.exp(np.sum(no) - np.sum(yes))))
    return float("nan")


def _answers(grades, greedy, samples, labels, greedy_cluster) -> pd.DataFrame:
    rows = []
    for i, qid in enumerate(grades["question_id"]):
        answers = [("greedy", greedy, 0, int(greedy_cluster[i]))]
        if samples is not None:
            answers += [("sample", samples, s, int(labels[i][s])) for s in range(samples.num_samples)]
        for kind, gens, s, cluster in answers:
            lp = np.asarray(gens.token_logprobs[i][s], np.float64)
            rows.append(
                {
                    "question_id": qid,
                    "sample": 0 if kind == "greedy" else s + 1,
                    "kind": kind,
                    "text": gens.texts[i][s],
                    "logprob": float(lp.sum()),
                    "num_tokens": len(lp),
                    "token_logprobs": lp,
                    "cluster": cluster,
                    "stop_reason": gens.stop_reasons[i][s],
                }
            )
    return pd.DataFrame(rows)


def _clusters(grades, samples, labels, greedy_cluster, score, wraps) -> pd.DataFrame:
    from calib.estimators.multi_hypothesis import cluster_representatives

    rows = []
    for i, (qid, question) in enumerate(zip(grades["question_id"], grades["question"])):
        row = np.asarray(labels[i])
        if samples is None or not row.size or row.max() < 0:
            continue
        texts = list(samples.texts[i])
        for c, rep in enumerate(cluster_representatives(row, texts)):
            members = [int(s) + 1 for s in np.flatnonzero(row == c)]
            rows.append(
                {
                    "question_id": qid,
                    "cluster": c,
                    "size": len(members),
                    "mass": len(members) / int(np.sum(row >= 0)),
                    "members": members,
                    "representative": rep,
                    "p_true": _p_true(score, wraps, question, rep),
                    "has_greedy": int(greedy_cluster[i]) == c,
                }
            )
    columns = ["question_id", "cluster", "size", "mass", "members", "representative", "p_true", "has_greedy"]
    return pd.DataFrame(rows, columns=columns)


def _estimates(store, grades, keys: dict[str, str], run_dir: Path, notes: list[str]) -> pd.DataFrame:
    parts = []
    for name, key in keys.items():
        arrays = store.load("estimate", key, lambda f: read_arrays(f / "result.safetensors"))
        if arrays is None:
            notes.append(f"estimate of {name} missing from the store")
            continue
        parts.append(
            pd.DataFrame(
                {"question_id": grades["question_id"], "estimator": name, "raw": arrays["raw"]}
                | {"confidence": arrays["confidence"]}
            )
        )
    if not parts and (run_dir / "results.parquet").is_file():  # the run folder's copy
        return pd.read_parquet(run_dir / "results.parquet")[["question_id", "estimator", "raw", "confidence"]]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# ---- one question as text (`calib inspect RUN_DIR --question ID`) ------------------------------------------------
def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _indent(text: str, pad: str = "    ") -> str:
    return "\n".join(pad + line for line in str(text).splitlines() or [""])


def format_question(run: RunTables, question_id: str) -> str:
    """Every section `calib inspect` prints for one question (prompt, gold, greedy answer, samples, clusters,
    estimators); a question id not in the run is a one-line CalibError listing a few valid ones."""
    ids = [str(q) for q in run.questions["question_id"]]
    if str(question_id) not in ids:
        shown = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
        raise CalibError(
            f"question {question_id!r} is not in run {run.run_dir} ({len(ids)} questions); valid ids: {shown}"
        )
    q = run.questions.iloc[ids.index(str(question_id))]
    qid = q["question_id"]
    answers = run.answers[run.answers["question_id"] == qid]
    greedy = answers[answers["kind"] == "greedy"].iloc[0]
    samples = answers[answers["kind"] == "sample"]
    clusters = run.clusters[run.clusters["question_id"] == qid]
    kind = "open-ended" if q["open_ended"] else "closed"
    out = [
        f"Question {qid} (#{q['index']} of {len(run.questions)}; {q['category'] or 'no category'}; {kind})"
    ]
    out += [_indent(q["question"]), "", "Prompt:", _indent(q["prompt"]), ""]
    gold = q["gold"]
    out.append(
        "Gold answers: "
        + (" | ".join(" / ".join(g) for g in gold) if gold is not None else "unknown (see notes)")
    )
    grade = (
        "correct" if q["correct"] >= 1 else "wrong" if q["correct"] <= 0 else f"partly ({q['correct']:.2f})"
    )
    out += [
        "",
        f"Greedy answer: {greedy['text']!r}",
        f"    extracted {q['extracted']!r}: {grade} (score {q['score']:.2f}, method {q['method']}"
        + (f", matched {q['matched']!r}" if q["matched"] else "")
        + f"); stop: {greedy['stop_reason']}; cluster {_cluster(greedy['cluster'])}; P(True) {_num(q['p_true'])}",
        f"    log-prob {greedy['logprob']:.3f} over {greedy['num_tokens']} tokens: "
        + ", ".join(f"{v:.2f}" for v in greedy["token_logprobs"]),
        "",
        f"Samples ({len(samples)}; sample accuracy {_num(q['sample_accuracy'], 2)}):",
    ]
    out += [f"    {'#':>3} {'cluster':>7} {'log-prob':>9}  text"]
    for _, s in samples.iterrows():
        out.append(f"    {s['sample']:>3} {_cluster(s['cluster']):>7} {s['logprob']:>9.3f}  {s['text']!r}")
    out += ["", f"Clusters ({len(clusters)}):"]
    if len(clusters):
        out.append(f"    {'id':>3} {'size':>4} {'mass':>6} {'P(True)':>7}  members  representative")
        for _, c in clusters.iterrows():
            mark = "  <- greedy" if c["has_greedy"] else ""
            members = ",".join(map(str, c["members"]))
            out.append(
                f"    {c['cluster']:>3} {c['size']:>4} {c['mass']:>6.3f} {_num(c['p_true']):>7}  "
                f"{members:<7}  {c['representative']!r}{mark}"
            )
    else:
        out.append("    none stored (no estimator of this run compared answers)")
    estimates = run.estimates[run.estimates["question_id"] == qid] if len(run.estimates) else run.estimates
    out += ["", "Estimators:", f"    {'name':<32} {'raw':>10} {'confidence':>10}"]
    for _, e in estimates.iterrows():
        out.append(f"    {e['estimator']:<32} {_num(e['raw'], 4):>10} {_num(e['confidence'], 4):>10}")
    if run.notes:
        out += ["", "Notes:", *(f"    {note}" for note in run.notes)]
    return "\n".join(out)


def _cluster(value: int) -> str:
    return "-" if int(value) < 0 else str(int(value))


def main(argv: list[str]) -> None:
    """`calib inspect RUN_DIR --question ID`: one question of a finished run, read from the store (no model)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="calib inspect",
        description="Show one question of a finished run: prompt, gold answers, greedy answer and its grade, "
        "samples with log-probs and clusters, cluster masses and P(True), every estimator's value. Reads the "
        "run folder and its artifact store; loads no model. Python: calib.pipeline.load_run(RUN_DIR).",
    )
    parser.add_argument("run_dir", help="a run folder (holding manifest.json)")
    parser.add_argument("--question", required=True, help="question id (an unknown id lists valid ones)")
    args = parser.parse_args(argv)
    print(format_question(load_run(args.run_dir), args.question))
