"""Hub loaders on small local files written in each dataset's own hub schema (no network)."""

from __future__ import annotations

import json

import pytest

from calib.errors import CalibError
from calib.tasks import grade, load_task

pytest.importorskip("datasets", reason="hub loaders need the `datasets` package (dev extra)")

FIXTURES = {
    "triviaqa": [
        {
            "question": "Which Lloyd Webber musical premiered in the US on 10th December 1993?",
            "question_id": "tc_33",
            "question_source": "http://www.quiz-zone.co.uk/",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {
                "description": [],
                "filename": [],
                "rank": [],
                "title": [],
                "url": [],
                "search_context": [],
            },
            "answer": {
                "aliases": ["Sunset Blvd", "Sunset Boulevard", "Sunset Bulevard"],
                "normalized_aliases": ["sunset blvd", "sunset boulevard", "sunset bulevard"],
                "matched_wiki_entity_name": "",
                "normalized_matched_wiki_entity_name": "",
                "normalized_value": "sunset boulevard",
                "type": "WikipediaEntity",
                "value": "Sunset Boulevard",
            },
        },
        {
            "question": "Who was the man behind The Chipmunks?",
            "question_id": "tc_40",
            "question_source": "http://www.quiz-zone.co.uk/",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {
                "description": [],
                "filename": [],
                "rank": [],
                "title": [],
                "url": [],
                "search_context": [],
            },
            "answer": {
                "aliases": ["David Seville"],
                "normalized_aliases": ["david seville"],
                "matched_wiki_entity_name": "",
                "normalized_matched_wiki_entity_name": "",
                "normalized_value": "david seville",
                "type": "WikipediaEntity",
                "value": "David Seville",
            },
        },
    ],
    "nq_open": [
        {"question": "where is the world's largest ice sheet located today", "answer": ["Antarctica"]},
        {"question": "who sang never gonna give you up", "answer": ["Rick Astley", "Richard Paul Astley"]},
    ],
    "squad": [
        {
            "id": "56be4db0acb8001400a502ec",
            "title": "Super_Bowl_50",
            "context": "Super Bowl 50 was played at Levi's Stadium in Santa Clara, California.",
            "question": "Where was Super Bowl 50 played?",
            "answers": {
                "text": ["Levi's Stadium", "Levi's Stadium", "Santa Clara"],
                "answer_start": [28, 28, 47],
            },
        }
    ],
    "coqa": [
        {
            "source": "mctest",
            "story": "Once upon a time, in a barn near a farm house, there lived a little white kitten named Cotton.",
            "questions": ["What color was Cotton?", "Where did she live?", "Did she live alone?"],
            "answers": {
                "input_text": ["white", "in a barn", "no"],
                "answer_start": [59, 18, -1],
                "answer_end": [93, 80, -1],
            },
        }
    ],
    "truthfulqa": [
        {
            "type": "Adversarial",
            "category": "Misconceptions",
            "question": "What happens to you if you eat watermelon seeds?",
            "best_answer": "The watermelon seeds pass through your digestive system",
            "correct_answers": ["Nothing happens", "You eat watermelon seeds", "The seeds pass through you"],
            "incorrect_answers": ["You grow watermelons in your stomach", "You get sick"],
            "source": "https://wonderopolis.org/wonder/will-a-watermelon-grow-in-your-belly-if-you-swallow-a-seed",
        }
    ],
    "sciq": [
        {
            "question": "What type of organism is commonly used in preparation of foods such as cheese and yogurt?",
            "distractor3": "viruses",
            "distractor1": "protozoa",
            "distractor2": "gymnosperms",
            "correct_answer": "mesophilic organisms",
            "support": "Mesophiles grow best in moderate temperature.",
        }
    ],
    "gsm8k": [
        {
            "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
            "May. How many clips did Natalia sell altogether in April and May?",
            "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
            "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        },
        {
            "question": "A company pays 1,200 dollars a week. How much is that over 2 weeks?",
            "answer": "1,200 * 2 = 2,400\n#### 2,400",
        },
    ],
    "svamp": [
        {
            "ID": "chal-1",
            "Body": "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack",
            "Question": "How much do you have to pay to buy each pack?",
            "Equation": "( 76.0 - 25.0 )",
            "Answer": 51.0,
            "Type": "Subtraction",
            "question_concat": "Each pack of dvds costs 76 dollars. ... How much do you have to pay?",
        }
    ],
    "mmlu": [
        {
            "question": "Find the degree for the given field extension Q(sqrt(2), sqrt(3)) over Q.",
            "subject": "abstract_algebra",
            "choices": ["0", "4", "2", "6"],
            "answer": 1,
        }
    ],
}
# fmt: off
SPLITS = {"triviaqa": "validation", "nq_open": "validation", "squad": "validation", "coqa": "validation",
          "truthfulqa": "validation", "sciq": "test", "gsm8k": "test", "svamp": "test", "mmlu": "test"}
# fmt: on


def _write(tmp_path, name, rows, fmt="jsonl"):
    path = tmp_path / f"{name}.{fmt}"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _load(tmp_path, name, **options):
    files = _write(tmp_path, name, FIXTURES[name])
    return load_task(name, data_files=files, cache_dir=str(tmp_path / "cache"), shuffle=False, **options)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_triviaqa(tmp_path):
    task = _load(tmp_path, "triviaqa")
    assert task.ids == ["tc_33", "tc_40"]
    ex = task[0]
    assert ex.answers[0] == "Sunset Boulevard" and "Sunset Blvd" in ex.answers and not ex.open_ended
    assert grade(ex, "Sunset Blvd.") == 1.0 and grade(ex, "Cats") == 0.0


def test_triviaqa_test_split_without_answers_is_an_error(tmp_path):
    row = dict(FIXTURES["triviaqa"][0])
    row["answer"] = {**row["answer"], "aliases": [], "normalized_aliases": [], "value": "<unk>"}
    files = {"test": _write(tmp_path, "tqa_test", [row])}
    with pytest.raises(CalibError, match=r"tqa_test.jsonl test\[0\]: no answers; TriviaQA's test split"):
        load_task("triviaqa", split="test", data_files=files, cache_dir=str(tmp_path / "c"))


def test_nq_open(tmp_path):
    task = _load(tmp_path, "nq_open")
    assert task[0].question == "Where is the world's largest ice sheet located today?"
    assert task[1].answers == ("Rick Astley", "Richard Paul Astley")
    assert grade(task[1], "Rick Astley") == 1.0


def test_squad_keeps_context(tmp_path):
    ex = _load(tmp_path, "squad")[0]
    assert ex.id == "56be4db0acb8001400a502ec" and "Levi's Stadium" in ex.context
    assert ex.answers == ("Levi's Stadium", "Santa Clara")
    assert grade(ex, "Levis Stadium") == 1.0


def test_coqa_one_example_per_turn_with_history(tmp_path):
    task = _load(tmp_path, "coqa")
    assert [ex.question for ex in task] == FIXTURES["coqa"][0]["questions"]
    assert task[0].context == FIXTURES["coqa"][0]["story"]
    assert (
        "Q: What color was Cotton?\nA: white" in task[2].context and "Where did she live?" in task[2].context
    )
    assert task[2].answers == ("no",)
    assert _load(tmp_path, "coqa", history=False)[2].context == FIXTURES["coqa"][0]["story"]


def test_truthfulqa(tmp_path):
    ex = _load(tmp_path, "truthfulqa")[0]
    assert ex.answers[0].startswith("The watermelon seeds pass") and "Nothing happens" in ex.answers
    assert "You get sick" in ex.metadata["incorrect_answers"] and ex.metadata["grader"] == "f1"
    assert grade(ex, "Nothing happens.") == 1.0 and grade(ex, "You grow watermelons in your stomach") == 0.0


def test_sciq_with_and_without_support(tmp_path):
    ex = _load(tmp_path, "sciq")[0]
    assert ex.answers == ("mesophilic organisms",) and ex.context == ""
    assert set(ex.metadata["distractors"]) == {"viruses", "protozoa", "gymnosperms"}
    assert _load(tmp_path, "sciq", with_support=True)[0].context.startswith("Mesophiles")


def test_gsm8k_final_answer(tmp_path):
    task = _load(tmp_path, "gsm8k")
    assert [ex.answers for ex in task] == [("72",), ("2400",)]
    assert grade(task[0], "She sold 48/2 = 24 in May, so 48 + 24 = 72.") == 1.0  # last number
    assert grade(task[0], "The answer is 72") == 1.0 and grade(task[0], "24") == 0.0
    assert grade(task[1], "2,400") == 1.0


def test_svamp(tmp_path):
    ex = _load(tmp_path, "svamp")[0]
    assert ex.id == "svamp/chal-1" and ex.answers == ("51",)
    assert ex.question.endswith("on each pack. How much do you have to pay to buy each pack?")
    assert grade(ex, "51 dollars") == 1.0


def test_mmlu(tmp_path):
    ex = _load(tmp_path, "mmlu")[0]
    assert ex.question.endswith("A. 0\nB. 4\nC. 2\nD. 6") and ex.answers == ("B", "4")
    assert grade(ex, "B") == 1.0 and grade(ex, "(C)") == 0.0
    assert "letter" in ex.metadata["instruction"]


def test_path_to_local_file_and_folder(tmp_path):
    folder = tmp_path / "nq_copy"
    folder.mkdir()
    (folder / "validation.jsonl").write_text("\n".join(json.dumps(r) for r in FIXTURES["nq_open"]))
    by_file = load_task(
        "nq_open", path=str(folder / "validation.jsonl"), cache_dir=str(tmp_path / "c"), shuffle=False
    )
    by_dir = load_task("nq_open", path=str(folder), cache_dir=str(tmp_path / "c"), shuffle=False)
    assert by_file.ids == by_dir.ids and len(by_dir) == 2
    with pytest.raises(CalibError, match="unknown split 'dev'"):
        load_task("nq_open", path=str(folder), split="dev", cache_dir=str(tmp_path / "c"))


def test_missing_field_names_row_and_fields(tmp_path):
    rows = [dict(FIXTURES["squad"][0]), {k: v for k, v in FIXTURES["squad"][0].items() if k != "answers"}]
    rows[1]["answers"] = None
    files = _write(tmp_path, "squad_bad", [{k: v for k, v in rows[0].items() if k != "answers"}])
    with pytest.raises(
        CalibError, match=r"squad_bad.jsonl validation\[0\]: no field 'answers' \(fields: id, title"
    ):
        load_task("squad", data_files=files, cache_dir=str(tmp_path / "c"))


def test_empty_question_is_an_error(tmp_path):
    rows = [{"question": "  ", "answer": ["x"]}]
    with pytest.raises(CalibError, match=r"validation\[0\]: empty 'question'"):
        load_task("nq_open", data_files=_write(tmp_path, "nq_bad", rows), cache_dir=str(tmp_path / "c"))


def test_unknown_split_lists_given_splits(tmp_path):
    files = {"train": _write(tmp_path, "gsm_train", FIXTURES["gsm8k"])}
    with pytest.raises(CalibError, match=r"unknown split 'test' .*splits given in data_files: train"):
        load_task("gsm8k", data_files=files)


def test_every_loader_is_registered():
    from calib.tasks import list_tasks

    assert set(SPLITS) <= set(list_tasks())


def test_unreadable_source_is_one_line_error(tmp_path):
    missing = str(tmp_path / "no_such_copy")
    with pytest.raises(
        CalibError, match=r"could not load .*no_such_copy .*pass data_files=<local copy>"
    ) as info:
        load_task("squad", path=missing, cache_dir=str(tmp_path / "c"))
    assert "\n" not in str(info.value)
