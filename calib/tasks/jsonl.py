"""Users' own question files: JSONL, JSON or CSV/TSV with configurable question and answer columns.

    load_task("jsonl", path="my.jsonl")                                  # {"question": ..., "answers": [...]}
    load_task("csv", path="my.csv", question="q", answers="a", answer_separator="|")

A bad row (missing column, empty question, no answers) is an error naming the file, the line or row, and the
columns that exist, so the fix is obvious.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example, Task, register_task

_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def _records(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for messages, record) pairs."""
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CalibError(f"{path} line {number}: not valid JSON ({err.msg})") from err
                if not isinstance(record, dict):
                    raise CalibError(
                        f"{path} line {number}: expected a JSON object, got {type(record).__name__}"
                    )
                yield f"{path} line {number}", record
    elif fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CalibError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
        rows = data.get("data") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CalibError(f"{path}: expected a list of objects (or {{'data': [...]}})")
        for number, record in enumerate(rows, start=1):
            if not isinstance(record, dict):
                raise CalibError(f"{path} item {number}: expected an object, got {type(record).__name__}")
            yield f"{path} item {number}", record
    else:
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ",")
            for number, record in enumerate(reader, start=1):
                yield f"{path} row {number}", record


def _answers(value: Any, separator: str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    text = str(value)
    parts = text.split(separator) if separator else [text]
    return [p.strip() for p in parts if p.strip()]


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "y", "t")


def load_file(
    path: str | os.PathLike,
    question: str = "question",
    answers: str = "answers",
    id: str | None = None,
    context: str | None = None,
    category: str | None = None,
    open_ended: bool | str = False,
    grader: str | None = None,
    answer_separator: str | None = "|",
    format: str | None = None,
) -> Task:
    """A task from a JSONL/JSON/CSV/TSV file. open_ended is a flag for every row or the name of a column holding
    one per row; string answers are split on answer_separator (lists are used as they are)."""
    file = Path(path)
    if not file.is_file():
        raise CalibError(
            f"question file {str(file)!r} not found; pass path= to an existing .jsonl/.json/.csv file"
        )
    fmt = format or _FORMATS.get(file.suffix.lower())
    if fmt not in set(_FORMATS.values()):
        raise CalibError(
            f"cannot tell the format of {file.name!r}; pass format= one of jsonl, json, csv, tsv"
        )
    examples = []
    for where, record in _records(file, fmt):
        columns = ", ".join(record) or "(none)"
        for label, param, column in (("question", "question", question), ("answer", "answers", answers)):
            if column not in record:
                raise CalibError(
                    f"{where}: no {label} column {column!r} (columns: {columns}); pass {param}=<column name>"
                )
        text = str(record[question] or "").strip()
        if not text:
            raise CalibError(f"{where}: empty question in column {question!r}")
        valid = _answers(record[answers], answer_separator)
        if not valid:
            raise CalibError(f"{where}: no answers in column {answers!r}")
        for label, column in (("id", id), ("context", context), ("category", category)):
            if column is not None and column not in record:
                raise CalibError(f"{where}: no {label} column {column!r} (columns: {columns})")
        is_open = _truthy(record.get(open_ended)) if isinstance(open_ended, str) else bool(open_ended)
        meta: dict[str, Any] = {"source": str(file)}
        if grader:
            meta["grader"] = grader
        examples.append(
            Example(
                id=str(record[id]) if id else f"{file.stem}/{len(examples)}",
                question=text,
                answers=tuple(valid),
                open_ended=is_open,
                category=str(record[category]) if category else file.stem,
                context=str(record[context] or "") if context else "",
                metadata=meta,
            )
        )
    if not examples:
        raise CalibError(f"{file}: no questions in the file")
    return Task(name=file.stem, examples=tuple(examples), description=f"questions from {file}")


register_task(
    "jsonl", load_file, description="questions from your own JSONL/JSON file (question, answers columns)"
)
register_task(
    "csv", load_file, description="questions from your own CSV/TSV file (question, answers columns)"
)
