"""Structured configs of a run (dataclasses registered in Hydra's ConfigStore) and the value checks Hydra can't do.

Hydra composes `configs/config.yaml` with one option per group (model/, task/, decoding/, estimators/, metrics/,
experiment/) on top of `RunConfig`, whose defaults are those of the default composition (`RunConfig()` is the run
`calib` does; a test holds them equal), so a key that is not a field, or a value of the wrong type, fails while the
config is composed. `validate()` then checks values (ranges, names of tasks, estimators and metrics) before the
run touches the artifact store, and names the key and what it accepts in one line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from calib.errors import CalibError

ALL = "all"  # estimators.names entry: every registered estimator whose needs the run can meet


@dataclass
class ModelConfig:
    name: str = "smollm2-135m-instruct"  # built-in name, gguf:PATH, hf:PATH, tiny-llama or tiny-gemma3
    dtype: str = "auto"  # auto (bfloat16 on GPU/TPU, float32 on CPU) | float32 | bfloat16 | float16 | float64
    weights: str = (
        "full"  # full (all tensors in dtype) | int8 (layer matrices and head as int8, computed in dtype)
    )
    seed: int = 0  # initialisation seed of the tiny random models only


@dataclass
class TaskConfig:
    name: str = "mixed"  # any name of calib.tasks.list_tasks(), including entry-point plugins
    limit: int | None = 200  # keep the first `limit` questions after the seeded shuffle (null: all)
    seed: int = 0
    split: str | None = None  # calibration | test | null (all questions)
    options: dict[str, Any] = field(default_factory=dict)  # passed to load_task (e.g. per_category, path)
    # Few-shot completion prompts, as the built-in suites use (configs/task/mixed.yaml says why); a task option may
    # set prompt_style: null (the model's own format, e.g. its chat template) and n_shots: null (the style's default).
    prompt_style: str | None = "completion"  # chat | completion | null (what the model expects)
    n_shots: int | None = 3  # demonstrations in the prompt (null: the style's default)
    system: str | None = None  # system message for chat prompts
    template: str | None = None  # raw prompt, e.g. "Q: {question}\nA:" (no chat template, no instruction)
    grading: dict[str, Any] = field(default_factory=dict)  # options of calib.tasks.grade_detail


@dataclass
class DecodingConfig:
    num_samples: int = 10  # K sampled answers per question besides the greedy one (0: greedy only)
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: list[str] = field(default_factory=lambda: ["\n"])
    seed: int = 0
    shard_size: int = 32  # questions per generate call and per stored shard (part of the generate key)
    revise_passes: int = 0  # R: ask the model to revise every answer R times (feeds the revision estimators)
    cue: str = (
        "self_check"  # what it is asked before each revision: wait, self_check, final_answer, budget_forcing
    )


@dataclass
class EstimatorsConfig:
    names: list[str] = field(default_factory=lambda: [ALL])  # "all" = every estimator this run can feed
    exclude: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)  # {estimator name: {param: value}}
    semantic: str = "embedding"  # exact | embedding | nli | judge
    semantic_options: dict[str, Any] = field(default_factory=dict)
    clustering: str = "greedy"  # greedy | components


@dataclass
class GenerationsConfig:
    """Answers made outside calib (docs/generations.md): graded, estimated and evaluated instead of generating."""

    path: str | None = (
        None  # a generations JSONL file; null: calib generates (model.name=none: no model at all)
    )


@dataclass
class MetricsConfig:
    names: list[str] = field(
        default_factory=lambda: [
            "auroc",
            "auprc",
            "prr",
            "aurc",
            "auarc",
            "selective_accuracy",
            "spearman",
            "ece",
            "mce",
            "rmsce",
            "ace",
            "smece",
            "brier",
            "nll",
        ]
    )
    n_bins: int = 15
    binning: str = "uniform"  # uniform | quantile (ECE family)
    n_resamples: int = 1000  # bootstrap resamples for the intervals (0: no intervals)
    alpha: float = 0.05  # 1 - alpha intervals
    seed: int = 0
    groups: bool = True  # also evaluate closed and open-ended questions separately
    show: list[str] = field(default_factory=lambda: ["auroc", "prr", "ece", "brier", "smece"])  # printed


@dataclass
class ReportConfig:
    figures: bool = True
    formats: list[str] = field(default_factory=lambda: ["png", "pdf"])  # figure file formats
    risk_coverage_top: int = 8  # estimators drawn in the risk-coverage plot (best AUROC first)


@dataclass
class ScalingStudyConfig:
    """study.scaling: the grid of the inference-time scaling study (calib.studies.scaling). It generates once with
    decoding.num_samples = max(samples), decoding.revise_passes = passes and decoding.cue = cue."""

    samples: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])  # K values, increasing
    passes: int = 2  # R: revise passes after the first answer
    cue: str = "self_check"  # a name of calib.decode.revise.CUES
    gates: list[str] = field(default_factory=lambda: ["msp", "self_consistency"])  # who to revise (adaptive)
    fractions: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])  # shares revised


@dataclass
class TemperatureStudyConfig:
    """study.temperature_sweep: the decoding / post-hoc temperature grid and the calibrators fitted
    (calib.studies.temperature). decoding.temperature and decoding.num_samples are not read."""

    temperatures: list[float] = field(default_factory=lambda: [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3])
    calibration_fraction: float = 0.5  # share of questions (by id hash) the calibrators are fitted on
    calibrators: list[str] = field(default_factory=lambda: ["platt", "beta", "isotonic", "histogram"])
    max_reference_tokens: int = 2000  # teacher-forced logits take tokens x vocabulary x 4 bytes on the host
    top_logprobs: int = 20  # stored per token; post-hoc re-tempering approximates the tail beyond them


@dataclass
class CalibrationTuningStudyConfig:
    """study.calibration_tuning: train a probe or LoRA adapter on N graded answers of tuning_train, evaluate on
    tuning_eval (calib.tuning.study)."""

    method: str = "lora"  # lora | probe
    n: int = 1000  # label budget: training questions (the first n of tuning_train; at most 4,343)
    seed: int = 0
    eval_kind: str = "closed"  # closed | open_ended | all: which half of tuning_eval is evaluated
    eval_limit: int | None = None  # evaluate the first questions only (null: all)
    rank: int = 8
    alpha: float = 16.0
    layers: int | None = 8  # adapters on the last `layers` blocks (null: every block)
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    batch_size: int = 8
    epochs: int = 1
    kl_weight: float = 1.0
    probe_kind: str = "logistic"  # logistic | mlp
    probe_layers: list[int] = field(
        default_factory=list
    )  # candidates (empty: L/2, 3L/4, L); validation picks


STUDIES = ("scaling", "temperature_sweep", "calibration_tuning")


@dataclass
class StudyConfig:
    name: str | None = None  # null: the main job; scaling | temperature_sweep: that study (calib.studies)
    scaling: ScalingStudyConfig = field(default_factory=ScalingStudyConfig)
    temperature_sweep: TemperatureStudyConfig = field(default_factory=TemperatureStudyConfig)
    calibration_tuning: CalibrationTuningStudyConfig = field(default_factory=CalibrationTuningStudyConfig)


@dataclass
class DevicesConfig:
    """How this process's devices are used (calib.devices.make_mesh): rows split `data` ways, weights `model` ways."""

    data: int | None = None  # null: every device that `model` leaves (the default: all devices on data)
    model: int = 1  # tensor parallel: attention heads, MLP hidden and vocabulary split this many ways


@dataclass
class DistributedConfig:
    """Several processes (hosts) on one run (calib.distributed; docs/architecture.md has the SLURM recipe)."""

    enabled: bool = False  # call jax.distributed.initialize; each process generates and estimates its share
    coordinator: str | None = None  # host:port of process 0; null: $CALIB_COORDINATOR, else SLURM's variables
    num_processes: int | None = None  # null: $CALIB_NUM_PROCESSES (or SLURM)
    process_id: int | None = None  # null: $CALIB_PROCESS_ID (or SLURM)
    timeout_s: int = 3600  # how long a process waits at a barrier for the others


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    estimators: EstimatorsConfig = field(default_factory=EstimatorsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    generations: GenerationsConfig = field(default_factory=GenerationsConfig)
    devices: DevicesConfig = field(default_factory=DevicesConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    artifacts_dir: str = "${oc.env:CALIB_ARTIFACTS_DIR,out/artifacts}"  # shared by every run
    progress: bool = True


def config_dir() -> Path:
    """configs/ next to the calib package (a source checkout or editable install), or $CALIB_CONFIG_DIR."""
    path = Path(os.environ.get("CALIB_CONFIG_DIR") or Path(__file__).resolve().parents[2] / "configs")
    if not (path / "config.yaml").is_file():
        raise CalibError(
            f"no configs/config.yaml at {path}; run calib from a checkout or set CALIB_CONFIG_DIR"
        )
    return path


def compose(overrides: Sequence[str] = ()) -> RunConfig:
    """The RunConfig `calib <overrides>` would run, composed in-process (for notebooks and tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return to_run_config(cfg)


def register_configs() -> None:
    """Put the schemas where configs/*.yaml find them (`defaults: [run_schema, ...]`)."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Keys of a config that its dataclass schema lacks (Hydra lets `+key=value` add them)."""
    known = {f.name: f for f in fields(schema)}
    out = []
    for key in node:
        spec = known.get(key)
        if spec is None:
            out.append(prefix + str(key))
            continue
        child = spec.default_factory if spec.default_factory is not MISSING else None
        if child is not None and is_dataclass(child):
            out += unknown_keys(node[key], child, f"{prefix}{key}.")
    return out


def to_run_config(cfg: DictConfig | RunConfig) -> RunConfig:
    """A plain RunConfig object from Hydra's DictConfig (interpolations resolved, no keys the schema lacks)."""
    if isinstance(cfg, RunConfig):
        return cfg
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    extra = unknown_keys(cfg, RunConfig)
    if extra:
        raise CalibError(
            f"unknown config key {extra[0]}: calib does not read it; see `calib --help` for the keys"
        )
    merged = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    return OmegaConf.to_object(merged)


TEMPLATE_FIELDS = ("question", "context")  # what build_prompts passes to str.format


def check_template(template: str) -> None:
    """A raw prompt template may use {question} and {context} and nothing else (no attributes, indices or
    positional fields): checked before the model loads rather than failing on the first question."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        _fail("task.template", template, f"{err}; write a literal brace as {{{{ or }}}}")
    for name in names:
        if name not in TEMPLATE_FIELDS:
            _fail(
                "task.template", template, f"unknown field {{{name}}}: use {{question}} and {{context}} only"
            )
    if "question" not in names:
        _fail("task.template", template, "a template must contain {question} (and may contain {context})")
    try:
        template.format(question="q", context="c")
    except (ValueError, TypeError) as err:
        _fail("task.template", template, f"{err}; use plain {{question}} and {{context}}")


# ---- value checks -----------------------------------------------------------------------------------------------
def _fail(key: str, value: Any, expected: str) -> None:
    raise CalibError(f"{key}={value!r} is not allowed: {expected}")


def _positive(key: str, value: int | None, minimum: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or value < minimum:
        _fail(key, value, f"use an integer >= {minimum}" + (" or null" if optional else ""))


def _choice(key: str, value: Any, allowed: list[Any]) -> None:
    if value not in allowed:
        _fail(key, value, "choose one of " + ", ".join(map(str, allowed)))


def _names(key: str, names: list[str], known: list[str]) -> None:
    for name in names:
        if name not in known:
            _fail(key, name, "known names are " + ", ".join(known))


def validate(cfg: RunConfig) -> None:
    """Raise one CalibError naming the first bad value and what the key accepts."""
    from calib.estimators import list_estimators
    from calib.models import list_models
    from calib.pipeline.evaluate import METRICS
    from calib.semantic import BACKENDS
    from calib.tasks import list_tasks

    m = cfg.model
    if cfg.generations.path is not None or m.name == "none":
        from calib.pipeline.outside import validate_outside

        validate_outside(cfg)
    if not (m.name in list_models() or m.name == "none" or m.name.startswith(("gguf:", "hf:"))):
        _fail("model.name", m.name, f"use one of {', '.join(list_models())}, gguf:PATH or hf:PATH")
    if m.name in ("gguf:", "hf:"):
        _fail("model.name", m.name, f"give the path, e.g. model.name={m.name}/path/to/model")
    if m.name.startswith("gguf:") and not os.path.isfile(os.path.expanduser(m.name[5:])):
        _fail("model.name", m.name, "the GGUF file does not exist; check the path")
    if m.name.startswith("hf:") and not os.path.isdir(os.path.expanduser(m.name[3:])):
        _fail("model.name", m.name, "the HF model folder does not exist; check the path")
    _choice("model.dtype", m.dtype, ["auto", "float32", "bfloat16", "float16", "float64"])
    _choice("model.weights", m.weights, ["full", "int8"])

    t = cfg.task
    _choice("task.name", t.name, list_tasks())
    _positive("task.limit", t.limit, optional=True)
    _choice("task.split", t.split, [None, "calibration", "test"])
    _choice("task.prompt_style", t.prompt_style, [None, "chat", "completion"])
    _positive("task.n_shots", t.n_shots, minimum=0, optional=True)
    if t.template is not None:
        check_template(t.template)

    _positive("devices.data", cfg.devices.data, optional=True)
    _positive("devices.model", cfg.devices.model)
    _positive("distributed.num_processes", cfg.distributed.num_processes, optional=True)
    _positive("distributed.process_id", cfg.distributed.process_id, minimum=0, optional=True)
    _positive("distributed.timeout_s", cfg.distributed.timeout_s)

    d = cfg.decoding
    _positive("decoding.num_samples", d.num_samples, minimum=0)
    _positive("decoding.max_new_tokens", d.max_new_tokens)
    _positive("decoding.shard_size", d.shard_size)
    _positive("decoding.top_k", d.top_k, optional=True)
    _positive("decoding.revise_passes", d.revise_passes, minimum=0)
    from calib.decode.revise import CUES

    _choice("decoding.cue", d.cue, sorted(CUES))
    if not (math.isfinite(d.temperature) and d.temperature >= 0):
        _fail("decoding.temperature", d.temperature, "use a finite number >= 0 (0 samples greedily)")
    if d.top_p is not None and not 0 < d.top_p <= 1:
        _fail("decoding.top_p", d.top_p, "use a number in (0, 1] or null")
    if d.min_p is not None and not 0 <= d.min_p < 1:
        _fail("decoding.min_p", d.min_p, "use a number in [0, 1) or null")
    for stop in d.stop:
        if not isinstance(stop, str) or not stop:
            _fail(
                "decoding.stop", list(d.stop), "stop strings must be non-empty, e.g. ['\\n']; use [] for none"
            )

    e = cfg.estimators
    known = list_estimators()
    if not e.names:
        _fail("estimators.names", e.names, f"name at least one estimator, or [{ALL}]")
    _names("estimators.names", e.names, [ALL, *known])
    _names("estimators.exclude", e.exclude, known)
    _names("estimators.params", list(e.params), known)
    for name, params in e.params.items():
        if not isinstance(params, dict):
            _fail(f"estimators.params.{name}", params, "use a mapping of parameter names to values")
    _choice("estimators.semantic", e.semantic, sorted(BACKENDS))
    _choice("estimators.clustering", e.clustering, ["greedy", "components"])

    mc = cfg.metrics
    if not mc.names:
        _fail("metrics.names", mc.names, "name at least one metric")
    _names("metrics.names", mc.names, list(METRICS))
    _names("metrics.show", mc.show, mc.names)
    _positive("metrics.n_bins", mc.n_bins)
    _choice("metrics.binning", mc.binning, ["uniform", "quantile"])
    if mc.n_resamples == 1 or mc.n_resamples < 0:
        _fail("metrics.n_resamples", mc.n_resamples, "use 0 (no intervals) or an integer >= 2")
    if not 0 < mc.alpha < 1:
        _fail("metrics.alpha", mc.alpha, "use a number in (0, 1), e.g. 0.05 for 95% intervals")
    _positive("report.risk_coverage_top", cfg.report.risk_coverage_top)
    _names("report.formats", cfg.report.formats, ["png", "pdf", "svg"])
    validate_study(cfg.study)


def validate_study(s: StudyConfig) -> None:
    """The options of the study named by study.name (the other study's options are not read)."""
    _choice("study.name", s.name, [None, *STUDIES])
    if s.name == "scaling":
        from calib.decode.revise import CUES
        from calib.estimators import list_estimators

        g = s.scaling
        if not g.samples or min(g.samples) < 1 or list(g.samples) != sorted(set(g.samples)):
            _fail(
                "study.scaling.samples",
                list(g.samples),
                "give increasing sample counts >= 1, e.g. [1,2,4,8,16]",
            )
        _positive("study.scaling.passes", g.passes, minimum=0)
        _choice("study.scaling.cue", g.cue, sorted(CUES))
        _names("study.scaling.gates", g.gates, list_estimators())
        if any(not 0.0 <= f <= 1.0 for f in g.fractions):
            _fail("study.scaling.fractions", list(g.fractions), "shares of questions revised lie in [0, 1]")
    if s.name == "temperature_sweep":
        from calib.recalibrate import calibrator_kinds

        t = s.temperature_sweep
        if not t.temperatures or len(set(t.temperatures)) != len(t.temperatures):
            _fail(
                "study.temperature_sweep.temperatures",
                list(t.temperatures),
                "give distinct values, e.g. [0.7,1,1.3]",
            )
        if not all(math.isfinite(x) and x > 0 for x in t.temperatures):
            _fail("study.temperature_sweep.temperatures", list(t.temperatures), "use finite numbers > 0")
        if not 0 < t.calibration_fraction < 1:
            _fail(
                "study.temperature_sweep.calibration_fraction",
                t.calibration_fraction,
                "use a number in (0, 1)",
            )
        _names("study.temperature_sweep.calibrators", t.calibrators, list(calibrator_kinds()))
        _positive("study.temperature_sweep.max_reference_tokens", t.max_reference_tokens)
        _positive("study.temperature_sweep.top_logprobs", t.top_logprobs)
