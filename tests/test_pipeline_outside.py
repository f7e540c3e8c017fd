"""Bring your own generations: calib's own answers for 40 questions, exported as OpenAI-style responses (legacy
completions and chat), read back with generations.path give the same metrics table, without a model for the
estimators that need none and with the model for the rest."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from calib.errors import CalibError
from calib.pipeline import (
    ArtifactStore,
    RunConfig,
    generation,
    read_generations_file,
    run,
    run_generations,
    stages,
)
from calib.pipeline.outside import NO_MODEL

N = 40


def small_config(artifacts: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.model.name = "tiny-llama"
    cfg.task.limit = N
    cfg.decoding.num_samples = 3
    cfg.decoding.max_new_tokens = 4
    cfg.decoding.shard_size = 20
    cfg.estimators.semantic = "exact"
    cfg.metrics.names = ["auroc", "brier", "ece", "prr"]
    cfg.metrics.show = ["auroc", "brier"]
    cfg.metrics.n_resamples = 20
    cfg.report.figures = False
    cfg.artifacts_dir = str(artifacts)
    cfg.progress = False
    return cfg


def _logprobs(gens, i, k, chat: bool, entropies: bool) -> dict:
    tokens = [f"token_id:{t}" for t in gens.token_ids[i][k].tolist()]
    lps = gens.token_logprobs[i][k].tolist()
    tops = [
        dict(zip([f"token_id:{t}" for t in ids], lp))
        for ids, lp in zip(gens.top_ids[i][k].tolist(), gens.top_logprobs[i][k].tolist())
    ]
    if chat:
        out = {
            "content": [
                {
                    "token": t,
                    "logprob": lp,
                    "top_logprobs": [{"token": a, "logprob": b} for a, b in top.items()],
                }
                for t, lp, top in zip(tokens, lps, tops)
            ]
        }
    else:
        out = {
            "tokens": tokens,
            "token_logprobs": lps,
            "top_logprobs": tops,
            "text_offset": [0] * len(tokens),
        }
    if entropies:
        out["entropies"] = gens.token_entropies[i][k].tolist()
    return out


def _choice(gens, i, k, chat: bool, entropies: bool) -> dict:
    reason = "length" if gens.stop_reasons[i][k] == "length" else "stop"
    body = (
        {"message": {"role": "assistant", "content": gens.texts[i][k]}}
        if chat
        else {"text": gens.texts[i][k]}
    )
    return {"index": k, **body, "logprobs": _logprobs(gens, i, k, chat, entropies), "finish_reason": reason}


def export_openai(path: Path, examples, greedy, samples, chat: bool = False, entropies: bool = True) -> Path:
    """One line per question: gold answers, the greedy response (n=1) and the sampled response (n=K)."""
    kind = "chat.completion" if chat else "text_completion"
    with path.open("w", encoding="utf-8") as f:
        for i, ex in enumerate(examples):
            record = {
                "id": ex.id,
                "question": ex.question,
                "answers": list(ex.answers),
                "open_ended": ex.open_ended,
                "category": ex.category,
                "metadata": {
                    k: v for k, v in ex.metadata.items() if k in ("grader", "numeric_pick", "answer_groups")
                },
                "prompt": greedy.prompts[i],
                "greedy": {"object": kind, "choices": [_choice(greedy, i, 0, chat, entropies)]},
                "samples": {
                    "object": kind,
                    "choices": [_choice(samples, i, k, chat, entropies) for k in range(samples.num_samples)],
                },
            }
            f.write(json.dumps(record) + "\n")
    return path


@pytest.fixture(scope="module")
def made_in_calib(tmp_path_factory):
    root = tmp_path_factory.mktemp("outside")
    cfg = small_config(root / "artifacts")
    result = run(cfg, root / "calib", print_summary=False)
    key = result.manifest["stages"]["generate"]["key"]
    passes, _ = generation.run_generate(ArtifactStore(cfg.artifacts_dir), key, {}, None, [], None, 20, False)
    greedy, samples, _ = generation.split_passes(passes, cfg.decoding.num_samples)
    examples = stages.load_examples(cfg.task)
    return cfg, root, result, examples, greedy, samples


def _table(metrics: pd.DataFrame, names) -> pd.DataFrame:
    part = metrics[metrics["estimator"].isin(names)]
    return part.sort_values(["group", "estimator", "metric"]).reset_index(drop=True)


@pytest.mark.parametrize("chat", [False, True])
def test_openai_file_without_model_gives_the_same_metrics(made_in_calib, chat):
    _cfg, root, result, examples, greedy, samples = made_in_calib
    path = export_openai(root / f"openai-{chat}.jsonl", examples, greedy, samples, chat=chat)
    cfg2 = small_config(root / "artifacts")
    cfg2.model.name = NO_MODEL
    cfg2.generations.path = str(path)
    mine = run(cfg2, root / f"file-{chat}", print_summary=False)
    ran = set(mine.metrics["estimator"])
    skipped = mine.manifest["summary"]["skipped_estimators"]
    assert {"p_true", "mean_pmi"} <= set(skipped) and "msp" in ran and "semantic_entropy" in ran
    assert len(ran) >= 10
    pd.testing.assert_frame_equal(_table(mine.metrics, ran), _table(result.metrics, ran))
    assert mine.manifest["stages"]["generate"]["file_sha256"]
    again = run(cfg2, root / f"file-{chat}-again", print_summary=False)  # keyed by the file: all reused
    assert again.manifest["stages"]["grade"]["cached"] and again.manifest["stages"]["evaluate"]["cached"]


def test_openai_file_with_model_gives_the_same_metrics(made_in_calib):
    _cfg, root, result, examples, greedy, samples = made_in_calib
    path = export_openai(root / "openai-model.jsonl", examples, greedy, samples)
    overrides = [
        "model=tiny-llama",
        "estimators.semantic=exact",
        "metrics.names=[auroc,brier,ece,prr]",
        "metrics.show=[auroc]",
        "metrics.n_resamples=20",
        "report.figures=false",
        "progress=false",
        f"artifacts_dir={root / 'artifacts'}",
    ]
    mine = run_generations(path, root / "file-model", overrides=overrides)
    ran = set(mine.metrics["estimator"])
    hidden = set(result.metrics["estimator"]) - ran
    assert {"p_true", "mean_pmi"} <= ran and hidden <= {"eigenscore"} | set(
        mine.manifest["summary"]["skipped_estimators"]
    )
    pd.testing.assert_frame_equal(_table(mine.metrics, ran), _table(result.metrics, ran))


def test_file_without_entropies_or_ids_reads(made_in_calib, tmp_path):
    _cfg, _root, _result, examples, greedy, samples = made_in_calib
    path = export_openai(tmp_path / "plain.jsonl", examples[:3], greedy, samples, entropies=False)
    text = path.read_text().replace("token_id:", "tok")
    path.write_text(text)
    read = read_generations_file(path)
    assert read.has_token_stats and not read.has_token_ids and read.num_samples == 3
    entropy = read.greedy.token_entropies[0][0]
    top = np.exp(greedy.top_logprobs[0][0].astype(np.float64))
    assert np.all(entropy <= greedy.token_entropies[0][0] + 1e-5) and np.all(entropy > 0) and top.sum() > 0


def test_plain_text_answers_run_without_model(tmp_path):
    rows = [
        {
            "id": i,
            "question": f"What is {i}+1?",
            "answers": [str(i + 1)],
            "greedy": str(i + 1 - i % 2),
            "samples": [str(i + 1), str(i), str(i + 1)],
        }
        for i in range(8)
    ]
    result = run_generations(
        rows,
        tmp_path / "run",
        overrides=[
            "estimators.semantic=exact",
            "metrics=quick",
            "report.figures=false",
            "progress=false",
            f"artifacts_dir={tmp_path / 'artifacts'}",
        ],
    )
    ran = set(result.metrics["estimator"])
    assert {"degree", "eigv"} <= ran and not {"msp", "semantic_entropy"} & ran  # no log-probs: skipped
    assert result.manifest["summary"]["accuracy"] == 0.5


BAD = [
    ({"question": "q", "greedy": "a"}, "field 'answers' is missing"),
    ({"question": "q", "answers": ["a"]}, "field 'greedy' is missing"),
    ({"question": "q", "answers": ["a"], "greedy": ["a", "b"]}, "field 'greedy' holds 2 answers"),
    (
        {
            "question": "q",
            "answers": ["a"],
            "greedy": {"text": "a", "logprobs": {"tokens": ["a"], "token_logprobs": ["x"]}},
        },
        "field 'greedy.logprobs.token_logprobs[0]' holds 'x'",
    ),
    (
        {
            "question": "q",
            "answers": ["a"],
            "greedy": {"choices": [{"message": {"content": "a"}, "logprobs": {"content": [{"token": "a"}]}}]},
        },
        "field 'greedy.choices[0].logprobs.content[0]' needs",
    ),
    ({"question": "q", "answers": ["a"], "greedy": "a", "samples": 3}, "field 'samples' must be an answer"),
]


@pytest.mark.parametrize("record, message", BAD)
def test_bad_rows_are_one_line_errors(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"question": "ok", "answers": ["a"], "greedy": "a"}) + "\n" + json.dumps(record)
    )
    with pytest.raises(CalibError, match="line 2") as err:
        read_generations_file(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_uneven_samples_and_bad_config_are_refused(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"question": "q", "answers": ["a"], "greedy": "a", "samples": s})
            for s in (["a", "b"], ["a"])
        )
    )
    with pytest.raises(CalibError, match="line 2: field 'samples' holds 1 answers but line 1 has 2"):
        read_generations_file(path)
    cfg = RunConfig()
    cfg.model.name = NO_MODEL
    with pytest.raises(CalibError, match=r"set generations\.path"):
        run(cfg, tmp_path / "r")
    cfg.generations.path = str(tmp_path / "missing.jsonl")
    with pytest.raises(CalibError, match="does not exist"):
        run(cfg, tmp_path / "r")
    cfg.generations.path = str(path)
    cfg.estimators.semantic = "judge"
    with pytest.raises(CalibError, match="judge"):
        run(cfg, tmp_path / "r")
