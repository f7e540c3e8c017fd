"""The `calib` command: help for newcomers, one-line config errors that write nothing, `list` and `compare`."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from calib.cli import main, one_line
from calib.errors import CalibError


def test_help_explains_groups_options_and_commands():
    out = subprocess.run(
        [sys.executable, "-m", "calib.cli", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for text in (
        "calib model=gemma3-270m task=capitals decoding.num_samples=20",
        "calib -m decoding.num_samples=1,5,10,20",
        "calib compare",
        "== Config groups (GROUP=OPTION) ==",
        "model: gemma3-270m, gguf, smollm2-135m-instruct, tiny-gemma3, tiny-llama",
        "experiment: ",
        "num_samples: 10",
        "artifacts_dir",
    ):
        assert text in out, text


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["model=no_such_model"], "no config option 'model/no_such_model'; options for model: gemma3-270m"),
        (
            ["decoding.num_samples=ten"],
            "decoding.num_samples: Value 'ten' of type 'str' could not be converted",
        ),
        (["decoding.num_samples=-3"], "decoding.num_samples=-3 is not allowed: use an integer >= 0"),
        (["model.name=gguf:/no/such/model.gguf"], "the GGUF file does not exist"),
        (["decoding.temprature=0.5"], "unknown config key decoding.temprature; keys there: num_samples"),
        (["task=jsonl"], "task.options.path has no value"),
    ],
)
def test_config_errors_are_one_line_exit_nonzero_and_write_nothing(tmp_path, capsys, overrides, expected):
    artifacts, run_dir = tmp_path / "artifacts", tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        # In-process Hydra must not configure logging: its dictConfig closes pytest's log-capture handlers and every
        # later test on the worker then errors with "I/O operation on closed file".
        main(
            [
                *overrides,
                f"artifacts_dir={artifacts}",
                f"hydra.run.dir={run_dir}",
                "hydra/job_logging=none",
                "hydra/hydra_logging=none",
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("calib: error: ") and expected in err[0], err
    assert not artifacts.exists() and not run_dir.exists()


def test_bugs_are_not_disguised_as_config_errors():
    assert one_line(CalibError("task.limit=0 is not allowed")) == "task.limit=0 is not allowed"
    assert one_line(ZeroDivisionError("division by zero")) is None


def test_list_names_what_configs_can_use(capsys):
    main(["list"])
    out = capsys.readouterr().out
    for text in (
        "tiny-llama",
        "capitals",
        "semantic_entropy",
        "multi_hypothesis",
        "auroc",
        "experiment ",
        "luq",
        "semantic_entropy_unique",
        "mean_pmi",
        "lexical_similarity_bleu",
    ):
        assert text in out


def _fake_run(folder, overrides, auroc):
    folder.mkdir(parents=True)
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "manifest.json").write_text(json.dumps({"stages": {}}))
    rows = [
        {
            "group": "all",
            "estimator": name,
            "n": 50,
            "n_missing": 0,
            "auroc": a,
            "auroc_low": a - 0.1,
            "auroc_high": a + 0.1,
            "ece": 0.1,
            "ece_low": 0.05,
            "ece_high": 0.15,
        }
        for name, a in auroc.items()
    ]
    pd.DataFrame(rows).to_csv(folder / "metrics.csv", index=False)


def test_compare_tabulates_a_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0", ["decoding.num_samples=5", "task=capitals"], {"msp": 0.6, "semantic_entropy": 0.7})
    _fake_run(
        sweep / "1", ["decoding.num_samples=20", "task=capitals"], {"msp": 0.6, "semantic_entropy": 0.8}
    )
    main(["compare", str(sweep), "--metric", "auroc", "--no-figures"])
    out = capsys.readouterr().out
    assert "decoding.num_samples=5" in out and "decoding.num_samples=20" in out and "task=" not in out
    md = (sweep / "compare.md").read_text()
    assert "| semantic_entropy | 0.700 [0.600, 0.800] | 0.800 [0.700, 0.900] |" in md
    assert "| msp | 0.600 [0.500, 0.700] | 0.600 [0.500, 0.700] |" in md
    assert md.index("semantic_entropy") < md.index("| msp")  # best AUROC first
    long = pd.read_csv(sweep / "compare.csv")
    assert len(long) == 2 * 2 * 2  # runs x estimators x metrics
    with pytest.raises(SystemExit) as info:
        main(["compare", str(tmp_path / "nothing_here")])
    assert info.value.code == 2
