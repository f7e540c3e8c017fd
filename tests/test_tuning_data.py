"""Calibration-tuning data: N = 4,000 distinct training questions, an evaluation split of >= 400, never overlapping."""

from __future__ import annotations

import pytest

from calib.errors import CalibError
from calib.tasks import load_task
from calib.tasks.base import Example
from calib.tasks.normalize import normalize_answer
from calib.tasks.suites import closed, open_ended
from calib.tasks.tuning import check_disjoint, check_disjoint_ids, evaluation_examples, training_examples


def test_pool_and_split_sizes_and_disjointness():
    train = load_task("tuning_train", n=4000)
    evaluation = load_task("tuning_eval")
    assert len(train) == 4000 and len({normalize_answer(e.question) for e in train}) == 4000
    assert len(evaluation) >= 400
    assert not set(train.ids) & set(evaluation.ids)
    assert not {normalize_answer(e.question) for e in train} & {
        normalize_answer(e.question) for e in evaluation
    }
    # the evaluation split is made of the built-in suites' own questions, unchanged
    builtin = {ex.id: ex for ex in (*closed(), *open_ended())}
    assert all(builtin[ex.id] == ex for ex in evaluation)


def test_smaller_budgets_are_prefixes_and_seeded():
    assert training_examples(250) == training_examples(4000)[:250]
    assert [e.id for e in training_examples(50, seed=1)] != [e.id for e in training_examples(50, seed=0)]


def test_a_leak_is_refused():
    evaluation = evaluation_examples("closed")
    leaked = [*training_examples(20), evaluation[3]]
    with pytest.raises(CalibError, match="also in the evaluation split"):
        check_disjoint(leaked, evaluation)
    # the same question under a new id is a leak too
    renamed = Example(id="tune_sneaky/1", question=evaluation[5].question, answers=evaluation[5].answers)
    with pytest.raises(CalibError, match="evaluation split"):
        check_disjoint([renamed], evaluation)
    with pytest.raises(CalibError, match="training ids are evaluation ids"):
        check_disjoint_ids([e.id for e in leaked], [e.id for e in evaluation])


def test_bad_options():
    with pytest.raises(CalibError, match="kind"):
        load_task("tuning_eval", kind="both")
    with pytest.raises(CalibError, match="pool holds"):
        training_examples(100_000)
