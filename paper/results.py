"""The small result CSVs the paper is built from, gathered from finished run folders (no model, nothing re-run).

`collect(runs, out, tuning)` copies each run's small tables (metrics.csv, the studies' CSVs, each calibration-tuning
run's report) into `out` under names `<run>__<table>.csv`, keeping what earlier collects wrote for other runs (paper
scale is made a few runs per session), merges the tuning reports into `tuning__tuning_report.csv`, and writes
`claims.csv`: for each of the mission's claims, the quantity that tests
it with its 95% interval and whether the interval supports the claim (`supported`: yes / no / undetermined).
Quantities come from the stored per-question tables (results.parquet) or the studies' own intervals:

- overconfidence: mean(MSP − correct) over questions, percentile bootstrap (the gap between average confidence and
  accuracy; > 0 is overconfidence);
- temperature: decoding accuracy at the lowest T minus at the highest T, and the post-hoc ECE at T = 1 minus the
  lowest post-hoc ECE over T; their intervals are the conservative [low_a − high_b, high_a − low_b] from the two
  separate intervals (the sweep stores no paired difference), so "supported" errs on "undetermined";
- sampling vs token: AUROC(sampling estimator) − AUROC(MSP), paired bootstrap on the same questions;
- semantic entropy on open-ended questions: AUROC(semantic entropy) − AUROC(multi-hypothesis), paired, open-ended
  questions only;
- revise: ECE at R = 1 minus at R = 0 (largest K), the scaling study's paired differences;
- label budget: the tuned estimator's AUROC minus untuned P(True)'s at each N (the tuning report, paired).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from calib.cache import atomic_write_bytes, atomic_write_text
from calib.errors import CalibError
from paper.latex import CLAIMS

N_RESAMPLES = 1000
NEGLIGIBLE = 5e-4  # an interval inside (-NEGLIGIBLE, NEGLIGIBLE) supports no direction: "negligible"
SEED = 0
SAMPLING = (
    "semantic_entropy",
    "self_consistency",
)  # chosen before looking: the two best-known sampling estimators
STUDY_TABLES = {
    "temperature_sweep": ("sweep_decoding.csv", "sweep_posthoc.csv", "calibrators.csv"),
    "scaling": ("accuracy.csv", "differences.csv", "adaptive.csv", "transitions.csv"),
}
CLAIM_ORDER = tuple(CLAIMS)  # the mission's order, as the paper words the claims
CLAIM_COLUMNS = ["claim", "run", "quantity", "value", "low", "high", "n", "supported", "direction"]


def _verdict(low: float, high: float, direction: str) -> str:
    """'yes' when the interval lies on the claimed side of 0, 'no' when on the other side, else 'undetermined'
    ('undefined' without a value, 'negligible' when the whole interval is within NEGLIGIBLE of 0)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undefined"
    if max(abs(low), abs(high)) < NEGLIGIBLE:
        return "negligible"
    if direction == ">0":
        return "yes" if low > 0 else ("no" if high < 0 else "undetermined")
    return "yes" if high < 0 else ("no" if low > 0 else "undetermined")


def _row(claim: str, run: str, quantity: str, v: tuple[float, float, float], n: int, direction: str) -> dict:
    value, low, high = (float(x) for x in v)
    return dict(claim=claim, run=run, quantity=quantity, value=value, low=low, high=high, n=int(n),
                supported=_verdict(low, high, direction), direction=direction)  # fmt: skip


def _bootstrap_mean(x: np.ndarray) -> tuple[float, float, float]:
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(x), size=(N_RESAMPLES, len(x)))
    means = x[idx].mean(axis=1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _paired(fn: Callable, a: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    from calib.metrics import paired_bootstrap

    if len(y) < 2 or y.min() == y.max():
        return math.nan, math.nan, math.nan
    d = paired_bootstrap(fn, a, b, y, n_resamples=N_RESAMPLES, seed=SEED)
    return d.point, d.low, d.high


def _wide(run: Path, group: str = "all") -> tuple[pd.DataFrame, np.ndarray]:
    t = pd.read_parquet(
        run / "results.parquet", columns=["question_id", "open_ended", "estimator", "confidence", "correct"]
    )
    if group != "all":
        t = t[t["open_ended"].astype(bool) == (group == "open_ended")]
    wide = t.pivot_table(index="question_id", columns="estimator", values="confidence", aggfunc="first")
    y = t.drop_duplicates("question_id").set_index("question_id")["correct"].reindex(wide.index)
    return wide, y.to_numpy(np.float64)


def main_job_claims(name: str, run: Path) -> list[dict]:
    from calib.metrics import auroc

    rows = []
    wide, y = _wide(run)
    if "msp" in wide:
        keep = wide["msp"].notna().to_numpy()
        gap = wide["msp"].to_numpy(np.float64)[keep] - y[keep]
        rows.append(
            _row("token_overconfidence", name, "mean MSP - accuracy", _bootstrap_mean(gap), keep.sum(), ">0")
        )
        for est in SAMPLING:
            if est in wide:
                both = wide[[est, "msp"]].notna().all(axis=1).to_numpy()
                a, b = (wide[c].to_numpy(np.float64)[both] for c in (est, "msp"))
                v = _paired(auroc, a, b, y[both])
                rows.append(_row("sampling_vs_token", name, f"AUROC {est} - AUROC msp", v, both.sum(), ">0"))
    wide_o, y_o = _wide(run, "open_ended")
    if {"semantic_entropy", "multi_hypothesis"} <= set(wide_o.columns):
        both = wide_o[["semantic_entropy", "multi_hypothesis"]].notna().all(axis=1).to_numpy()
        a, b = (wide_o[c].to_numpy(np.float64)[both] for c in ("semantic_entropy", "multi_hypothesis"))
        v = _paired(auroc, a, b, y_o[both])
        rows.append(_row("semantic_entropy_open_ended", name, "AUROC semantic_entropy - AUROC multi_hypothesis "
                         "(open-ended)", v, both.sum(), "<0"))  # fmt: skip
    return rows


def _difference(a: pd.Series, b: pd.Series, metric: str) -> tuple[float, float, float]:
    """a − b with the conservative interval from two separate intervals."""
    return (
        a[metric] - b[metric],
        a[f"{metric}_low"] - b[f"{metric}_high"],
        a[f"{metric}_high"] - b[f"{metric}_low"],
    )


def temperature_claims(name: str, run: Path) -> list[dict]:
    rows = []
    dec = pd.read_csv(run / "sweep_decoding.csv")
    dec = dec[dec["confidence"] == "model"].sort_values("T")
    if len(dec) >= 2:
        lo, hi = dec.iloc[0], dec.iloc[-1]
        v = _difference(lo, hi, "accuracy")
        rows.append(
            _row(
                "temperature_tradeoff",
                name,
                f"decoding accuracy T={lo['T']:g} - T={hi['T']:g}",
                v,
                lo["n"],
                ">0",
            )
        )
    post = pd.read_csv(run / "sweep_posthoc.csv").sort_values("T")
    at_one = post[np.isclose(post["T"], 1.0)]
    if len(at_one) and post["ece"].notna().any():
        best = post.loc[post["ece"].idxmin()]
        v = _difference(at_one.iloc[0], best, "ece")
        rows.append(
            _row(
                "temperature_tradeoff",
                name,
                f"post-hoc ECE T=1 - T={best['T']:g} (lowest)",
                v,
                best["n"],
                ">0",
            )
        )
    return rows


def scaling_claims(name: str, run: Path) -> list[dict]:
    d = pd.read_csv(run / "differences.csv")
    d = d[(d["R"] == 1) & (d["metric"] == "ece")]
    if d.empty:
        return []
    k = d["K"].max()
    rows = []
    for est in ("msp", "semantic_entropy", "self_consistency"):
        hit = d[(d["K"] == k) & (d["estimator"] == est)]
        if len(hit):
            r = hit.iloc[0]
            v = (r["value"], r["low"], r["high"])
            # revise changes calibration: either direction counts, so "yes" when the interval excludes 0
            row = _row("revise_calibration", name, f"ECE {est} R=1 - R=0 (K={k})", v, r["n"], "<0")
            if row["supported"] == "no":
                row["supported"] = "yes (worse)"
            rows.append(row)
    return rows


def tuning_claims(name: str, table: pd.DataFrame) -> list[dict]:
    rows = []
    part = table[table["N"].notna() & (table["metric"] == "auroc")].sort_values(["eval", "method", "N"])
    for _, r in part.iterrows():
        v = (r["diff_p_true"], r["diff_low"], r["diff_high"])
        kind = str(r["eval"]).replace("_", "-")
        rows.append(
            _row(
                "label_budget",
                name,
                f"AUROC {r['method']} N={int(r['N'])} - AUROC untuned p_true ({kind})",
                v,
                r["n_questions"],
                ">0",
            )
        )
    return rows


def _replace_run_files(out: Path, name: str) -> None:
    """A run collected again replaces everything it wrote before (a table it no longer makes must not linger)."""
    for old in out.glob(f"{name}__*"):
        old.unlink()


def collect(runs: Mapping[str, Path], out: str | Path, tuning: Sequence[Path] | None = None) -> Path:
    """Copy each run's small tables into out, write its claims to out/<run>__claims.csv and merge every run's claims
    found in out into out/claims.csv; returns that file. Runs not given keep what an earlier collect wrote, so results
    made in separate sessions (paper scale is hours per run) add up in one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def put_claims(name: str, rows: list[dict]) -> None:
        table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
        atomic_write_text(out / f"{name}__claims.csv", table.to_csv(index=False, float_format="%.6g"))

    for name, run in runs.items():
        run = Path(run)
        _replace_run_files(out, name)
        manifest = run / "manifest.json"
        study = json.loads(manifest.read_text()).get("study") if manifest.is_file() else None
        if study in STUDY_TABLES:
            for table in STUDY_TABLES[study]:
                if (run / table).is_file():
                    atomic_write_bytes(out / f"{name}__{table}", (run / table).read_bytes())
            put_claims(
                name,
                temperature_claims(name, run) if study == "temperature_sweep" else scaling_claims(name, run),
            )
        elif (run / "metrics.csv").is_file():
            atomic_write_bytes(out / f"{name}__metrics.csv", (run / "metrics.csv").read_bytes())
            put_claims(name, main_job_claims(name, run))
    if tuning:
        collect_tuning(tuning, out)
        put_claims("tuning", tuning_claims("tuning", merge_tuning(out)))
    return merge_claims(out)


def tuning_name(run) -> str:
    """A calibration-tuning run's name in results: what it trained and on which questions it was evaluated."""
    return f"tuning_{run.method}_{run.n_labels}_{run.eval_kind}"


def collect_tuning(folders: Sequence[Path], out: Path) -> list[str]:
    """Each calibration-tuning run's report (its tuned rows and its evaluation's baselines, with the evaluation's
    key) into out/<tuning_name>__tuning_report.csv; returns the names. Runs of other sessions stay in out."""
    from calib.tuning import report

    runs = [report.read_run(Path(f)) for f in folders]
    names = [tuning_name(r) for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CalibError(
            f"paper results: more than one calibration-tuning run is {', '.join(twice)}; pass one of each"
        )
    for name, run in zip(names, runs):
        _replace_run_files(out, name)
        table = report.gather([run.folder]).assign(run=name, eval_key=run.eval_key)  # no machine paths
        atomic_write_text(out / f"{name}__tuning_report.csv", table.to_csv(index=False, float_format="%.6g"))
    return names


def merge_tuning(out: Path) -> pd.DataFrame:
    """out/tuning__tuning_report.csv from every run's report in out: all tuned rows, each evaluation's untuned
    baselines once. Runs evaluated differently on one kind of question (another evaluation key) are refused."""
    parts = [pd.read_csv(p) for p in sorted(out.glob("tuning_*__tuning_report.csv"))]
    table = pd.concat(parts, ignore_index=True)
    for kind, part in table.groupby("eval"):
        if part["eval_key"].nunique() > 1:
            raise CalibError(
                f"paper results: the calibration-tuning runs in {out} evaluate {kind} questions differently (another "
                "eval_limit, model or decoding); make them again with one setting (python -m paper.figures --only tuning_...)"
            )
    tuned = table[table["N"].notna()].sort_values(["eval", "method", "N"], kind="stable")
    baselines = table[table["N"].isna()].drop_duplicates(["eval", "method", "metric"])
    merged = pd.concat([tuned, baselines], ignore_index=True).drop(columns="eval_key")
    merged["N"] = merged["N"].astype("Int64")
    atomic_write_text(out / "tuning__tuning_report.csv", merged.to_csv(index=False, float_format="%.6g"))
    return merged


def merge_claims(out: str | Path) -> Path:
    """out/claims.csv: the claims of every run collected into out (its *__claims.csv), in the mission's order."""
    out = Path(out)
    parts = [pd.read_csv(p) for p in sorted(out.glob("*__claims.csv"))]
    parts = [p for p in parts if len(p)]
    claims = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=CLAIM_COLUMNS)
    order = {c: i for i, c in enumerate(CLAIM_ORDER)}
    claims = claims.sort_values("claim", key=lambda c: c.map(order).fillna(len(order)), kind="stable")
    path = out / "claims.csv"
    atomic_write_text(path, claims[CLAIM_COLUMNS].to_csv(index=False, float_format="%.6g"))
    return path
