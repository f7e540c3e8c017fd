"""The generic file loader: users' own JSONL/JSON/CSV questions, and one-line errors for bad data."""

from __future__ import annotations

import json

import pytest

from calib.errors import CalibError
from calib.tasks import grade, load_task


def _jsonl(tmp_path, rows, name="mine.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_jsonl_with_default_columns(tmp_path):
    path = _jsonl(
        tmp_path,
        [
            {"question": "Name a primary colour.", "answers": ["red", "blue", "yellow"], "kind": "yes"},
            {"question": "Capital of Peru?", "answers": "Lima"},
        ],
    )
    task = load_task("jsonl", path=path, open_ended="kind", shuffle=False)
    assert task.ids == ["mine/0", "mine/1"] and task.name == "mine"
    assert task[0].open_ended and not task[1].open_ended
    assert task[0].answers == ("red", "blue", "yellow") and task[1].answers == ("Lima",)
    assert grade(task[0], "Blue.") == 1.0 and grade(task[1], "lima") == 1.0


def test_csv_with_custom_columns_and_separator(tmp_path):
    path = tmp_path / "quiz.csv"
    path.write_text(
        'qid,q,a,topic\nx1,"Largest ocean?","Pacific|Pacific Ocean",geo\nx2,Two plus two?,4,math\n'
    )
    task = load_task(
        "csv",
        path=str(path),
        question="q",
        answers="a",
        id="qid",
        category="topic",
        grader=None,
        shuffle=False,
    )
    assert task.ids == ["x1", "x2"] and task[0].answers == ("Pacific", "Pacific Ocean")
    assert task.categories == ["geo", "math"]
    numeric = load_task(
        "csv", path=str(path), question="q", answers="a", id="qid", grader="numeric", shuffle=False
    )
    assert grade(numeric[1], "four is 4") == 1.0


def test_json_list_and_context(tmp_path):
    path = tmp_path / "rc.json"
    path.write_text(json.dumps([{"question": "Who?", "answers": ["Ann"], "passage": "Ann wrote it."}]))
    ex = load_task("jsonl", path=str(path), context="passage")[0]
    assert ex.context == "Ann wrote it."


def test_missing_answer_column_names_row_and_columns(tmp_path):
    path = _jsonl(tmp_path, [{"question": "Q1?", "answers": ["a"]}, {"question": "Q2?", "answer": "b"}])
    with pytest.raises(CalibError) as info:
        load_task("jsonl", path=path)
    message = str(info.value)
    assert "mine.jsonl line 2: no answer column 'answers' (columns: question, answer)" in message
    assert "pass answers=<column name>" in message and "\n" not in message


def test_empty_question_names_the_row(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text("question,answers\nFine?,yes\n  ,no\n")
    with pytest.raises(CalibError, match=r"q.csv row 2: empty question in column 'question'"):
        load_task("csv", path=str(path))


def test_empty_answers_bad_json_missing_file(tmp_path):
    with pytest.raises(CalibError, match=r"line 1: no answers in column 'answers'"):
        load_task("jsonl", path=_jsonl(tmp_path, [{"question": "Q?", "answers": []}]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?", "answers": ["a"]}\n{not json\n')
    with pytest.raises(CalibError, match=r"bad.jsonl line 2: not valid JSON"):
        load_task("jsonl", path=str(bad))
    with pytest.raises(CalibError, match="not found"):
        load_task("jsonl", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(CalibError, match="no question column 'prompt'"):
        load_task("jsonl", path=_jsonl(tmp_path, [{"question": "Q?", "answers": ["a"]}]), question="prompt")
