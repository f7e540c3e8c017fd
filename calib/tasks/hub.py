"""Loaders for the QA benchmarks the calibration literature uses, read with Hugging Face `datasets`.

Each reads its dataset's own hub schema and split names. Offline, pass `data_files=` (a file, list of files, or
{split: files}) or `path=` (a local file or folder) in the same schema; `datasets` is imported only here, on use.

    load_task("triviaqa")                          # mandarjoshi/trivia_qa, rc.nocontext, validation
    load_task("gsm8k", data_files="test.jsonl")    # a local copy in GSM8K's schema
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from calib.errors import CalibError
from calib.tasks.base import Example, Task, register_task
from calib.tasks.normalize import format_number, parse_number

_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def _builder_of(files: Any) -> str:
    first = files if isinstance(files, str | os.PathLike) else next(iter(files))
    return _BUILDERS.get(Path(first).suffix.lower(), "json")


def load_rows(
    dataset: str, config: str | None, split: str, *, path: str | None, data_files: Any, cache_dir: str | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location for messages, row) for each row of one split, from the hub, a local folder, or local files."""
    try:
        import datasets
    except ImportError as err:
        raise CalibError("hub tasks need the `datasets` package; pip install 'calib[hub]'") from err
    if data_files is None and path is not None and Path(path).is_file():
        data_files = path
    files = (
        None if data_files is None else data_files if isinstance(data_files, dict) else {split: data_files}
    )
    source = str(data_files) if files is not None else (path or dataset)
    if files is not None and split not in files:
        raise CalibError(
            f"unknown split {split!r} for {source}; splits given in data_files: {', '.join(files)}"
        )
    label = source  # how rows are named in error messages: the file name, or the dataset
    if files is not None:
        chosen = files[split]
        label = Path(chosen if isinstance(chosen, str | os.PathLike) else next(iter(chosen))).name
    try:
        if files is not None:
            ds = datasets.load_dataset(
                _builder_of(files[split]), data_files=files, split=split, cache_dir=cache_dir
            )
        else:
            local_dir = path is not None and Path(path).is_dir()  # a saved copy: splits from its file names
            ds = datasets.load_dataset(
                path or dataset, None if local_dir else config, split=split, cache_dir=cache_dir
            )
    except ValueError as err:
        if "split" in str(err).lower():
            raise CalibError(f"unknown split {split!r} for {source}: {err}") from err
        raise CalibError(f"could not read {source}: {err}") from err
    except Exception as err:  # network, missing files, bad schema: one line that says what to do
        raise CalibError(
            f"could not load {source} ({type(err).__name__}: {err}); without the hub, pass data_files=<local copy>"
        ) from err
    for index, row in enumerate(ds):
        yield f"{label} {split}[{index}]", row


def _field(row: dict[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise CalibError(
            f"{where}: no field {key!r} (fields: {', '.join(row)}); is this the right dataset schema?"
        )
    return row[key]


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = _field(row, key, where)
    text = "" if value is None else str(value).strip()
    if not text:
        raise CalibError(f"{where}: empty {key!r}")
    return text


def _strings(values: Iterable[Any]) -> list[str]:
    return [str(v).strip() for v in values if v is not None and str(v).strip()]


def _need(answers: list[str], where: str, hint: str = "") -> tuple[str, ...]:
    if not answers:
        raise CalibError(f"{where}: no answers{'; ' + hint if hint else ''}")
    return tuple(dict.fromkeys(answers))


def _task(
    name: str,
    rows: Iterator[tuple[str, dict[str, Any]]],
    convert: Callable[[str, int, dict], Iterable[Example]],
) -> Task:
    examples = [ex for i, (where, row) in enumerate(rows) for ex in convert(where, i, row)]
    return Task(name=name, examples=tuple(examples))


def _as_question(text: str) -> str:
    """NQ-open questions are lower case without '?': 'who wrote hamlet' -> 'Who wrote hamlet?'."""
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith("?") else "?")


# --------------------------------------------------------------------------------------------------- loaders


@register_task("triviaqa")
def triviaqa(
    split: str = "validation", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """TriviaQA rc.nocontext (mandarjoshi/trivia_qa): closed-book trivia, answer.value plus answer.aliases."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        answer = _field(row, "answer", where) or {}
        value = str(answer.get("value") or "").strip()
        aliases = _strings([value if value != "<unk>" else None, *(answer.get("aliases") or [])])
        hint = "TriviaQA's test split has no public answers; use split='validation'"
        return [
            Example(
                id=str(row.get("question_id") or f"triviaqa/{split}/{i}"),
                question=_text(row, "question", where),
                answers=_need(aliases, where, hint),
                category="triviaqa",
                metadata={"source": "trivia_qa", "answer_type": answer.get("type")},
            )
        ]

    rows = load_rows(
        "mandarjoshi/trivia_qa", "rc.nocontext", split, path=path, data_files=data_files, cache_dir=cache_dir
    )
    return _task("triviaqa", rows, convert)


@register_task("nq_open")
def nq_open(
    split: str = "validation", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """Natural Questions open (google-research-datasets/nq_open): question plus a list of short answers."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        raw = _text(row, "question", where)
        return [
            Example(
                id=f"nq_open/{split}/{i}",
                question=_as_question(raw),
                answers=_need(_strings(_field(row, "answer", where) or []), where),
                category="nq_open",
                metadata={"source": "nq_open", "raw_question": raw},
            )
        ]

    rows = load_rows(
        "google-research-datasets/nq_open",
        "nq_open",
        split,
        path=path,
        data_files=data_files,
        cache_dir=cache_dir,
    )
    return _task("nq_open", rows, convert)


@register_task("squad")
def squad(
    split: str = "validation", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """SQuAD v1.1 (rajpurkar/squad): reading comprehension; the passage is the example's context."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        answers = _field(row, "answers", where) or {}
        return [
            Example(
                id=str(row.get("id") or f"squad/{split}/{i}"),
                question=_text(row, "question", where),
                answers=_need(_strings(answers.get("text") or []), where),
                category="squad",
                context=_text(row, "context", where),
                metadata={"source": "squad", "title": row.get("title")},
            )
        ]

    rows = load_rows("rajpurkar/squad", None, split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("squad", rows, convert)


@register_task("coqa")
def coqa(
    split: str = "validation",
    history: bool = True,
    path: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
) -> Task:
    """CoQA (stanfordnlp/coqa): one example per turn; context = story (+ the earlier turns when history=True)."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        story = _text(row, "story", where)
        questions = list(_field(row, "questions", where) or [])
        answers = list((_field(row, "answers", where) or {}).get("input_text") or [])
        if len(questions) != len(answers):
            raise CalibError(f"{where}: {len(questions)} questions but {len(answers)} answers.input_text")
        out, turns = [], []
        for t, (q, a) in enumerate(zip(questions, answers)):
            turn_where = f"{where} turn {t}"
            if not str(q or "").strip():
                raise CalibError(f"{turn_where}: empty question")
            context = story + ("\n\n" + "\n".join(turns) if history and turns else "")
            out.append(
                Example(
                    id=f"coqa/{split}/{i}/{t}",
                    question=str(q).strip(),
                    answers=_need(_strings([a]), turn_where),
                    category="coqa",
                    context=context,
                    metadata={"source": "coqa", "story_source": row.get("source"), "turn": t},
                )
            )
            turns.append(f"Q: {str(q).strip()}\nA: {str(a).strip()}")
        return out

    rows = load_rows("stanfordnlp/coqa", None, split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("coqa", rows, convert)


@register_task("truthfulqa")
def truthfulqa(
    split: str = "validation", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """TruthfulQA generation (truthfulqa/truthful_qa): best + correct answers; graded by token F1 by default
    (pass method='judge' with an NLI/LLM judge for the paper's protocol); incorrect answers in metadata."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        correct = _strings([row.get("best_answer"), *(_field(row, "correct_answers", where) or [])])
        return [
            Example(
                id=f"truthfulqa/{split}/{i}",
                question=_text(row, "question", where),
                answers=_need(correct, where),
                category="truthfulqa",
                metadata={
                    "source": "truthful_qa",
                    "grader": "f1",
                    "incorrect_answers": tuple(_strings(row.get("incorrect_answers") or [])),
                    "topic": row.get("category"),
                },
            )
        ]

    rows = load_rows(
        "truthfulqa/truthful_qa", "generation", split, path=path, data_files=data_files, cache_dir=cache_dir
    )
    return _task("truthfulqa", rows, convert)


@register_task("sciq")
def sciq(
    split: str = "test",
    with_support: bool = False,
    path: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
) -> Task:
    """SciQ (allenai/sciq): science questions, correct_answer; the support paragraph as context if asked."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        distractors = _strings(row.get(f"distractor{k}") for k in (1, 2, 3))
        return [
            Example(
                id=f"sciq/{split}/{i}",
                question=_text(row, "question", where),
                answers=(_text(row, "correct_answer", where),),
                category="sciq",
                context=str(row.get("support") or "").strip() if with_support else "",
                metadata={"source": "sciq", "distractors": tuple(distractors)},
            )
        ]

    rows = load_rows("allenai/sciq", None, split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("sciq", rows, convert)


def _numeric_example(name: str, ex_id: str, question: str, value: float, **meta: Any) -> Example:
    return Example(
        id=ex_id,
        question=question,
        answers=(format_number(value),),
        category=name,
        metadata={"source": name, "grader": "numeric", "numeric_pick": "last", **meta},
    )


@register_task("gsm8k")
def gsm8k(
    split: str = "test", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """GSM8K main (openai/gsm8k): grade-school maths; the number after '####' in the solution is the answer."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        solution = _text(row, "answer", where)
        if "####" not in solution:
            raise CalibError(f"{where}: answer has no '#### <number>' final line")
        value = parse_number(solution.rsplit("####", 1)[1])
        if value is None:
            raise CalibError(f"{where}: no number after '####' in the answer")
        question = _text(row, "question", where)
        return [_numeric_example("gsm8k", f"gsm8k/{split}/{i}", question, value, solution=solution)]

    rows = load_rows("openai/gsm8k", "main", split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("gsm8k", rows, convert)


@register_task("svamp")
def svamp(
    split: str = "test", path: str | None = None, data_files: Any = None, cache_dir: str | None = None
) -> Task:
    """SVAMP (ChilleD/SVAMP): Body + Question, numeric Answer."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        body, question = _text(row, "Body", where), _text(row, "Question", where)
        value = parse_number(str(_field(row, "Answer", where)))
        if value is None:
            raise CalibError(f"{where}: Answer {row.get('Answer')!r} is not a number")
        text = (
            f"{body.rstrip()} {question}"
            if body.rstrip().endswith((".", "!", "?"))
            else f"{body}. {question}"
        )
        ex_id = f"svamp/{row.get('ID') or f'{split}/{i}'}"
        return [
            _numeric_example("svamp", ex_id, text, value, equation=row.get("Equation"), type=row.get("Type"))
        ]

    rows = load_rows("ChilleD/SVAMP", None, split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("svamp", rows, convert)


@register_task("mmlu")
def mmlu(
    split: str = "test",
    subject: str = "all",
    path: str | None = None,
    data_files: Any = None,
    cache_dir: str | None = None,
) -> Task:
    """MMLU (cais/mmlu, config = subject or 'all'): four options in the question; answer is the letter."""

    def convert(where: str, i: int, row: dict) -> list[Example]:
        choices = _strings(_field(row, "choices", where) or [])
        if len(choices) < 2:
            raise CalibError(f"{where}: 'choices' needs at least two options, got {len(choices)}")
        letters = [chr(ord("A") + k) for k in range(len(choices))]
        answer = _field(row, "answer", where)
        index = (
            letters.index(answer.upper()) if isinstance(answer, str) and answer.upper() in letters else answer
        )
        if not isinstance(index, int) or not 0 <= index < len(choices):
            raise CalibError(f"{where}: answer {answer!r} is not an option index 0-{len(choices) - 1}")
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(letters, choices))
        topic = str(row.get("subject") or subject)
        return [
            Example(
                id=f"mmlu/{topic}/{split}/{i}",
                question=f"{_text(row, 'question', where)}\n{options}",
                answers=(letters[index], choices[index]),
                category="mmlu",
                metadata={
                    "source": "mmlu",
                    "subject": topic,
                    "choices": tuple(choices),
                    "grader": "choice",
                    "instruction": "Answer with the letter of the correct option only.",
                },
            )
        ]

    rows = load_rows("cais/mmlu", subject, split, path=path, data_files=data_files, cache_dir=cache_dir)
    return _task("mmlu", rows, convert)
