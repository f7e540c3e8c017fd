"""The `calib` command: the main job on Hydra, plus `calib compare`, `calib list` and `calib feedback`.

    calib [KEY=VALUE ...]          one run (Hydra overrides; `calib --help` explains them)
    calib -m KEY=V1,V2 ...         a sweep, one run per combination
    calib compare PATH [PATH ...]  one table of the metrics of finished runs
    calib tuning-report RUN... --out DIR  calibration-tuning runs vs the number of labels (calib.tuning.report)
    calib list                     what can be named: models, tasks, estimators, metrics, config options
    calib inspect RUN --question ID  one question of a finished run, from the store (no model load)
    calib feedback record|refit|show|export|transform  the recalibration feedback loop (docs/recalibration.md)
    calib cache [prune]            the user cache's size; prune removes what this code never reads (calib.cache_cli)

User errors (unknown group option or key, wrong type, bad value, missing file, a folder that cannot be written)
end with one line on stderr and exit code 2, before anything is written to the artifact store; Ctrl-C ends with one
line and exit code 130, and rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import shutil
import sys
from pathlib import Path

from calib.errors import CalibError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


# ---- one-line messages for configuration errors ------------------------------------------------------------------
def _schema_fields(full_key: str) -> list[str] | None:
    """Field names of the structured config that holds `full_key` (for 'unknown key' messages)."""
    import dataclasses

    from calib.pipeline.config import RunConfig

    node: object = RunConfig
    for part in full_key.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return None
        node = (
            fields[part].default_factory()
            if fields[part].default_factory is not dataclasses.MISSING
            else None
        )
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else None


def _flatten(text: str) -> str:
    return " ".join(str(text).split())


def one_line(err: BaseException, unnamed: str = "a file") -> str | None:
    """The message a user should see for a configuration error, or None for anything else (a bug: traceback)."""
    from hydra.errors import HydraException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        MissingMandatoryValue,
        OmegaConfBaseException,
    )

    if isinstance(err, CalibError):
        return str(err)
    chain, cause = [], err
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for e in chain:
        if isinstance(e, OmegaConfBaseException) and getattr(e, "full_key", None):
            key = e.full_key
            first = str(e).splitlines()[0]
            if isinstance(e, MissingMandatoryValue):
                return f"{key} has no value (???): set it, e.g. {key}=..."
            if isinstance(e, ConfigKeyError | ConfigAttributeError):
                return unknown_key_message(key)
            return f"{key}: {first}"
    for e in chain:
        if isinstance(e, HydraException | OmegaConfBaseException):
            text = str(e)
            options = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)*)", text)
            if options:
                missing = re.search(r"Could not find '([^']+)'", text)
                what = f"no config option {missing.group(1)!r}" if missing else _flatten(text.splitlines()[0])
                return f"{what}; options for {options.group(1)}: {', '.join(options.group(2).split())}"
            override = re.search(r"Could not override '([^']+)'", text)
            if override:
                return unknown_key_message(override.group(1))
            return _flatten(text)
    if isinstance(err, OSError):  # after Hydra's: its MissingConfigException is an OSError too
        return os_error_line(err, unnamed)
    return None


WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def os_error_line(err: OSError, unnamed: str = "a file") -> str:
    """An OSError that reached the CLI (a folder Hydra could not create, a file that could not be opened) in one
    line: what, where, why. Writes inside calib already say `cannot write <path>: <reason>`."""
    where = err.filename if err.filename is not None else unnamed
    reason = err.strerror or str(err) or type(err).__name__
    verb = "write" if err.errno in WRITE_ERRNOS else "access"
    return f"cannot {verb} {where}: {reason}"


FREE_FORM = ("task.options", "task.grading", "estimators.params", "estimators.semantic_options")


def unknown_key_message(key: str) -> str:
    """Unknown key: list the keys that exist there, or say how to add an entry to a free-form mapping."""
    parent = key.rsplit(".", 1)[0]
    if any(parent == f or parent.startswith(f + ".") for f in FREE_FORM):
        return f"{key} is not set yet: add an entry to {parent} with a leading +, e.g. +{key}=VALUE"
    fields = _schema_fields(key)
    known = f"; keys there: {', '.join(fields)}" if fields else ""
    return f"unknown config key {key}{known}"


# ---- the Hydra job -----------------------------------------------------------------------------------------------
def _remove_failed_run_dir(run_dir: Path) -> None:
    """A run that failed before any output keeps nothing behind (Hydra created the folder for its logs)."""
    if (run_dir / "manifest.json").exists() or not run_dir.is_dir():
        return
    leftovers = {p.name for p in run_dir.iterdir()} - {".hydra", "calib.log"}
    if not leftovers:
        shutil.rmtree(run_dir, ignore_errors=True)


def _job(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig

    from calib.cache import enable_compilation_cache
    from calib.pipeline import programs
    from calib.pipeline.config import to_run_config
    from calib.pipeline.run import run

    enable_compilation_cache()  # sampler, scoring and bootstrap programs are compiled once per machine
    programs.install()  # the manifest records how many programs the run compiled and loaded
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run(to_run_config(cfg), run_dir)
    except Exception as err:
        message = one_line(err)
        if message is None:
            raise
        # Ending here (not in Hydra's handler) keeps the message to one line; in a sweep it stops the sweep.
        _remove_failed_run_dir(run_dir)
        print(f"calib: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None


def _hydra(argv: list[str]) -> None:
    import hydra

    from calib.pipeline.config import config_dir, register_configs

    # HF_HUB_OFFLINE is the user's: built-in models, tasks and the embedder load from local folders without the hub,
    # and hub tasks (task=triviaqa) need it unset or 0 to download
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # weight-loading bars of sentence-transformers
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = (
        "1"  # let errors reach us, to print them as one line (tracebacks on request)
    )
    register_configs()
    entry = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_job)
    saved = sys.argv
    sys.argv = ["calib", *argv]
    try:
        entry()
    except Exception as err:
        # an OSError naming no file here is Hydra writing its .hydra/ files; calib's own writes name theirs
        message = one_line(err, unnamed="the run folder (hydra.run.dir)")
        if message is None or previous == "1":
            raise
        print(f"calib: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    finally:
        sys.argv = saved
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


# ---- calib compare / calib list -----------------------------------------------------------------------------------
def _compare(argv: list[str]) -> None:
    from calib.pipeline.compare import compare, print_tables
    from calib.pipeline.evaluate import METRICS

    parser = argparse.ArgumentParser(
        prog="calib compare",
        description="One table of the metrics of finished runs, e.g. every run of a sweep folder. Runs are "
        "labelled by the overrides in which they differ. Cells: value [bootstrap interval]; '–' = not run, 'undef' = "
        "no value. Below each table: every run minus the first run, paired over the questions both answered. "
        "Writes compare.csv, compare_paired.csv, compare.md and compare_<metric> figures.",
    )
    parser.add_argument("paths", nargs="+", help="run folders, or folders containing runs (a sweep folder)")
    parser.add_argument(
        "--metric",
        action="append",
        choices=list(METRICS),
        help="metric to tabulate (repeatable; default auroc, ece)",
    )
    parser.add_argument(
        "--group", default="all", help="question group: all, closed or open_ended (default all)"
    )
    parser.add_argument("--out", help="folder for the outputs (default: the first path)")
    parser.add_argument("--no-figures", action="store_true", help="skip the plots")
    parser.add_argument(
        "--formats",
        help="figure formats, comma-separated from png, pdf, svg (default: the first run's report.formats, else png)",
    )
    args = parser.parse_args(argv)
    metrics = args.metric or ["auroc", "ece"]
    formats = [f.strip() for f in args.formats.split(",") if f.strip()] if args.formats else None
    bad = [f for f in formats or [] if f not in ("png", "pdf", "svg")]
    if bad or formats == []:
        parser.error(f"--formats: got {args.formats!r}; pass a comma-separated list of png, pdf, svg")
    tables = compare(args.paths, metrics, args.group, args.out, figures=not args.no_figures, formats=formats)
    print_tables(tables, Path(args.out or args.paths[0]))


def _list(argv: list[str]) -> None:
    from calib.estimators import get_estimator, list_estimators
    from calib.models import list_models
    from calib.pipeline.config import config_dir
    from calib.pipeline.evaluate import METRICS
    from calib.tasks import describe_tasks, list_tasks

    argparse.ArgumentParser(prog="calib list", description="What a config can name.").parse_args(argv)
    print("models (model=NAME or model.name=gguf:PATH / hf:PATH):\n  " + ", ".join(list_models()))
    described = describe_tasks()
    print("tasks (task.name=NAME):")
    for name in list_tasks():
        print(f"  {name:22s} {described.get(name, '(plugin)')[:90]}")
    print("estimators (estimators.names=[a,b,...]; 'all' = every one the run can feed):")
    for name in list_estimators():
        needs = ", ".join(sorted(n.label for n in get_estimator(name).needs))
        print(f"  {name:28s} needs {needs}")
    print("metrics (metrics.names=[...]):\n  " + ", ".join(METRICS))
    root = config_dir()
    print("config groups (GROUP=OPTION):")
    for group in ("model", "task", "decoding", "estimators", "metrics", "experiment"):
        options = sorted(p.stem for p in (root / group).glob("*.yaml"))
        print(f"  {group:11s} {', '.join(options)}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `calib` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "compare":
            return _compare(argv[1:])
        if argv and argv[0] == "tuning-report":
            from calib.tuning import report

            return report.main(argv[1:])
        if argv and argv[0] == "list":
            return _list(argv[1:])
        if argv and argv[0] == "inspect":
            from calib.pipeline import inspect

            return inspect.main(argv[1:])
        if argv and argv[0] == "cache":
            from calib import cache_cli

            sys.exit(cache_cli.main(argv[1:]))
        if argv and argv[0] == "feedback":
            from calib import feedback_cli

            sys.exit(feedback_cli.main(argv[1:]))
        return _hydra(argv)
    except (CalibError, OSError) as err:
        print(f"calib: error: {one_line(err)}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        # Every stage writes whole artifacts or none, so nothing needs cleaning up: the rerun resumes.
        print("calib: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
