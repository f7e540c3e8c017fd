"""Configs: every group option and preset composes and validates; bad values fail with one line naming the key."""

import dataclasses

import pytest
from hydra.errors import ConfigCompositionException

from calib.errors import CalibError
from calib.estimators import get_estimator, list_estimators
from calib.estimators.base import Need, available_needs
from calib.pipeline import config as C
from calib.pipeline.stages import resolve_estimators

PLACEHOLDERS = {
    "model/gguf": "model.name",
    "task/jsonl": "task.options.path",
    "estimators/nli": "semantic_options",
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (C.config_dir() / group).glob("*.yaml"))


def test_default_is_the_main_job():
    cfg = C.compose()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert (cfg.task.name, cfg.task.limit) == ("mixed", 200)
    assert cfg.decoding.num_samples == 10 and cfg.decoding.temperature == 1.0
    assert cfg.estimators.names == [C.ALL] and cfg.estimators.semantic == "embedding"
    assert cfg.artifacts_dir.endswith("artifacts")
    C.validate(cfg)
    # "all" with the default sampling run feeds every registered estimator except those that need revise passes or
    # a trained artifact (calib.tuning); none needs an NLI model (the semantic ones use the offline embedding backend).
    needs = available_needs(num_samples=10, has_model=True, has_hidden=True)
    chosen, skipped = resolve_estimators(cfg.estimators, needs)
    assert set(chosen) | set(skipped) == set(list_estimators())
    assert all(set(get_estimator(name).needs) <= needs for name in chosen)
    assert all(why in ("needs passes", "needs trained") for why in skipped.values())
    assert {n for n, why in skipped.items() if why == "needs trained"} == {
        "calibration_tuned",
        "probe",
        "multi_hypothesis_tuned",
    }
    expected = {"msp", "p_true", "verbalized", "semantic_entropy", "sar", "kle", "multi_hypothesis"}
    assert expected <= set(chosen)


def test_the_schema_defaults_are_the_run_calib_does(monkeypatch):
    """One source of defaults: `RunConfig()` in Python is the config `calib` composes with no overrides."""
    monkeypatch.delenv("CALIB_ARTIFACTS_DIR", raising=False)
    from omegaconf import OmegaConf

    schema = OmegaConf.to_object(
        OmegaConf.structured(C.RunConfig())
    )  # resolves the artifacts_dir interpolation
    assert dataclasses.asdict(schema) == dataclasses.asdict(C.compose())


@pytest.mark.parametrize("group", ["model", "task", "decoding", "estimators", "metrics", "experiment"])
def test_every_option_of_every_group_composes_and_validates(group):
    assert options(group), f"configs/{group}/ is empty"
    for option in options(group):
        name = f"{group}/{option}"
        if name in PLACEHOLDERS:
            with pytest.raises((CalibError, Exception), match=PLACEHOLDERS[name].split(".")[-1]):
                C.validate(C.compose([f"{group}={option}"]))
            continue
        cfg = C.compose([f"{group}={option}"])
        C.validate(cfg)
        assert isinstance(cfg, C.RunConfig)


def test_experiment_presets_change_what_they_say():
    smoke = C.compose(["experiment=smoke"])
    assert smoke.model.name == "tiny-llama" and smoke.task.limit == 8 and smoke.metrics.n_resamples == 100
    bench = C.compose(["experiment=polygraph_bench"])
    assert bench.task.name == "capitals" and bench.task.limit == 40
    assert bench.task.template == "Q: {question}\nA:"
    assert (bench.decoding.num_samples, bench.decoding.max_new_tokens) == (10, 16)
    assert bench.estimators.names and C.ALL not in bench.estimators.names


def test_launcher_configs_compose():
    from hydra import compose, initialize_config_dir

    C.register_configs()
    with initialize_config_dir(config_dir=str(C.config_dir()), version_base="1.3"):
        local = compose("config", overrides=["hydra/launcher=local_parallel"], return_hydra_config=True)
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert local.hydra.launcher._target_.endswith("JoblibLauncher") and local.hydra.launcher.n_jobs == 2
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.timeout_min == 120


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("decoding.num_samples=-1", "decoding.num_samples"),
        ("decoding.max_new_tokens=0", "decoding.max_new_tokens"),
        ("decoding.temperature=-0.5", "decoding.temperature"),
        ("decoding.top_p=1.5", "decoding.top_p"),
        ("decoding.shard_size=0", "decoding.shard_size"),
        ("decoding.revise_passes=-1", "decoding.revise_passes"),
        ("decoding.cue=please_reconsider", "decoding.cue"),
        ("task.limit=0", "task.limit"),
        ("task.name=no_such_task", "task.name"),
        ("task.split=train", "task.split"),
        ("task.template=no-placeholder", "task.template"),
        ("model.name=gguf:/no/such/file.gguf", "model.name"),
        ("model.name=hf:/no/such/folder", "model.name"),
        ("model.name=gpt-17", "model.name"),
        ("model.dtype=float8", "model.dtype"),
        ("estimators.names=[msp,no_such_estimator]", "estimators.names"),
        ("estimators.semantic=telepathy", "estimators.semantic"),
        ("metrics.names=[auroc,accuracy_of_vibes]", "metrics.names"),
        ("metrics.n_resamples=1", "metrics.n_resamples"),
        ("metrics.alpha=1.5", "metrics.alpha"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, key):
    with pytest.raises(CalibError) as info:
        C.validate(C.compose([override]))
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message
    assert any(word in message for word in ("use", "choose", "known", "check", "give", "must", "contain"))


def test_unknown_keys_and_wrong_types_fail_while_composing():
    with pytest.raises(ConfigCompositionException):
        C.compose(["decoding.no_such_key=1"])
    with pytest.raises(ConfigCompositionException):
        C.compose(["decoding.num_samples=ten"])
    with pytest.raises(CalibError, match=r"unknown config key decoding\.extra"):
        C.compose(["+decoding.extra=1"])  # `+` adds it to the config, but calib refuses keys it would ignore


def test_revise_passes_make_the_revision_estimators_available():
    cfg = C.compose(["decoding=revise"])
    assert cfg.decoding.revise_passes == 2
    needs = available_needs(num_samples=10, has_model=True, has_hidden=True, num_passes=3)
    chosen, skipped = resolve_estimators(cfg.estimators, needs)
    assert set(skipped) == {
        "calibration_tuned",
        "probe",
        "multi_hypothesis_tuned",
    }  # no trained artifact given
    assert "revision_stability" in chosen


def test_all_skips_what_the_run_cannot_feed_but_named_estimators_must_run():
    greedy_only = available_needs(num_samples=0, has_model=True, has_hidden=True)
    cfg = C.EstimatorsConfig()
    chosen, skipped = resolve_estimators(cfg, greedy_only)
    assert "msp" in chosen and "p_true" in chosen and "semantic_entropy" in skipped
    assert all(Need.SAMPLES not in get_estimator(n).needs for n in chosen)
    assert "samples" in skipped["semantic_entropy"]
    with pytest.raises(CalibError, match=r"semantic_entropy.*needs samples"):
        resolve_estimators(dataclasses.replace(cfg, names=["msp", "semantic_entropy"]), greedy_only)
    chosen, _ = resolve_estimators(
        dataclasses.replace(cfg, names=["all"], exclude=["p_true", "verbalized"]), greedy_only
    )
    assert "p_true" not in chosen and "verbalized" not in chosen


def test_every_hub_task_is_a_task_option():
    """`calib task=triviaqa` selects the hub task (not only task.name=triviaqa); composing loads no data."""
    import calib.tasks.hub as hub
    from calib.tasks.base import _REGISTRY

    hub_tasks = {name for name, (builder, _) in _REGISTRY.items() if builder.__module__ == hub.__name__}
    assert {"triviaqa", "gsm8k", "mmlu"} <= hub_tasks
    assert hub_tasks <= set(options("task"))
    cfg = C.compose(["task=triviaqa"])
    assert cfg.task.name == "triviaqa" and cfg.task.options == {}
    C.validate(cfg)
    local = C.compose(["task=gsm8k", "+task.options.data_files=test.jsonl"])
    assert (local.task.name, local.task.options) == ("gsm8k", {"data_files": "test.jsonl"})
