"""Questions for calibration-tuning (issue 22): a training pool of several thousand distinct questions and an
evaluation split that no training run sees.

The evaluation split is a fixed half (by a hash of the id, seed 0) of the built-in 'closed' and 'open_ended' suites,
with their ids and texts unchanged, so results on it sit next to every other study's. The training pool is the other
half of those suites plus questions generated here: more arithmetic word problems (other seeds), direct arithmetic
("What is 37 + 48?"), reverse capitals ("Which country has the capital Lima?") and element neighbours ("Which element
comes right after carbon?"). Every generated id has its own prefix ("tune_..."), so no registered task changes.

`check_disjoint` is the one guard: training and evaluation questions share no id and no question text. The training
builders call it, and the trainers call it again on the ids they actually read.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from calib.errors import CalibError
from calib.tasks.arithmetic import word_problems
from calib.tasks.base import Example, Task, _order_key
from calib.tasks.countries import load_countries
from calib.tasks.elements import load_elements
from calib.tasks.normalize import normalize_answer

EVAL_SEED = (
    0  # the evaluation split is fixed: changing it would let a training run see old evaluation questions
)
EVAL_FRACTION = 0.5
WORD_PROBLEM_SEEDS = range(1, 9)  # seed 0 makes the built-in 'arithmetic' questions; these are new ones
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
_OP_WORDS = {"+": "plus", "-": "minus", "*": "times"}


def _builtin(kind: str) -> list[Example]:
    from calib.tasks.suites import closed, open_ended

    return list((closed() if kind == "closed" else open_ended()).examples)


def _is_eval(example_id: str) -> bool:
    """The fixed split rule: an id is in the evaluation half iff its seeded hash ranks it there."""
    return _order_key(EVAL_SEED, "tuning-eval\x00" + example_id)[0] < int(256 * EVAL_FRACTION)


def evaluation_examples(kind: str = "all") -> list[Example]:
    """The evaluation split: closed, open_ended or all, each half of its built-in suite (~500 + ~280 questions)."""
    if kind not in ("closed", "open_ended", "all"):
        raise CalibError(f"tuning_eval: kind {kind!r} is not 'closed', 'open_ended' or 'all'")
    kinds = ("closed", "open_ended") if kind == "all" else (kind,)
    return [ex for k in kinds for ex in _builtin(k) if _is_eval(ex.id)]


def number_facts(n: int, seed: int = 0) -> list[Example]:
    """'What is 37 plus 48?': two-operand arithmetic with one whole-number answer, drawn from the seed."""
    rng = random.Random(f"tune_number:{seed}")
    out: dict[str, Example] = {}
    while len(out) < n:
        op = rng.choice(tuple(_OPS))
        a, b = (
            (rng.randint(2, 30), rng.randint(2, 30))
            if op == "*"
            else (rng.randint(10, 999), rng.randint(10, 999))
        )
        if op == "-" and b > a:
            a, b = b, a
        key = f"tune_number/{a}{op}{b}"
        if key in out:
            continue
        value = str(_OPS[op](a, b))
        out[key] = Example(
            id=key,
            question=f"What is {a} {_OP_WORDS[op]} {b}?",
            answers=(value,),
            category="tune_number",
            metadata={"answer_groups": ((value,),), "grader": "numeric"},
        )
    return list(out.values())


def reverse_capitals() -> list[Example]:
    """'Which country has the capital Lima?' (countryinfo; a capital shared by name with another country is skipped)."""
    countries = [c for c in load_countries().values() if c.capital]
    owners: dict[str, int] = {}
    for c in countries:
        owners[normalize_answer(c.capital)] = owners.get(normalize_answer(c.capital), 0) + 1
    return [
        Example(
            id=f"tune_country_of_capital/{c.code}",
            question=f"Which country has the capital {c.capital}?",
            answers=c.aliases,
            category="tune_country_of_capital",
            metadata={"answer_groups": (tuple(c.aliases),), "entity": c.code},
        )
        for c in countries
        if owners[normalize_answer(c.capital)] == 1
    ]


def element_neighbours() -> list[Example]:
    """'Which chemical element comes right after carbon in the periodic table?' and '... right before ...'."""
    elements = load_elements()
    out = []
    for i, e in enumerate(elements):
        for where, j in (("after", i + 1), ("before", i - 1)):
            if 0 <= j < len(elements):
                other = elements[j]
                out.append(
                    Example(
                        id=f"tune_element_{where}/{e.number}",
                        question=f"Which chemical element comes right {where} {e.name.lower()} in the periodic table?",
                        answers=other.aliases,
                        category=f"tune_element_{where}",
                        metadata={"answer_groups": (tuple(other.aliases),), "entity": other.symbol},
                    )
                )
    return out


def more_word_problems(per_seed: int = 200) -> list[Example]:
    """Arithmetic word problems from seeds other than the built-in task's 0, re-id'd as tune_arithmetic/<seed>/<i>."""
    out = []
    for seed in WORD_PROBLEM_SEEDS:
        for ex in word_problems(per_seed, seed):
            out.append(
                Example(
                    id="tune_" + ex.id,
                    question=ex.question,
                    answers=ex.answers,
                    category="tune_arithmetic",
                    metadata=dict(ex.metadata),
                )
            )
    return out


def check_disjoint(train: Iterable[Example], evaluation: Iterable[Example]) -> None:
    """Raise when a training question is an evaluation question (same id or same normalised text)."""
    eval_list = list(evaluation)
    ids = {ex.id for ex in eval_list}
    texts = {normalize_answer(ex.question) for ex in eval_list}
    for ex in train:
        if ex.id in ids or normalize_answer(ex.question) in texts:
            raise CalibError(
                f"training question {ex.id!r} is also in the evaluation split; drop it from the training pool "
                "(calib.tasks.tuning.check_disjoint)"
            )


def check_disjoint_ids(train_ids: Sequence[str], eval_ids: Sequence[str]) -> None:
    """The same guard on bare ids (what a trained artifact records)."""
    shared = sorted(set(train_ids) & set(eval_ids))
    if shared:
        raise CalibError(
            f"{len(shared)} training ids are evaluation ids (first {shared[0]!r}); train on tuning_train only"
        )


def training_examples(n: int = 4000, seed: int = 0) -> list[Example]:
    """The first n questions of the training pool in a seeded order that mixes every category."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CalibError(f"tuning_train: n must be a positive integer, got {n!r}")
    evaluation = evaluation_examples("all")
    eval_texts = {normalize_answer(ex.question) for ex in evaluation}
    builtin = [ex for k in ("closed", "open_ended") for ex in _builtin(k) if not _is_eval(ex.id)]
    generated = [*reverse_capitals(), *element_neighbours(), *more_word_problems(), *number_facts(1600)]
    pool, seen = [], set(eval_texts)
    for ex in builtin + generated:
        text = normalize_answer(ex.question)
        if text in seen:
            continue  # the same question under another id (word problems of two seeds can coincide)
        seen.add(text)
        pool.append(ex)
    if n > len(pool):
        raise CalibError(f"tuning_train: n={n} but the training pool holds {len(pool)} distinct questions")
    pool.sort(key=lambda ex: _order_key(seed, ex.id))
    chosen = pool[:n]
    check_disjoint(chosen, evaluation)
    return chosen


def tuning_train(n: int = 4000, seed: int = 0) -> Task:
    """Training pool for calibration-tuning: n distinct questions disjoint from tuning_eval (ids and texts)."""
    return Task("tuning_train", tuple(training_examples(n, seed)))


def tuning_eval(kind: str = "all") -> Task:
    """Evaluation split for calibration-tuning: a fixed half of the closed and open-ended suites, never trained on."""
    return Task("tuning_eval", tuple(evaluation_examples(kind)))
