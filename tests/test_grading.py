"""Graders over tricky answers: articles, case, punctuation, abbreviations, numbers, containment, explanations."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from calib.errors import CalibError
from calib.tasks import Example, grade, grade_detail
from calib.tasks.judge import LLMJudge, NLIJudge
from calib.tasks.normalize import normalize_answer, parse_number, token_f1

CANBERRA = Example("t/aus", "What is the capital of Australia?", ("Canberra",))
DC = Example("t/usa", "What is the capital of the United States?", ("Washington D.C.",))
HAGUE = Example("t/nl", "Where is the International Court of Justice?", ("The Hague",))
THOUSAND = Example("t/n", "How many metres are in a kilometre?", ("1000",), metadata={"grader": "numeric"})
NEIGHBOUR = Example(
    "t/de",
    "Name a country that borders Germany.",
    ("France", "French Republic", "Poland", "Netherlands", "Holland"),
    open_ended=True,
    metadata={"answer_groups": (("France", "French Republic"), ("Poland",), ("Netherlands", "Holland"))},
)


@pytest.mark.parametrize(
    "answer",
    ["Canberra", "canberra", "CANBERRA.", "'Canberra'", "Canberra!!", "  Canberra \n", "the Canberra"],
)
def test_case_punctuation_and_articles(answer):
    assert grade(CANBERRA, answer) == 1.0


@pytest.mark.parametrize("answer", ["Hague", "the hague", "The Hague.", "THE HAGUE"])
def test_article_in_the_reference(answer):
    assert grade(HAGUE, answer) == 1.0


@pytest.mark.parametrize(
    "answer", ["Washington, D.C.", "Washington DC", "washington d.c", "Washington D. C."]
)
def test_abbreviation_punctuation(answer):
    assert grade(DC, answer) == 1.0


def test_wrong_answers_are_wrong_with_a_soft_score():
    assert grade(CANBERRA, "Sydney") == 0.0
    assert grade(CANBERRA, "") == 0.0
    detail = grade_detail(Example("t/in", "Capital of India?", ("New Delhi",)), "Delhi")
    assert detail.correct == 0.0 and detail.score == pytest.approx(2 / 3)  # F1: p=1, r=1/2
    assert 0.0 <= grade_detail(DC, "Washington state").score < 1.0


def test_containment_on_and_off():
    assert grade(CANBERRA, "Canberra, in the ACT") == 0.0
    assert grade(CANBERRA, "Canberra, in the ACT", containment=True) == 1.0
    assert grade(CANBERRA, "Canberra, Australia") == 1.0  # the rest only repeats the question
    assert grade(CANBERRA, "It is Sydney, not Canberra's rival", containment=False) == 0.0
    assert grade(CANBERRA, "Melbourne, Australia", containment=True) == 0.0


@pytest.mark.parametrize(
    "answer",
    [
        "Canberra. It has been the capital since 1913.",
        "Canberra, because it was a compromise between Sydney and Melbourne.",
        "Canberra (since 1913)",
        "Canberra - chosen in 1908",
        "Canberra\nExplanation: the capital is not Sydney.",
        "The capital of Australia is Canberra.",
        "Canberra is the capital.",
    ],
)
def test_answers_with_trailing_explanation(answer):
    assert grade(CANBERRA, answer) == 1.0


@pytest.mark.parametrize(
    "answer", ["1000", "1,000", "1,000.", "1000 metres", "$1,000.00", "It is 1,000 m", "1e3"]
)
def test_numeric_with_separators(answer):
    assert grade(THOUSAND, answer) == 1.0


def test_numeric_tolerance_and_wrong_numbers():
    pi = Example("t/pi", "Pi to four decimals?", ("3.1416",), metadata={"grader": "numeric"})
    assert grade(pi, "3.14159") == 0.0
    assert grade(pi, "3.14159", rel_tol=1e-4) == 1.0
    assert grade(THOUSAND, "100") == 0.0 and grade(THOUSAND, "no idea") == 0.0
    assert grade(THOUSAND, "1,001") == 0.0
    assert grade(Example("t/neg", "5 - 8?", ("-3",), metadata={"grader": "numeric"}), "-3") == 1.0
    assert grade(Example("t/w", "How many?", ("12",), metadata={"grader": "numeric"}), "twelve") == 1.0
    assert parse_number("12 + 30 = 42") == 42.0  # the number after '=' is the result
    assert parse_number("Step 1: 12 apples. Step 2: 30 more.\n#### 42") == 42.0
    assert parse_number("3 boxes of 4, so 12", pick="last") == 12.0


# ---- hard cases: what a reviewer reading the answer would decide -----------------------------------------------

AT = Example("t/at", "What is the name of the symbol @ in email addresses?", ("at sign", "at symbol"))
MOONS = Example("t/moon", "How many moons does the Earth have?", ("one",))
PLANET = Example("t/earth", "Counting from the Sun, which planet is the Earth?", ("3rd",))
HARD_CASES = [
    # (example, answer, correct): disowned or hedged answers are wrong
    (CANBERRA, "Canberra is wrong", 0),
    (CANBERRA, "Canberra, Australia", 1),  # the rest only repeats the question
    (CANBERRA, "Canberra, Sydney", 0),
    (CANBERRA, "Sydney, Australia", 0),
    (CANBERRA, "Sydney. Canberra is a common mistake", 0),
    (CANBERRA, "Canberra is a common mistake", 0),
    (CANBERRA, "Canberra is incorrect.", 0),
    (CANBERRA, "Canberra is not the capital", 0),
    (CANBERRA, "Canberra isn't the capital", 0),
    (CANBERRA, "Canberra (wrong)", 0),
    (CANBERRA, "not Canberra", 0),
    (CANBERRA, "The capital is not Canberra", 0),
    (CANBERRA, "Sydney is the capital, not Canberra", 0),
    (CANBERRA, "The answer is Sydney, not Canberra", 0),
    (CANBERRA, "Sydney or Canberra", 0),
    (CANBERRA, "Canberra or Sydney", 0),
    (CANBERRA, "Either Canberra or Sydney", 0),
    (CANBERRA, "Canberra (or Sydney)", 0),
    (CANBERRA, "Canberra/Sydney", 0),
    (CANBERRA, "Canberra. Or maybe Sydney.", 0),
    (CANBERRA, "Canberra. No, wait, Sydney.", 0),
    (CANBERRA, "Canberra is a beautiful city", 0),  # says something about Canberra, answers nothing
    (AT, "The at symbol is a common punctuation mark", 0),
    # plain answers and the ways models phrase them stay right
    (CANBERRA, "Canberra", 1),
    (CANBERRA, "Canberra.", 1),
    (CANBERRA, "**Canberra**", 1),
    (CANBERRA, "The answer is: Canberra", 1),
    (CANBERRA, "The answer is Canberra", 1),
    (CANBERRA, "Answer: Canberra", 1),
    (CANBERRA, "A: Canberra", 1),
    (CANBERRA, "My final answer is Canberra.", 1),
    (CANBERRA, "It's Canberra", 1),
    (CANBERRA, "It is Canberra.", 1),
    (CANBERRA, "I think it's Canberra.", 1),
    (CANBERRA, "That would be Canberra.", 1),
    (CANBERRA, "The capital is Canberra.", 1),
    (CANBERRA, "The capital city of Australia is Canberra.", 1),
    (CANBERRA, "Capital of Australia: Canberra", 1),
    (CANBERRA, "Canberra is the answer", 1),
    (CANBERRA, "Canberra is correct", 1),
    (CANBERRA, "Canberra is a city in Australia", 1),
    (CANBERRA, "Canberra, not Sydney", 1),
    (CANBERRA, "Canberra (not Sydney)", 1),
    (CANBERRA, "Canberra, but I'm not sure", 1),
    (CANBERRA, "Canberra: the capital since 1913", 1),
    (AT, "The at symbol", 1),
    (AT, "It's known as the at sign.", 1),
    # numbers across digits and words
    (MOONS, "1", 1),
    (MOONS, "One.", 1),
    (MOONS, "The answer is one", 1),
    (MOONS, "The answer is: one", 1),
    (MOONS, "The answer is: 1", 1),
    (MOONS, "2", 0),
    (MOONS, "one or two", 0),
    (PLANET, "third", 1),
    (PLANET, "The third planet", 0),
    (PLANET, "3", 0),  # a count is not a rank
]


@pytest.mark.parametrize(("ex", "answer", "correct"), HARD_CASES, ids=[a for _, a, _ in HARD_CASES])
def test_hard_cases(ex, answer, correct):
    assert grade(ex, answer) == correct


def test_containment_does_not_accept_disowned_or_hedged_answers():
    assert grade(CANBERRA, "Canberra, Australia", containment=True) == 1.0
    assert grade(CANBERRA, "The capital is Canberra, Australia.", containment=True) == 1.0
    for answer in ["Sydney. Canberra is a common mistake", "Sydney or Canberra", "not Canberra in the ACT"]:
        assert grade(CANBERRA, answer, containment=True) == 0.0, answer


def test_matched_is_the_alias_that_matched():
    ex = Example("t/uk", "Capital of the UK?", ("London", "Londinium", "Greater London"))
    detail = grade_detail(ex, "It's Greater London")
    assert (detail.matched, detail.entity) == ("Greater London", "London")
    number = grade_detail(MOONS, "1")
    assert number.correct == 1.0 and number.matched == "one"
    numeric = Example("t/n", "How many?", ("12", "twelve"), metadata={"grader": "numeric"})
    assert grade_detail(numeric, "twelve").matched == "12"  # the first alias equal to the number


def test_number_words():
    from calib.tasks.normalize import number_value, words_to_number

    assert words_to_number("one hundred and twenty-three") == 123
    assert words_to_number("a thousand") == 1000
    assert words_to_number("two million three hundred thousand") == 2_300_000
    assert words_to_number("ninety-nine") == 99 and words_to_number("zero") == 0
    for not_a_number in ["five five", "twenty ten", "one hundred hundred", "Canberra", "", "one direction"]:
        assert words_to_number(not_a_number) is None, not_a_number
    assert number_value("1,000") == number_value("one thousand") == (1000.0, False)
    assert number_value("21st") == number_value("twenty-first") == (21.0, True)
    assert number_value("third") == (3.0, True) and number_value("3") == (3.0, False)
    assert parse_number("one hundred and five apples") == 105.0
    assert parse_number("three thousand") == 3000.0


def test_exact_match_also_compares_numbers_as_text():
    assert grade(Example("t/x", "Year?", ("1,000",)), "1000") == 1.0  # SQuAD drops the comma


def test_set_membership_for_open_ended():
    france = grade_detail(NEIGHBOUR, "France")
    assert france.correct == 1.0 and france.matched == "France" and france.method == "set"
    holland = grade_detail(NEIGHBOUR, "Holland")
    assert holland.matched == "Holland" and holland.entity == "Netherlands"  # the alias, and its entity
    assert grade(NEIGHBOUR, "the Netherlands.") == 1.0
    assert grade(NEIGHBOUR, "Spain") == 0.0
    assert grade(NEIGHBOUR, "Spain and France") == 0.0
    assert grade(NEIGHBOUR, "Spain and France", containment=True) == 0.0  # two guesses, one of them wrong
    assert grade(NEIGHBOUR, "France, in Europe", containment=True) == 1.0


def test_f1_method_threshold():
    ex = Example("t/f1", "Who wrote Hamlet?", ("William Shakespeare",))
    assert grade(ex, "Shakespeare") == 0.0  # exact match
    detail = grade_detail(ex, "Shakespeare", method="f1")
    assert detail.correct == 1.0 and detail.score == pytest.approx(2 / 3)
    assert grade(ex, "Shakespeare", method="f1", f1_threshold=0.8) == 0.0


MC = Example(
    "t/mc",
    "Capital of France?\nA. Lyon\nB. Paris\nC. Nice\nD. Lille",
    ("B", "Paris"),
    metadata={"grader": "choice", "choices": ("Lyon", "Paris", "Nice", "Lille")},
)


@pytest.mark.parametrize("answer", ["B", "(B)", "B.", "B. Paris", "b", "The answer is B", "Paris"])
def test_choice_right(answer):
    assert grade(MC, answer) == 1.0


@pytest.mark.parametrize("answer", ["A", "C. Nice", "Lyon", "E", "I don't know"])
def test_choice_wrong(answer):
    assert grade(MC, answer) == 0.0


def test_judges():
    seen = []

    def fake_llm(prompt: str) -> str:
        seen.append(prompt)
        return " Yes, it matches." if "Canberra" in prompt.split("Proposed answer:")[1] else "No."

    judge = LLMJudge(fake_llm)
    assert grade_detail(CANBERRA, "the city of Canberra", method="judge", judge=judge).correct == 1.0
    assert grade(CANBERRA, "Sydney", method="judge", judge=judge) == 0.0
    assert "Reference answers: Canberra" in seen[0]
    assert grade_detail(CANBERRA, "x", method="judge", judge=LLMJudge(lambda p: 0.3)).score == 0.3
    with pytest.raises(CalibError, match="not yes/no"):
        grade(CANBERRA, "x", method="judge", judge=LLMJudge(lambda p: "maybe"))
    with pytest.raises(CalibError, match="needs judge"):
        grade(CANBERRA, "x", method="judge")
    with pytest.raises(CalibError, match=r"\[0, 1\]"):
        grade(CANBERRA, "x", method="judge", judge=lambda q, a, r: 3.0)


class _FakeNLI:
    """Entailment when the hypothesis' last word is in the premise (labels in MNLI order)."""

    config = SimpleNamespace(
        id2label={0: "contradiction", 1: "entailment", 2: "neutral"}
    )  # as CrossEncoder.config

    def predict(self, pairs, apply_softmax=True):
        assert apply_softmax
        return [[0.1, 0.8, 0.1] if b.split()[-1] in a else [0.7, 0.1, 0.2] for a, b in pairs]


def test_nli_judge_bidirectional():
    judge = NLIJudge(_FakeNLI())
    assert judge.entailment_index == 1
    assert judge("Q?", "Canberra", ["Canberra"]) == pytest.approx(0.8)
    assert judge("Q?", "Sydney", ["Canberra"]) == pytest.approx(0.1)
    assert grade(CANBERRA, "Canberra", method="judge", judge=judge) == 1.0
    with pytest.raises(CalibError, match="entailment"):
        NLIJudge(SimpleNamespace(config=SimpleNamespace(id2label={0: "yes", 1: "no"})))


def test_unknown_method():
    with pytest.raises(CalibError, match=r"unknown grading method 'regex'; methods: exact, set"):
        grade(CANBERRA, "Canberra", method="regex")


def test_normalisation_and_f1_match_torchmetrics_squad():
    """Exact match and token F1 agree with torchmetrics' SQuAD implementation on ASCII text."""
    from torchmetrics.functional.text import squad

    pairs = [
        ("The Washington, D.C.", "washington dc"),
        ("the cat sat", "cat sat on the mat"),
        ("An apple a day", "apple day"),
        ("Paris", "paris"),
        ("New York City", "York"),
        ("", "anything"),
        ("1,000 metres", "1000 metres"),
    ]
    for pred, ref in pairs:
        expected = squad(
            [{"prediction_text": pred, "id": "0"}],
            [{"answers": {"answer_start": [0], "text": [ref]}, "id": "0"}],
        )
        assert token_f1(pred, ref) * 100 == pytest.approx(float(expected["f1"]), abs=1e-4), (pred, ref)
        assert float(normalize_answer(pred) == normalize_answer(ref)) * 100 == float(expected["exact_match"])
    assert normalize_answer("Brasília") == normalize_answer("Brasilia")  # accent folding (ours, not SQuAD's)


def test_nli_judge_with_a_tiny_real_cross_encoder(tmp_path, monkeypatch):
    """NLIJudge('path') loads a sentence-transformers CrossEncoder; its score equals bidirectional entailment
    computed directly with the transformers model."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "capital",
        "?",
        "canberra",
        "sydney",
        "of",
        "australia",
    ]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    tokenizer = BertTokenizerFast(str(tmp_path / "vocab.txt"))
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=64, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "nli")
    tokenizer.save_pretrained(tmp_path / "nli")

    judge = NLIJudge(str(tmp_path / "nli"))
    assert judge.entailment_index == 1
    question, refs = "capital of australia ?", ["canberra", "sydney"]
    score = judge(question, "canberra", refs)

    def entail(premise: str, hypothesis: str) -> float:
        batch = tokenizer(premise, hypothesis, return_tensors="pt")
        with torch.no_grad():
            return float(torch.softmax(model(**batch).logits, dim=-1)[0, 1])

    ans = f"{question} canberra"
    expected = max(min(entail(f"{question} {r}", ans), entail(ans, f"{question} {r}")) for r in refs)
    assert 0.0 <= score <= 1.0 and score == pytest.approx(expected, abs=1e-5)
    direct = judge(CANBERRA.question, "canberra", CANBERRA.answers)
    graded = grade_detail(CANBERRA, "canberra", method="judge", judge=judge)
    assert graded.score == pytest.approx(direct, abs=1e-9) and graded.correct == float(direct >= 0.5)
