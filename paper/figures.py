"""`make figures`: run every study the paper needs through the artifact cache, execute every notebook, write the
figures (PDF and PNG), the result CSVs and the LaTeX tables.

    python -m paper.figures                     # paper scale (hours on CPU; a rerun reuses everything)
    python -m paper.figures --scale tiny --work /tmp/w --results /tmp/w/results --generated /tmp/w/generated
    python -m paper.figures --only compare_smollm2          # one run at paper scale, its CSVs published
    python -m paper.figures --tuning-runs RUN_DIR...         # calibration-tuning runs made before, not retrained

RUNS below is the one list of runs (Hydra overrides per run, at both scales); NOTEBOOKS says which notebook reads
which run. Each run goes to <work>/runs/<name> with one artifact store, <work>/artifacts. A run is reused when its
folder holds `paper_run.json` with the same key: the composed config and the code of calib (calib.fingerprint), so
editing calib or a config reruns it, and the rerun finds its generations and estimates in the artifact store.
Then the notebooks run with papermill (<work>/notebooks/*.ipynb, executed copies), paper/results.py gathers the
small CSVs and claims into --results (with COMMANDS.md, the commands that made them), and paper/latex.py writes the
tables and claim sentences into --generated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from calib.cache import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
MODELS = {"smollm2": "smollm2-135m-instruct", "gemma3": "gemma3-270m"}
TINY_COMMON = [
    "model=tiny-llama",
    "task.limit=6",
    "decoding.max_new_tokens=5",
    "decoding.shard_size=6",
    "metrics.n_resamples=20",
]


@dataclass(frozen=True)
class Run:
    """One calib command: overrides at both scales, then paper-only and tiny-only ones (later wins)."""

    name: str
    common: list[str]
    paper: list[str] = field(default_factory=list)
    tiny: list[str] = field(default_factory=list)

    def overrides(self, scale: str) -> list[str]:
        return [*self.common, *(self.paper if scale == "paper" else [*TINY_COMMON, *self.tiny])]


TUNING = {"paper": {"lora": (250, 1000, 4000), "probe": (250, 1000, 4000)}, "tiny": {"probe": (8, 16)}}
TUNING_TINY = [
    "study.calibration_tuning.eval_limit=12",
    "study.calibration_tuning.batch_size=8",
    "study.calibration_tuning.layers=1",
    "study.calibration_tuning.probe_layers=[1,2]",
    "decoding.num_samples=2",
    "decoding.max_new_tokens=4",
]


def runs(scale: str) -> list[Run]:
    """Every run of the paper. Paper scale: the estimator comparison on the whole built-in mixed suite (709 questions,
    289 open-ended) for both built-in models; the temperature sweep on the same 709; scaling on 200; calibration
    tuning evaluated on every closed question of tuning_eval, at three label budgets for LoRA and the probe."""
    out = [
        Run(
            f"compare_{short}",
            ["task=mixed", "metrics.groups=true", "metrics.n_resamples=1000"],
            paper=[f"model={model}", "task.limit=null"],
            tiny=[
                "decoding.num_samples=3",
                "estimators.names=[msp,mean_token_prob,inverse_perplexity,self_consistency,semantic_entropy,"
                "multi_hypothesis]",
                "estimators.semantic=exact",
            ],
        )
        for short, model in MODELS.items()
        if scale == "paper" or short == "smollm2"  # tiny: one model stands for both
    ]
    out.append(
        Run(
            "temperature",
            ["experiment=temperature_sweep"],
            # the comparison's few-shot prompt (the preset's chat template halves greedy accuracy), so the sweep's
            # greedy answers are the comparison's
            paper=[
                "model=smollm2-135m-instruct",
                "task.limit=null",
                "task.prompt_style=completion",
                "task.n_shots=3",
            ],
            tiny=[
                "study.temperature_sweep.temperatures=[0.7,1.0,1.3]",
                "study.temperature_sweep.max_reference_tokens=60",
            ],
        )
    )
    out.append(
        Run(
            "scaling",
            ["experiment=scaling"],
            paper=["model=smollm2-135m-instruct", "task.limit=200"],
            tiny=[
                "estimators.names=[msp,self_consistency,semantic_entropy,revision_stability]",
                "estimators.semantic=exact",
                "metrics.groups=false",
                "study.scaling.samples=[1,2]",
                "study.scaling.passes=1",
                "study.scaling.gates=[msp]",
                "study.scaling.fractions=[0.0,0.5,1.0]",
            ],
        )
    )
    for method, budgets in TUNING[
        scale
    ].items():  # tiny: the probe only (LoRA training is tested in test_tuning_study)
        for n in budgets:
            out.append(
                Run(
                    f"tuning_{method}_{n}",
                    [
                        "experiment=calibration_tuning",
                        f"study.calibration_tuning.method={method}",
                        f"study.calibration_tuning.n={n}",
                    ],
                    paper=["model=smollm2-135m-instruct", "study.calibration_tuning.eval_limit=null"],
                    tiny=TUNING_TINY,
                )
            )
    return out


def notebooks(scale: str, work: Path, tuning_dirs: list[Path] | None = None) -> list[tuple[str, str, dict]]:
    """(notebook, output subfolder, parameters) for every executed notebook; tuning_dirs: the calibration-tuning
    runs notebook 7 reads (default: the plan's tuning_* runs)."""
    r = work / "runs"
    tuning = sorted(str(p) for p in (tuning_dirs if tuning_dirs is not None else r.glob("tuning_*")))
    models = list(MODELS) if scale == "paper" else ["smollm2"]
    jobs: list[tuple[str, str, dict]] = []
    for short in models:
        main = str(r / f"compare_{short}")
        jobs += [
            ("01_token_overconfidence", short, {"run_dir": main}),
            ("03_closed_vs_open", short, {"run_dir": main}),
            ("04_semantic_entropy_vs_multi_hypothesis", short, {"run_dir": main}),
        ]
    jobs += [
        ("02_temperature_tradeoff", "temperature", {"temperature_dir": str(r / "temperature")}),
        ("05_inference_scaling", "scaling", {"scaling_dir": str(r / "scaling")}),
        (
            "06_full_ece_vs_answer_ece",
            "full_ece",
            {"run_dir": str(r / "compare_smollm2"), "temperature_dir": str(r / "temperature")},
        ),
        (
            "07_calibration_tuning_vs_labels",
            "tuning",
            {"tuning_dirs": tuning},
        ),
    ]
    return jobs


def run_key(overrides: list[str]) -> str:
    """The composed config and calib's code: what decides a run's outputs."""
    from omegaconf import OmegaConf

    from calib.fingerprint import stage_fingerprint
    from calib.pipeline.config import compose
    from calib.pipeline.store import artifact_key

    cfg = OmegaConf.to_yaml(OmegaConf.structured(compose(overrides)))
    return artifact_key("paper-run", stage_fingerprint(modules=["calib"]), {"config": cfg})


def finished(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() or (folder / "tuning.json").is_file()


def ensure_run(
    run: Run, scale: str, work: Path, artifacts: Path | None = None, dry_run: bool = False
) -> dict:
    """Run one calib command unless its folder already holds the same run; returns what happened (with dry_run,
    what would happen)."""
    from calib.cli import main

    folder = work / "runs" / run.name
    quiet = (
        ["progress=false"] if scale == "tiny" else []
    )  # paper scale: progress bars and logs for hours of work
    overrides = [*run.overrides(scale), f"artifacts_dir={artifacts or work / 'artifacts'}", *quiet]
    key = run_key(overrides)
    stamp = folder / "paper_run.json"
    if finished(folder) and stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        return {"run": run.name, "cached": True, "seconds": 0.0}
    if dry_run:
        return {"run": run.name, "cached": False, "seconds": 0.0, "command": "calib " + " ".join(overrides)}
    shutil.rmtree(
        folder, ignore_errors=True
    )  # a stale run of other settings: its artifacts stay in the store
    started, commit = time.perf_counter(), code_commit()
    logging = ["hydra/job_logging=none", "hydra/hydra_logging=none"] if scale == "tiny" else []
    main([*overrides, f"hydra.run.dir={folder}", *logging])
    record = {
        "key": key,
        "command": "calib " + " ".join(run.overrides(scale)),
        "seconds": time.perf_counter() - started,
        "commit": commit,
        "made": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    atomic_write_text(stamp, json.dumps(record, indent=1))
    return {"run": run.name, "cached": False, "seconds": record["seconds"]}


@contextlib.contextmanager
def _kernel_env():
    """The notebook kernels import this checkout's calib and draw without a display."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "MPLBACKEND")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), saved["PYTHONPATH"]]))
    os.environ["MPLBACKEND"] = "Agg"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _inputs(params: dict) -> list[str]:
    """The run folders a notebook job reads (its parameters are run folders or lists of them)."""
    return [str(p) for v in params.values() for p in (v if isinstance(v, list) else [v])]


def _run_key(folder: Path) -> str:
    """What identifies a finished run for the notebooks that read it: its paper_run.json key, or its tuning key."""
    stamp = folder / "paper_run.json"
    return json.loads(stamp.read_text())["key"] if stamp.is_file() else tuning_key(folder)


def notebook_key(name: str, params: dict, out_dir: Path, formats: str) -> str:
    """The notebook's cells, its parameters and the keys of the runs it reads: an executed copy with this key is
    current, however the runs were made (one `make figures` or several `--only`)."""
    from calib.pipeline.store import content_hash

    source = (NOTEBOOK_DIR / f"{name}.ipynb").read_text()
    runs = [_run_key(Path(p)) for p in _inputs(params)]
    return content_hash(
        {"source": source, "params": params, "out": str(out_dir), "formats": formats, "runs": runs}
    )


def execute_notebooks(
    jobs: list[tuple[str, str, dict]],
    work: Path,
    generated: Path,
    formats: str,
    force: bool = False,
) -> list[dict]:
    """Execute each notebook with papermill (any cell error raises), unless its executed copy is current."""
    import papermill

    done = []
    (work / "notebooks").mkdir(parents=True, exist_ok=True)
    with _kernel_env():
        for name, sub, params in jobs:
            executed = work / "notebooks" / f"{name}__{sub}.ipynb"
            stamp = executed.with_suffix(".json")
            out_dir = generated / sub
            key = notebook_key(name, params, out_dir, formats)
            current = stamp.is_file() and json.loads(stamp.read_text()).get("key") == key
            if not force and current and executed.is_file() and out_dir.is_dir() and any(out_dir.iterdir()):
                done.append({"notebook": f"{name}__{sub}", "cached": True})
                continue
            papermill.execute_notebook(
                str(NOTEBOOK_DIR / f"{name}.ipynb"),
                str(executed),
                parameters={**params, "out_dir": str(out_dir), "formats": formats},
                kernel_name="python3",
                progress_bar=False,
                cwd=str(work),
            )
            atomic_write_text(stamp, json.dumps({"key": key}))
            done.append({"notebook": f"{name}__{sub}", "cached": False})
    return done


def tuning_key(folder: Path) -> str:
    return json.loads((folder / "tuning.json").read_text()).get("key", str(folder))


def tuning_run_command(folder: Path) -> str:
    """The command a calibration-tuning run folder records (Hydra's overrides), for COMMANDS.md."""
    import yaml

    overrides = folder / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return f"(no .hydra/overrides.yaml in {folder})"
    return "calib " + " ".join(yaml.safe_load(overrides.read_text()) or [])


def check_tuning_runs(folders: list[Path]) -> list[Path]:
    """Finished calibration-tuning runs given with --tuning-runs: each must hold tuning.json (one line if not)."""
    for folder in folders:
        if not (folder / "tuning.json").is_file():
            sys.exit(f"paper.figures: {folder} has no tuning.json; --tuning-runs takes finished "
                     "`calib experiment=calibration_tuning` run folders")  # fmt: skip
    return sorted(folders)


def code_commit() -> str:
    """The commit of this checkout (with "-dirty" when calib or configs, what a run depends on, differ from it):
    which code made a result, for COMMANDS.md."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()  # fmt: skip

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--", "calib", "configs")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


PROVENANCE_COLUMNS = ["run", "commit", "made", "minutes", "command"]


def record_provenance(results: Path, rows: list[dict], invocation: str) -> None:
    """results/runs.csv: one row per run whose CSVs are in results (a run published again replaces its row), and
    COMMANDS.md rendered from it."""
    import pandas as pd

    path = results / "runs.csv"
    old = (
        pd.read_csv(path, dtype=str).fillna("")
        if path.is_file()
        else pd.DataFrame(columns=PROVENANCE_COLUMNS)
    )
    stale = old["run"].isin([r["run"] for r in rows])
    table = pd.concat(
        [old[~stale], pd.DataFrame(rows, columns=PROVENANCE_COLUMNS).astype(str)], ignore_index=True
    )
    table = table.sort_values("run", kind="stable")
    atomic_write_text(path, table.to_csv(index=False))
    lines = [f"| {r.run} | {r.commit} | {r.made} | {r.minutes} | `{r.command}` |" for r in table.itertuples()]
    atomic_write_text(
        results / "COMMANDS.md",
        "# How these CSVs were made\n\n"
        f"Last collected by `{invocation}`. Each run below is a calib command (with artifacts_dir=<work>/artifacts), "
        "made by the commit of calib named beside it; `python -m paper.figures --only RUN` re-makes one run and "
        "replaces its CSVs, leaving the others.\n\n"
        "| run | commit | made (UTC) | minutes | command |\n|---|---|---|---|---|\n"
        + "\n".join(lines)
        + "\n",
    )


def publish(
    results: Path,
    generated: Path,
    scale: str,
    main_runs: dict[str, Path],
    stamps: dict[str, dict],  # paper_run.json of each main run
    tuning_dirs: list[Path] | None,
    invocation: str,
) -> None:
    """Collect these runs' CSVs and claims into results (keeping other runs' earlier ones), record how each was made,
    and rewrite the LaTeX tables from everything results holds."""
    from calib.tuning.report import read_run
    from paper import latex
    from paper import results as collect

    results.mkdir(parents=True, exist_ok=True)
    collect.collect(main_runs, results, tuning_dirs)
    atomic_write_text(results / "SCALE", f"{scale} scale\n")

    def row(name: str, stamp: dict) -> dict:
        minutes = f"{stamp['seconds'] / 60:.1f}" if "seconds" in stamp else ""
        return {"run": name, "commit": stamp.get("commit", "unknown"), "made": stamp.get("made", ""),
                "minutes": minutes, "command": stamp["command"]}  # fmt: skip

    rows = [row(name, stamps[name]) for name in main_runs]
    # the plan's tuning_* runs carry a stamp; runs made elsewhere only their overrides
    for d in tuning_dirs or []:
        stamp = d / "paper_run.json"
        made = json.loads(stamp.read_text()) if stamp.is_file() else {"command": tuning_run_command(d)}
        rows.append(row(collect.tuning_name(read_run(d)), made))
    record_provenance(results, rows, invocation)
    latex.write(results, generated)


def say(record: dict) -> dict:
    how = "cached" if record["cached"] else "computed in {:.0f} s".format(record["seconds"])
    print(f"run {record['run']}: {how}", flush=True)
    return record


def make_only(
    chosen: list[Run],
    scale: str,
    work: Path,
    results: Path,
    generated: Path,
    artifacts: Path | None,
    tuning_runs: list[Path] | None,
    invocation: str,
    formats: str = "png,pdf",
    rerun_notebooks: bool = False,
) -> None:
    """Make the chosen runs and publish their CSVs (other runs' CSVs in results stay): paper scale is hours per run,
    so the results folder can fill up one run, or one session, at a time. Then the notebooks that read these runs
    are executed (their figures into generated) where every other run they read is finished in work; the others wait
    for their runs."""
    for run in chosen:
        say(ensure_run(run, scale, work, artifacts))
    main_runs = {r.name: work / "runs" / r.name for r in chosen if not r.name.startswith("tuning_")}
    stamps = {n: json.loads((d / "paper_run.json").read_text()) for n, d in main_runs.items()}
    tuning_dirs = [
        *(tuning_runs or []),
        *(work / "runs" / r.name for r in chosen if r.name.startswith("tuning_")),
    ]
    publish(results, generated, scale, main_runs, stamps, tuning_dirs, invocation)
    print(f"published {', '.join([*main_runs, *(['tuning'] if tuning_dirs else [])])} into {results}")
    made = {str(d) for d in [*main_runs.values(), *tuning_dirs]}
    earlier = [d for d in sorted((work / "runs").glob("*")) if str(d) not in made and finished(d)]
    ready = made | {str(d) for d in earlier}  # runs an earlier --only left in work count as inputs too
    tuning_all = [*tuning_dirs, *(d for d in earlier if d.name.startswith("tuning_"))]
    jobs = []
    for job in notebooks(scale, work, tuning_all):
        inputs = set(_inputs(job[2]))
        if all(job[2].values()) and inputs <= ready and inputs & made:
            jobs.append(job)
    for n in execute_notebooks(jobs, work, generated, formats, force=rerun_notebooks):
        print(f"notebook {n['notebook']}: " + ("current" if n["cached"] else "executed"))


def make_figures(
    scale: str,
    work: Path,
    results: Path,
    generated: Path,
    formats: str = "png,pdf",
    rerun_notebooks: bool = False,
    artifacts: Path | None = None,
    tuning_runs: list[Path] | None = None,
    command: str | None = None,
) -> dict:
    """Every run (reused or made), every notebook executed, results and LaTeX written; returns a summary.
    tuning_runs: finished calibration-tuning runs made elsewhere, used instead of the plan's tuning_* runs;
    command: how this was invoked, for COMMANDS.md (default: the plain `python -m paper.figures --scale SCALE`)."""
    started = time.perf_counter()
    plan = [r for r in runs(scale) if not (tuning_runs and r.name.startswith("tuning_"))]
    records = [say(ensure_run(run, scale, work, artifacts)) for run in plan]
    stamps = {r.name: json.loads((work / "runs" / r.name / "paper_run.json").read_text()) for r in plan}
    tuning_dirs = tuning_runs or [work / "runs" / r.name for r in plan if r.name.startswith("tuning_")]
    jobs = notebooks(scale, work, tuning_dirs)
    executed = execute_notebooks(jobs, work, generated, formats, force=rerun_notebooks)
    main_runs = {r.name: work / "runs" / r.name for r in plan if not r.name.startswith("tuning_")}
    publish(
        results,
        generated,
        scale,
        main_runs,
        stamps,
        tuning_dirs,
        command or f"python -m paper.figures --scale {scale}",
    )
    summary = {
        "scale": scale,
        "runs": records,
        "computed": [r["run"] for r in records if not r["cached"]],
        "notebooks": executed,
        "executed": [n["notebook"] for n in executed if not n["cached"]],
        "seconds": time.perf_counter() - started,
    }
    print(f"make figures ({scale}): {len(records) - len(summary['computed'])}/{len(records)} runs cached, "
          f"{len(summary['executed'])}/{len(jobs)} notebooks executed, {summary['seconds']:.0f} s; figures and tables in {generated}")  # fmt: skip
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paper.figures", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("paper", "tiny"), default="paper")
    parser.add_argument("--work", default="out/paper", help="run folders, artifact store, executed notebooks")
    parser.add_argument("--results", default=None, help="result CSVs (default: paper/results at paper scale, "
                        "<work>/results at tiny scale, so tiny numbers never land in paper/results)")  # fmt: skip
    parser.add_argument("--generated", default=None, help="figures and .tex tables (default: paper/generated at "
                        "paper scale, <work>/generated at tiny scale)")  # fmt: skip
    parser.add_argument("--artifacts", default=None, help="artifact store (default <work>/artifacts); another "
                        "run's store is reused wherever its stages match")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="say which runs are cached and which would run"
    )
    parser.add_argument("--only", nargs="+", metavar="RUN", help="make only these runs (names as --dry-run "
                        "prints them), put their CSVs into --results beside the other runs', rewrite the tables and "
                        "execute the notebooks that read them once every other run they read is in --work")  # fmt: skip
    parser.add_argument("--tuning-runs", nargs="+", metavar="DIR", help="finished calibration-tuning run folders "
                        "to use instead of the tuning_* runs (e.g. a study made before; COMMANDS.md lists them)")  # fmt: skip
    parser.add_argument(
        "--rerun-notebooks",
        action="store_true",
        help="execute every notebook (with --only: every notebook it would execute) even when its inputs are unchanged",
    )
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    default_results = ROOT / "paper" / "results" if args.scale == "paper" else work / "results"
    results = Path(args.results).resolve() if args.results else default_results
    if args.scale == "tiny" and results == (ROOT / "paper" / "results").resolve():
        sys.exit("paper.figures: tiny-scale numbers are not results; pass another --results folder")
    default_generated = ROOT / "paper" / "generated" if args.scale == "paper" else work / "generated"
    generated = Path(args.generated).resolve() if args.generated else default_generated
    artifacts = Path(args.artifacts).resolve() if args.artifacts else None
    tuning_runs = (
        check_tuning_runs([Path(d).resolve() for d in args.tuning_runs]) if args.tuning_runs else None
    )
    plan = [r for r in runs(args.scale) if not (tuning_runs and r.name.startswith("tuning_"))]
    if args.only:
        unknown = sorted(set(args.only) - {r.name for r in plan})
        if unknown:
            sys.exit(
                f"paper.figures: no run named {', '.join(unknown)}; the runs are {', '.join(r.name for r in plan)}"
            )
        make_only(
            [r for r in plan if r.name in args.only],
            args.scale,
            work,
            results,
            generated,
            artifacts,
            tuning_runs,
            " ".join(["python -m paper.figures", *(sys.argv[1:] if argv is None else argv)]),
            rerun_notebooks=args.rerun_notebooks,
        )
        return
    if args.dry_run:
        for run in plan:
            r = ensure_run(run, args.scale, work, artifacts, dry_run=True)
            print(f"{run.name}: cached" if r["cached"] else f"{run.name}: would run  {r['command']}")
        return
    make_figures(
        args.scale,
        work,
        results,
        generated,
        rerun_notebooks=args.rerun_notebooks,
        artifacts=artifacts,
        tuning_runs=tuning_runs,
        command=" ".join(["python -m paper.figures", *(sys.argv[1:] if argv is None else argv)]),
    )


if __name__ == "__main__":
    main()
