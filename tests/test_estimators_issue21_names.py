"""Issue 21's seventeen LM-Polygraph estimators: each is in docs/estimators.md's correspondence table under a calib
name that `calib list` shows and the registry builds, and the built-in table describes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calib.cli import main
from calib.estimators import get_estimator, list_estimators

DOCS = (Path(__file__).resolve().parents[1] / "docs" / "estimators.md").read_text()

# the list (LM-Polygraph 0.7.0 class, and for LexicalSimilarity the metric), with calib's name
SEVENTEEN = {
    "MeanPointwiseMutualInformation": "mean_pmi",
    "MeanConditionalPointwiseMutualInformation": "mean_cpmi",
    "MonteCarloSequenceEntropy": "mc_sequence_entropy",
    "MonteCarloNormalizedSequenceEntropy": "mc_normalized_sequence_entropy",
    "LexicalSimilarity rouge1": "lexical_similarity_rouge1",
    "LexicalSimilarity BLEU": "lexical_similarity_bleu",
    "EigenScore": "eigenscore",
    "RenyiNeg": "renyi_negentropy",
    "FisherRao": "fisher_rao",
    "SelfCertainty": "self_certainty",
    "BoostedProbSequence": "boosted_prob_sequence",
    "RAUQ": "rauq",
    "AttentionScore": "attention_score",
    "CSL": "csl",
    "LUQ": "luq",
    "LabelProb": "label_prob",
    "PTrueSampling": "p_true_sampling",
}


def _table() -> dict[str, str]:
    """LM-Polygraph column -> calib column of the correspondence table."""
    section = DOCS[DOCS.index("## LM-Polygraph 0.7.0 correspondence") :]
    rows = re.findall(r"^\| ([^|]+) \| ([^|]+) \|", section, re.M)
    return {left.strip(): right for left, right in rows}


def test_there_are_seventeen():
    assert len(SEVENTEEN) == 17 and len(set(SEVENTEEN.values())) == 17


@pytest.mark.parametrize(("lmpg", "name"), SEVENTEEN.items(), ids=list(SEVENTEEN))
def test_each_is_mapped_listed_and_built(lmpg, name):
    cls, _, metric = lmpg.partition(" ")
    row = next((v for k, v in _table().items() if re.match(rf"{cls}\b", k)), None)
    assert row is not None, f"{cls} has no row in the correspondence table"
    assert f"`{name}`" in row, (cls, row)
    if metric:
        assert metric in next(k for k in _table() if k.startswith(cls))
    assert name in list_estimators()
    assert get_estimator(name).name == name
    assert re.search(rf"^\| [^|]*`{name}`", DOCS, re.M)  # described in the built-in table


def test_calib_list_shows_all_seventeen(capsys):
    main(["list"])
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert set(SEVENTEEN.values()) <= listed, sorted(set(SEVENTEEN.values()) - listed)
