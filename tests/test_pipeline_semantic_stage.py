"""The semantic stage and the model-call store: what one run's estimators shared is reused by the next run.

Unit tests run a Bundle on fakes (counting backend and scorer); the pipeline tests run the tiny random model and
assert on the manifest and the store, not on timing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from calib.estimators import Bundle, get_estimator
from calib.estimators.synthetic import generations_from
from calib.pipeline import semantic_stage
from calib.pipeline.store import ArtifactStore
from calib.semantic import ExactMatch


@dataclass
class Example:
    question: str


class CountingExact(ExactMatch):
    """Exact match that counts how often it is asked."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def compare(self, questions, answers):
        self.calls += 1
        return super().compare(questions, answers)

    def pair_similarity(self, first, second):
        self.calls += 1
        return super().pair_similarity(first, second)


def fake_bundle(calls: list) -> Bundle:
    def score_fn(prompts, continuations):
        calls.append(len(prompts))
        return [
            np.array([math.log(0.6 if c == " (A)" else 0.4), -0.1 * len(p) / 100])
            for p, c in zip(prompts, continuations)
        ]

    samples = [["Paris", "Paris", "Lyon"], ["Bern", "Zurich", "Geneva"]]
    return Bundle(
        generations_from([["Paris"], ["Bern"]]),
        generations_from(samples, logprobs=[[[-0.5, -0.1]] * 3] * 2, token_ids=[[[1, 2]] * 3] * 2),
        [Example("capital of France?"), Example("capital of Switzerland?")],
        semantic=CountingExact(),
        score_fn=score_fn,
        generate_fn=lambda prompts, n: [f"0.{len(p) % 10}" for p in prompts],
        decode_fn=lambda ids: " ".join(f"w{int(i)}" for i in ids),
    )


def shared_for(store: ArtifactStore) -> semantic_stage.SharedStatistics:
    return semantic_stage.SharedStatistics(store, "sem0", {"x": 1}, "calls0", {"y": 2})


NAMES = ["multi_hypothesis", "sar", "token_sar", "semantic_entropy"]


def test_a_second_bundle_reads_every_shared_statistic_and_call_from_the_store(tmp_path):
    store = ArtifactStore(tmp_path)
    first_calls: list = []
    shared = shared_for(store)
    first = shared.attach(fake_bundle(first_calls))
    expected = {}
    for name in NAMES:
        expected[name] = get_estimator(name)(first).confidence
        shared.save(name)
    assert first.semantic.calls > 0 and first_calls
    assert shared.semantic_record()["computed"] == [
        "comparisons",
        "sample_token_relevance",
        "greedy_token_relevance",
    ]
    assert shared.calls_record()["new_calls"] == sum(first_calls)

    second_calls: list = []
    again = shared_for(store)
    second = again.attach(fake_bundle(second_calls))
    for name in NAMES:
        np.testing.assert_allclose(get_estimator(name)(second).confidence, expected[name])
        again.save(name)
    assert second.semantic.calls == 0 and second_calls == []  # nothing recomputed, no model call
    record = again.semantic_record()
    assert record["cached"] and sorted(record["reused"]) == sorted(semantic_stage.PARTS)
    assert again.calls_record() == {
        "key": "calls0",
        "cached": True,
        "stored_calls": sum(first_calls),
        "new_calls": 0,
    }
    np.testing.assert_array_equal(second.clusters, first.clusters)
    assert second.clusters.dtype == first.clusters.dtype


def test_the_call_store_grows_by_parts_and_is_read_as_their_union(tmp_path):
    store = ArtifactStore(tmp_path)
    shared = shared_for(store)
    bundle = shared.attach(fake_bundle([]))
    bundle.score(["a"], [" (A)"])
    shared.save("one")
    bundle.score(["a", "b"], [" (A)", " (B)"])  # one new pair
    bundle.generate(["c"], 4)
    shared.save("two")
    parts = [k for k in store.keys("calls") if k.startswith("calls0-")]
    assert len(parts) == 2
    assert sorted(store.meta("calls", k)["score"] for k in parts) == [1, 1]
    score, generate, _ = semantic_stage.load_calls(store, "calls0")
    assert set(score) == {("a", " (A)"), ("b", " (B)")} and list(generate) == [("c", 4)]


def test_a_damaged_part_is_set_aside_and_recomputed(tmp_path):
    store = ArtifactStore(tmp_path)
    shared = shared_for(store)
    bundle = shared.attach(fake_bundle([]))
    get_estimator("semantic_entropy")(bundle)
    shared.save("semantic_entropy")
    (store.path("semantic", "sem0-comparisons") / "arrays.safetensors").write_bytes(b"cut short")
    again = shared_for(store)
    second = again.attach(fake_bundle([]))
    assert again.reused == [] and (tmp_path / "damaged").is_dir()
    get_estimator("semantic_entropy")(second)
    again.save("semantic_entropy")
    assert second.semantic.calls == 1 and again.semantic_record()["computed"] == ["comparisons"]


def test_the_bundle_refuses_unknown_shared_statistics():
    from calib.errors import CalibError

    with pytest.raises(CalibError, match="not shared statistics"):
        fake_bundle([]).fill_shared_statistics(answer_similarity=np.zeros(1))


# ---- on a finished tiny run -------------------------------------------------------------------------------------
BASE = [
    "experiment=smoke",
    "task.limit=4",
    "estimators.semantic=exact",
    "metrics=quick",
    "report.figures=false",
    "progress=false",
]


def compose_run(artifacts, names):
    from calib.pipeline.config import compose

    return compose([*BASE, f"artifacts_dir={artifacts}", f"estimators.names=[{','.join(names)}]"])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from calib.pipeline import run

    root = tmp_path_factory.mktemp("semantic_stage")
    result = run(
        compose_run(root / "artifacts", ["semantic_entropy", "multi_hypothesis"]),
        root / "first",
        print_summary=False,
    )
    return root, result.manifest


def test_first_run_computes_and_records_the_semantic_stage(finished):
    root, manifest = finished
    semantic = manifest["stages"]["semantic"]
    assert not semantic["cached"] and semantic["computed"] == ["comparisons"] == semantic["parts"]
    calls = manifest["stages"]["calls"]
    assert calls["new_calls"] > 0 and calls["stored_calls"] == 0
    store = ArtifactStore(root / "artifacts")
    assert store.has("semantic", f"{semantic['key']}-comparisons")


def test_an_added_estimator_is_all_a_run_computes(finished, monkeypatch):
    import calib.decode
    from calib.pipeline import run

    root, first = finished
    scored = []
    real = calib.decode.score
    monkeypatch.setattr(
        calib.decode, "score", lambda lm, p, c, **kw: scored.append(len(p)) or real(lm, p, c, **kw)
    )
    names = ["semantic_entropy", "multi_hypothesis", "multi_hypothesis_valid_mass", "p_true"]
    manifest = run(compose_run(root / "artifacts", names), root / "added", print_summary=False).manifest
    stages = manifest["stages"]
    assert stages["estimate"]["computed"] == ["multi_hypothesis_valid_mass", "p_true"]
    assert stages["semantic"]["key"] == first["stages"]["semantic"]["key"]
    assert stages["semantic"]["cached"] and stages["semantic"]["reused"] == ["comparisons"]
    # P(True) of every cluster representative and of each greedy answer was asked by multi_hypothesis already
    assert stages["calls"]["cached"] and stages["calls"]["new_calls"] == 0 and scored == []
    assert stages["calls"]["stored_calls"] == first["stages"]["calls"]["new_calls"]


def test_an_unchanged_rerun_computes_nothing(finished):
    from calib.pipeline import run

    root, _ = finished
    artifacts = root / "artifacts"
    before = sorted(p for p in artifacts.rglob("*") if p.is_file())
    manifest = run(
        compose_run(artifacts, ["semantic_entropy", "multi_hypothesis"]), root / "again", print_summary=False
    ).manifest
    stages = manifest["stages"]
    assert stages["estimate"]["computed"] == [] and stages["estimate"]["cached"]
    assert stages["semantic"]["cached"] and stages["semantic"]["computed"] == []
    assert stages["calls"]["new_calls"] == 0
    assert sorted(p for p in artifacts.rglob("*") if p.is_file()) == before
