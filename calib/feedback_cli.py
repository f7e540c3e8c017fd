"""`calib feedback ...`: record graded answers, refit the calibrator, show or export it, recalibrate numbers.

    calib feedback record --db sqlite:///fb.db --question "Capital of Australia?" --answer Canberra \
        --confidence 0.62 --correct 1
    calib feedback record --db sqlite:///fb.db --file graded.jsonl     # rows {question, answer, confidence, correct}
    calib feedback refit --db sqlite:///fb.db [--kind isotonic | --full]
    calib feedback show --db sqlite:///fb.db [--check]
    calib feedback export --db sqlite:///fb.db --out calibrator.json
    calib feedback transform --calibrator calibrator.json 0.9 0.5      # or --db ...

Without --db the database is $CALIB_FEEDBACK_DB or the user data dir's feedback.sqlite. record and refit are the
only commands that write to it (and create calib's tables only in a new or empty file); show, export and
transform open it read-only. User errors print one line (`calib: error: ...`) to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calib.errors import CalibError

if TYPE_CHECKING:
    from calib.recalibrate import Recalibrator

_TRUE = {"1", "true", "yes", "correct", "y", "t"}
_FALSE = {"0", "false", "no", "wrong", "incorrect", "n", "f"}


def parse_correct(value: Any, where: str = "--correct") -> int:
    """0/1 from a bool, 0/1 number or a word such as true/false."""
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    if text in _TRUE or text == "1.0":
        return 1
    if text in _FALSE or text == "0.0":
        return 0
    raise CalibError(f"{where}: {value!r} is not a correctness label; use 1/0 (or true/false)")


def parse_confidence(value: Any, where: str = "--confidence") -> float:
    try:
        c = float(value)
    except (TypeError, ValueError) as err:
        raise CalibError(f"{where}: {value!r} is not a number; pass a confidence in [0, 1]") from err
    if not 0.0 <= c <= 1.0:
        raise CalibError(f"{where}: {c:g} is outside [0, 1]; pass a confidence in [0, 1]")
    return c


def read_rows(path: str) -> dict[str, list]:
    """Rows of a .jsonl or .csv file with columns question, answer, confidence, correct (uid, source optional)."""
    p = Path(path)
    if not p.is_file():
        raise CalibError(f"{path}: no such file; pass a .jsonl or .csv of graded rows")
    try:
        if p.suffix == ".jsonl":
            records = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        elif p.suffix == ".csv":
            with p.open(newline="") as f:
                records = list(csv.DictReader(f))
        else:
            raise CalibError(f"{path}: unknown file type {p.suffix!r}; use .jsonl or .csv")
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as err:
        raise CalibError(f"{path}: cannot be read ({err}); fix the file and record again") from err
    cols: dict[str, list] = {"questions": [], "answers": [], "confidence": [], "correct": [], "uids": []}
    for i, r in enumerate(records, 1):
        where = f"{path} row {i}"
        if not isinstance(r, dict) or "confidence" not in r or "correct" not in r:
            raise CalibError(f"{where}: needs 'confidence' and 'correct' fields")
        cols["questions"].append(str(r.get("question", "")))
        cols["answers"].append(str(r.get("answer", "")))
        cols["confidence"].append(parse_confidence(r["confidence"], f"{where} confidence"))
        cols["correct"].append(parse_correct(r["correct"], f"{where} correct"))
        cols["uids"].append(r.get("uid"))
    if not records:
        raise CalibError(f"{path}: has no rows")
    missing = sum(u is None for u in cols["uids"])
    if missing == len(records):
        cols["uids"] = None  # fresh random uids
    elif missing:
        raise CalibError(f"{path}: {missing} rows have no uid but others do; give every row a uid or none")
    return cols


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="calib feedback", description="Record graded answers and recalibrate.")
    sub = ap.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", default=None, help="sqlite:///path.db or a file path (default: user data dir)")
        p.add_argument("--name", default="default", help="calibrator name inside the database")
        p.add_argument(
            "--timeout", type=float, default=10.0, help="seconds to wait for another writer's lock"
        )

    rec = sub.add_parser("record", help="store graded answers and update the calibrator")
    common(rec)
    rec.add_argument("--file", help=".jsonl or .csv with question, answer, confidence, correct [, uid]")
    rec.add_argument("--question", default="")
    rec.add_argument("--answer", default="")
    rec.add_argument("--confidence")
    rec.add_argument("--correct")
    rec.add_argument("--uid", help="idempotency key: recording the same uid twice stores one row")
    rec.add_argument("--source", help="who graded it (user, grader name, ...)")
    rec.add_argument(
        "--kind", help="calibrator kind when the database has none yet (default online_histogram)"
    )
    rec.add_argument(
        "--no-refit", action="store_true", help="only store the rows; fold them in later with refit"
    )

    ref = sub.add_parser("refit", help="fold unseen rows in, or rebuild the calibrator from every row")
    common(ref)
    ref.add_argument(
        "--kind", help="rebuild as this kind (online_histogram, isotonic, platt, beta, histogram)"
    )
    ref.add_argument("--full", action="store_true", help="rebuild from every row (repairs a damaged state)")

    show = sub.add_parser("show", help="row counts, the calibrator, and the last rows")
    common(show)
    show.add_argument("--last", type=int, default=5, help="how many recent rows to print")
    show.add_argument("--check", action="store_true", help="run SQLite's integrity check too")

    exp = sub.add_parser("export", help="write the calibrator to .json or .safetensors")
    common(exp)
    exp.add_argument("--out", required=True)

    tr = sub.add_parser("transform", help="recalibrate confidences with a saved calibrator or the database's")
    common(tr)
    tr.add_argument("--calibrator", help="a .json/.safetensors file from export (no database needed)")
    tr.add_argument("confidence", nargs="+")
    return ap


def _record(args: argparse.Namespace, out) -> None:
    from calib.recalibrate import FeedbackStore, Recalibrator

    if args.file:
        cols = read_rows(args.file)
        cols["source"] = args.source
    else:
        if args.confidence is None or args.correct is None:
            raise CalibError("record needs --confidence and --correct (or --file with graded rows)")
        cols = {
            "confidence": [parse_confidence(args.confidence)],
            "correct": [parse_correct(args.correct)],
            "questions": [args.question],
            "answers": [args.answer],
            "source": args.source,
            "uids": None if args.uid is None else [args.uid],
        }
    if args.no_refit:
        with FeedbackStore(args.db, timeout=args.timeout) as store:
            added = store.record(cols.pop("confidence"), cols.pop("correct"), **cols)
        print(
            f"recorded {added} new rows ({len(cols['questions']) - added} already present); not refitted",
            file=out,
        )
        return
    with Recalibrator(args.db, name=args.name, kind=args.kind, timeout=args.timeout) as rec:
        added = rec.update(cols.pop("confidence"), cols.pop("correct"), **cols)
        print(
            f"recorded {added} new rows; {rec.kind} calibrator {args.name!r} now covers row ids up to {rec.rows_seen}",
            file=out,
        )


def _show(args: argparse.Namespace, out) -> None:
    from calib.recalibrate import FeedbackStore, Recalibrator

    with FeedbackStore(args.db, timeout=args.timeout, readonly=True) as store:
        print(f"database: {store.path}", file=out)
        print(f"rows: {store.count()}", file=out)
        if args.check:
            print(f"integrity: {store.check()}", file=out)
        names = store.calibrator_names()
        print(f"calibrators: {', '.join(names) or '(none yet)'}", file=out)
        if args.name in names:
            rec = Recalibrator(store, name=args.name)
            rec.refresh()  # a damaged state is reported here, not shown as a blank calibrator
            print(
                f"{args.name}: {rec.kind} {rec.calibrator!r}, rows folded in: ids up to {rec.rows_seen}",
                file=out,
            )
            grid = [0.1, 0.3, 0.5, 0.7, 0.9]
            mapped = rec.transform(grid)
            print(
                "  confidence -> recalibrated: "
                + ", ".join(f"{g:.1f}->{m:.3f}" for g, m in zip(grid, mapped)),
                file=out,
            )
        for r in store.rows(limit=args.last) if args.last > 0 else []:
            print(
                f"  #{r.id} conf={r.confidence:.3f} correct={r.correct} q={r.question[:40]!r} a={r.answer[:30]!r}",
                file=out,
            )


def _stored(args: argparse.Namespace) -> Recalibrator:
    """The named calibrator of the database, opened read-only; refuses a name the database does not have."""
    from calib.recalibrate import FeedbackStore, Recalibrator

    store = FeedbackStore(args.db, timeout=args.timeout, readonly=True)
    try:
        names = store.calibrator_names()
        if args.name not in names:
            raise CalibError(
                f"feedback database {store.path} has no calibrator {args.name!r} (it has: "
                f"{', '.join(names) or 'none'}); run `calib feedback refit` first or pass --name"
            )
        rec = Recalibrator(store, name=args.name)
        rec.refresh()
        return rec
    except BaseException:
        store.close()
        raise


def _existing(db: str | None) -> None:
    """Reading commands never create a database by accident."""
    from calib.recalibrate import db_path

    path = db_path(db)
    if path != ":memory:" and not Path(path).is_file():
        raise CalibError(f"no feedback database at {path}; record rows first or pass --db")


def run(args: argparse.Namespace, out=None) -> None:
    """Execute one parsed subcommand, printing to `out` (stdout by default); raises CalibError for user errors."""
    out = out or sys.stdout
    if args.command != "record" and not getattr(args, "calibrator", None):
        _existing(args.db)
    from calib.recalibrate import Calibrator, Recalibrator, load_calibrator

    if args.command == "record":
        _record(args, out)
    elif args.command == "refit":
        with Recalibrator(args.db, name=args.name, timeout=args.timeout) as rec:
            cal = rec.refit(kind=args.kind, full=args.full)
            print(f"refitted {args.name!r}: {cal!r} on row ids up to {rec.rows_seen}", file=out)
    elif args.command == "show":
        _show(args, out)
    elif args.command == "export":
        with _stored(args) as rec:
            if Path(args.out).absolute().resolve() == Path(rec.store.path).absolute().resolve():
                raise CalibError(f"--out {args.out} is the feedback database itself; pass another file name")
            print(f"wrote {rec.save(args.out)}", file=out)
    elif args.command == "transform":
        values = [parse_confidence(v, "confidence") for v in args.confidence]
        if args.calibrator:
            cal = load_calibrator(args.calibrator)
            if not isinstance(cal, Calibrator):
                raise CalibError(f"{args.calibrator} holds a {cal.kind} model, not a confidence calibrator")
            mapped = cal.transform(values)
        else:
            with _stored(args) as rec:
                mapped = rec.transform(values)
        print(" ".join(f"{m:.6f}" for m in mapped), file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `calib feedback ...`: returns the exit status (0 ok, 2 user error)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run(args)
    except CalibError as err:
        print(f"calib: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
