"""Estimator API: registry and plugins, need checking before work, result validation, bundle caching, docs example."""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from calib.errors import CalibError
from calib.estimators import (
    Bundle,
    EstimatorResult,
    Need,
    available_needs,
    check_needs,
    get_estimator,
    list_estimators,
    register_estimator,
)
from calib.estimators import registry as registry_module
from calib.estimators.synthetic import generations_from

DOCS = Path(__file__).resolve().parents[1] / "docs" / "estimators.md"

BUILTINS = {
    "msp", "mean_token_prob", "inverse_perplexity", "min_token_prob", "mean_token_entropy", "first_token_prob",
    "p_true", "p_true_brainstorm", "verbalized", "verbalized_linguistic", "self_consistency", "num_semantic_sets",
    "lexical_similarity", "semantic_entropy", "semantic_entropy_discrete", "eigv", "degree", "degree_answer",
    "eccentricity", "kle", "token_sar", "sentence_sar", "sar", "multi_hypothesis", "multi_hypothesis_valid_mass",
    "semantic_entropy_unique", "lexical_similarity_greedy", "lexical_similarity_rouge1", "lexical_similarity_bleu",
    "num_semantic_sets_greedy", "mc_sequence_entropy", "mc_normalized_sequence_entropy", "mean_pmi", "mean_cpmi",
    "p_true_sampling", "label_prob", "luq", "eigenscore",
}  # fmt: skip


@dataclass
class Example:
    question: str
    answers: tuple[str, ...] = ()
    open_ended: bool = False


@pytest.fixture
def isolated_registry(monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def test_every_registered_estimator_has_a_row_in_the_docs_table():
    """docs/estimators.md's built-in table names every estimator `calib list` prints (a row may name several)."""
    table = DOCS.read_text().split("## Built-in estimators", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([a-z0-9_]+)`", row.split(" | ")[0])}
    missing = sorted(set(list_estimators()) - documented)
    assert not missing, f"not in docs/estimators.md's built-in table: {missing}"


def test_every_builtin_is_listed_and_builds_with_its_name_and_needs():
    assert set(list_estimators()) >= BUILTINS
    for name in BUILTINS:
        estimator = get_estimator(name)
        assert estimator.name == name
        assert estimator.needs and all(isinstance(n, Need) for n in estimator.needs)


def test_parameters_reach_the_estimator_and_bad_ones_are_a_calib_error():
    assert get_estimator("semantic_entropy", weighted=False).name == "semantic_entropy_discrete"
    assert get_estimator("semantic_entropy", unique=True).name == "semantic_entropy_unique"
    assert get_estimator("lexical_similarity", metric="bleu").name == "lexical_similarity_bleu"
    assert get_estimator("p_true", brainstorm=3).needs >= {Need.SAMPLES, Need.SCORE}
    with pytest.raises(CalibError, match="'msp' rejected parameters"):
        get_estimator("msp", bogus=1)
    with pytest.raises(CalibError, match=r"unknown estimator 'nope'.*semantic_entropy"):
        get_estimator("nope")


def test_register_rejects_a_second_estimator_under_a_taken_name(isolated_registry):
    class Other:
        name = "msp"
        needs = frozenset({Need.GREEDY})

        def __call__(self, bundle):
            raise AssertionError("not called")

    with pytest.raises(CalibError, match="'msp' is already registered"):
        register_estimator(Other)
    register_estimator(Other, replace=True)
    assert isinstance(get_estimator("msp"), Other)


def test_a_plugin_is_found_through_the_entry_point_group(tmp_path, monkeypatch, isolated_registry):
    (tmp_path / "calib_demo_estimator_plugin.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from calib.estimators import EstimatorResult, Need

            class Constant:
                name = "demo_constant"
                needs = frozenset({Need.GREEDY})

                def __init__(self, value=0.25):
                    self.value = value

                def __call__(self, bundle):
                    c = np.full(bundle.num_questions, self.value)
                    return EstimatorResult(confidence=c, raw=c, higher_raw_means="confident")
            """
        )
    )
    dist = tmp_path / "calib_demo_estimator_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: calib-demo-estimator-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[calib.estimators]\ndemo_constant = calib_demo_estimator_plugin:Constant\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calib_demo_estimator_plugin", raising=False)

    assert "demo_constant" in list_estimators()
    estimator = get_estimator("demo_constant", value=0.5)
    bundle = Bundle(generations_from([["a"], ["b"]]))
    np.testing.assert_allclose(estimator(bundle).confidence, [0.5, 0.5])


def test_missing_needs_are_one_line_naming_estimator_and_need_before_any_work():
    needs = available_needs(num_samples=1, has_model=False)
    wanted = [get_estimator("msp"), get_estimator("semantic_entropy"), get_estimator("p_true")]
    with pytest.raises(CalibError) as info:
        check_needs(wanted, needs)
    message = str(info.value)
    assert "\n" not in message
    assert "estimator 'semantic_entropy' needs samples" in message
    assert "decoding.num_samples to 2 or more" in message
    assert "estimator 'p_true' needs p_true" in message
    assert "'msp'" not in message  # msp is satisfied
    check_needs([get_estimator("msp")], needs)  # no error
    check_needs(wanted, available_needs(num_samples=10, has_model=True))


def test_bundle_with_one_sample_lacks_samples_and_says_so():
    one = generations_from([["Paris"]])
    bundle = Bundle(one, samples=one, examples=[Example("Capital of France?")])
    assert Need.SAMPLES not in bundle.available()
    with pytest.raises(CalibError, match="'self_consistency' needs samples"):
        check_needs([get_estimator("self_consistency")], bundle.available())
    with pytest.raises(CalibError, match="bundle lacks samples"):
        _ = bundle.sample_texts


def test_bundle_rejects_mismatched_inputs():
    greedy = generations_from([["a"], ["b"]])
    with pytest.raises(CalibError, match="one answer per prompt"):
        Bundle(generations_from([["a", "b"]]))
    with pytest.raises(CalibError, match="3 sampled prompts but 2 greedy"):
        Bundle(greedy, samples=generations_from([["a", "b"]] * 3))
    with pytest.raises(CalibError, match="1 examples but 2 greedy"):
        Bundle(greedy, examples=[Example("q")])


def test_result_validation_rejects_out_of_range_and_shape_mismatch():
    EstimatorResult(confidence=np.array([0.0, np.nan, 1.0]), raw=np.zeros(3), higher_raw_means="confident")
    with pytest.raises(ValueError, match="outside"):
        EstimatorResult(confidence=np.array([1.2]), raw=np.zeros(1), higher_raw_means="confident")
    with pytest.raises(ValueError, match="must both be"):
        EstimatorResult(confidence=np.zeros(2), raw=np.zeros(3), higher_raw_means="uncertain")
    with pytest.raises(ValueError, match="higher_raw_means"):
        EstimatorResult(confidence=np.zeros(1), raw=np.zeros(1), higher_raw_means="up")


def test_bundle_scores_each_prompt_continuation_pair_once():
    calls = []

    def score_fn(prompts, continuations):
        calls.append(len(prompts))
        return [np.array([-1.0]) for _ in prompts]

    bundle = Bundle(generations_from([["x"]]), score_fn=score_fn)
    first = bundle.score(["p", "p", "q"], [" a", " a", " b"])
    again = bundle.score(["q", "p"], [" b", " a"])
    assert calls == [2]  # two distinct pairs, one call; the second request is served from the cache
    assert [float(x[0]) for x in first + again] == [-1.0] * 5


def test_statistics_are_computed_once_per_bundle():
    class CountingExact:
        name = "counting"
        calls = 0

        def compare(self, questions, answers):
            from calib.semantic import ExactMatch

            CountingExact.calls += 1
            return ExactMatch().compare(questions, answers)

        def pair_similarity(self, first, second):
            raise AssertionError("not used")

    samples = generations_from([["a", "a", "b"]])
    bundle = Bundle(generations_from([["a"]]), samples, semantic=CountingExact())
    for name in ("self_consistency", "semantic_entropy_discrete", "eigv", "degree", "num_semantic_sets"):
        get_estimator(name)(bundle)
    assert CountingExact.calls == 1


def _docs_example() -> str:
    text = DOCS.read_text()
    match = re.search(r"<!-- example: answer_length -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/estimators.md lost its tested example"
    return match.group(1)


def test_the_docs_example_estimator_is_complete_and_runs(isolated_registry):
    code = _docs_example()
    assert len(code.strip().splitlines()) <= 25
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    assert "answer_length" in list_estimators()
    estimator = get_estimator("answer_length", scale=2.0)
    greedy = generations_from(
        [["Paris"], ["the city of Paris"]], logprobs=[[[-0.1]], [[-0.1, -0.2, -0.3, -0.4]]]
    )
    result = estimator(Bundle(greedy))
    np.testing.assert_allclose(result.confidence, np.exp(-np.array([1.0, 4.0]) / 2.0))
    assert result.higher_raw_means == "uncertain"


def test_revise_passes_are_available_to_estimators():
    greedy = generations_from([["a"], ["b"]])
    bundle = Bundle(greedy, passes=[greedy, generations_from([["a2"], ["b2"]])])
    assert Need.PASSES in bundle.available() and bundle.passes[1].texts[0] == ["a2"]
    assert Need.PASSES not in Bundle(greedy, passes=[greedy]).available()
    with pytest.raises(CalibError, match="revise pass 1 has 1 prompts"):
        Bundle(greedy, passes=[greedy, generations_from([["x"]])])


def test_from_model_routes_model_calls_through_calib_decode(monkeypatch):
    import calib.decode

    calls = {}

    def fake_score(lm, prompts, continuations):
        calls["score"] = (lm, list(prompts), list(continuations))
        return [np.array([-0.5])] * len(prompts)

    def fake_generate(lm, prompts, **kw):
        calls["generate"] = (lm, list(prompts), kw)
        return generations_from([[" 0.4"] for _ in prompts])

    class FakeTokenizer:
        def decode(self, ids):
            return "+".join(map(str, ids))

    class FakeLM:
        tokenizer = FakeTokenizer()

    lm = FakeLM()
    monkeypatch.setattr(calib.decode, "score", fake_score)
    monkeypatch.setattr(calib.decode, "generate", fake_generate)
    bundle = Bundle.from_model(lm, generations_from([["Paris"]]), examples=[Example("Capital of France?")])
    assert bundle.available() >= {Need.SCORE, Need.GENERATE, Need.DECODE}
    np.testing.assert_allclose(get_estimator("p_true")(bundle).confidence, [0.5])
    assert calls["score"][0] is lm and calls["score"][2] == [" (A)", " (B)"]
    np.testing.assert_allclose(get_estimator("verbalized")(bundle).confidence, [0.4])
    assert calls["generate"][2] == {"num_samples": 1, "max_new_tokens": 12, "greedy": True, "stop": ("\n",)}
    assert bundle.decode_fn(np.array([3, 4])) == "3+4"


def test_a_backend_breaking_the_comparison_contract_is_named():
    from calib.semantic import Comparison

    class Broken:
        name = "broken"

        def compare(self, questions, answers):
            return [
                Comparison(np.zeros((len(g), len(g)), np.float32), np.eye(len(g), dtype=bool))
                for g in answers
            ]

        def pair_similarity(self, first, second):
            raise AssertionError("not used")

    bundle = Bundle(generations_from([["a"]]), generations_from([["a", "b"]]), semantic=Broken())
    with pytest.raises(CalibError, match="semantic backend 'broken' must return similarities in"):
        get_estimator("eigv")(bundle)
