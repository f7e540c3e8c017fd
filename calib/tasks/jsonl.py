"""Users' own question files: JSONL, JSON or CSV/TSV with configurable question and answer columns.

    load_task("jsonl", path="my.jsonl")                                  # {"question": ..., "answers": [...]}
    load_task("csv", path="my.csv", question="q", answers="a", answer_separator="|")

A bad row (missing column, empty question, no answers) is an error naming the file, the line or row, and the
columns that exist, so the fix is obvious. Files are decoded strictly (UTF-8 unless encoding= says otherwise): a
byte that does not decode is an error with its line and byte offset, never a silently replaced character.

Ids: the `id` column when the file has one (every row then needs a unique id), else positional ids `<stem>/<n>`.
Positional ids shift when a line is inserted, so give a file its own ids to keep calibration/test splits stable.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example, Task, register_task

_LINES = re.compile(r"\r\n|\r|\n")  # universal newlines, as text-mode files split; not str.splitlines
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv"}


def _text(path: Path, encoding: str) -> str:
    """The whole file decoded strictly; a bad byte is an error with its line and byte offset and the fix."""
    try:
        codecs.lookup(encoding)
        data = path.read_bytes()
        text = data.decode(encoding)
    except LookupError as err:
        raise CalibError(
            f"unknown encoding {encoding!r} for {path} ({err}); set task.options.encoding to a text encoding "
            "such as utf-8, utf-8-sig, latin-1 or cp1252"
        ) from None
    except OSError as err:
        raise CalibError(f"cannot read question file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        # a codec may decode a tail of the bytes (utf-8-sig skips its BOM): err.start counts from that tail
        offset = err.start + (len(data) - len(err.object) if data.endswith(err.object) else 0)
        line = data.count(b"\n", 0, offset) + 1
        raise CalibError(
            f"{path} line {line}: byte 0x{data[offset]:02x} at byte offset {offset} is not valid {encoding} "
            f"({err.reason}); save the file as UTF-8, or set task.options.encoding to the file's encoding "
            "(e.g. task.options.encoding=latin-1)"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text  # a byte-order mark is not part of the data


def _records(path: Path, fmt: str, encoding: str = "utf-8") -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for messages, record) pairs."""
    text = _text(path, encoding)
    if fmt == "jsonl":
        for number, line in enumerate(_LINES.split(text), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CalibError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise CalibError(f"{path} line {number}: JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise CalibError(f"{path} line {number}: expected a JSON object, got {type(record).__name__}")
            yield f"{path} line {number}", record
    elif fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CalibError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        except RecursionError:
            raise CalibError(f"{path}: JSON nested too deeply") from None
        rows = data.get("data") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise CalibError(f"{path}: expected a list of objects (or {{'data': [...]}})")
        for number, record in enumerate(rows, start=1):
            if not isinstance(record, dict):
                raise CalibError(f"{path} item {number}: expected an object, got {type(record).__name__}")
            yield f"{path} item {number}", record
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",")
        try:
            for number, record in enumerate(reader, start=1):
                yield f"{path} row {number}", record
        except csv.Error as err:
            raise CalibError(f"{path} row {reader.line_num}: not valid {fmt.upper()} ({err})") from None


def _check_text(where: str, column: str, value: Any) -> None:
    """Refuse lone surrogates (valid JSON escapes like "\\ud800" that no encoder accepts): they would only fail
    later, inside the tokenizer, far from the line that holds them."""
    items = value if isinstance(value, list | tuple) else [value]
    for item in items:
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as err:
                raise CalibError(
                    f"{where}: column {column!r} holds a lone surrogate {item[err.start]!r} (an unpaired "
                    "\\uD800-\\uDFFF escape); write the character itself or its full surrogate pair"
                ) from None


def _id_value(where: str, column: str, value: Any) -> str:
    """An id cell as text: a non-empty string or an integer; anything else would make an ambiguous id."""
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise CalibError(
            f"{where}: id column {column!r} holds {value!r}; every row needs a non-empty string or integer id"
        )
    return str(value).strip()


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
    encoding: str = "utf-8",
) -> Task:
    """A task from a JSONL/JSON/CSV/TSV file. open_ended is a flag for every row or the name of a column holding
    one per row; string answers are split on answer_separator (lists are used as they are).

    id: the id column. By default the column "id" when the first row has it (then every row must), else positional
    ids "<stem>/<n>"; a named column must be in every row. Duplicate ids are refused with both lines."""
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
    examples: list[Example] = []
    seen: dict[str, str] = {}  # id -> where it first appeared
    id_column, explicit_id = (id, True) if id is not None else ("id", False)
    use_ids: bool | None = True if explicit_id else None  # decided by the first row when not named
    for where, record in _records(file, fmt, encoding):
        columns = ", ".join(str(k) for k in record if k is not None) or "(none)"
        for label, param, column in (("question", "question", question), ("answer", "answers", answers)):
            if column not in record:
                raise CalibError(
                    f"{where}: no {label} column {column!r} (columns: {columns}); pass {param}=<column name>"
                )
        for label, column in (("context", context), ("category", category)):
            if column is not None and column not in record:
                raise CalibError(f"{where}: no {label} column {column!r} (columns: {columns})")
        has_id = id_column in record and (explicit_id or record[id_column] is not None)
        if use_ids is None:
            use_ids = has_id
        if use_ids and not has_id:
            hint = "" if explicit_id else "; earlier rows have ids, so give every row one (or none)"
            raise CalibError(f"{where}: no id column {id_column!r} (columns: {columns}){hint}")
        if not use_ids and has_id:
            raise CalibError(
                f"{where}: has an id but the rows before it have none; give every row an {id_column!r} "
                "(or none, for positional ids)"
            )
        text = str(record[question] or "").strip()
        if not text:
            raise CalibError(f"{where}: empty question in column {question!r}")
        valid = _answers(record[answers], answer_separator)
        if not valid:
            raise CalibError(f"{where}: no answers in column {answers!r}")
        ex_id = _id_value(where, id_column, record[id_column]) if use_ids else f"{file.stem}/{len(examples)}"
        if ex_id in seen:
            raise CalibError(
                f"{where}: duplicate id {ex_id!r} (first at {seen[ex_id].removeprefix(f'{file} ')}); "
                "ids must be unique"
            )
        seen[ex_id] = where
        cat = str(record[category]) if category else file.stem
        ctx = str(record[context] or "") if context else ""
        for column, value in (
            (id_column, ex_id),
            (question, text),
            (answers, valid),
            (category, cat),
            (context, ctx),
        ):
            if column is not None and (column != id_column or use_ids):
                _check_text(where, column, value)
        is_open = _truthy(record.get(open_ended)) if isinstance(open_ended, str) else bool(open_ended)
        meta: dict[str, Any] = {"source": str(file)}
        if grader:
            meta["grader"] = grader
        examples.append(
            Example(
                id=ex_id,
                question=text,
                answers=tuple(valid),
                open_ended=is_open,
                category=cat,
                context=ctx,
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
