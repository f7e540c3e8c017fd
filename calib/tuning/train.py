"""Calibration-tuning with LoRA (Kapoor et al. 2024, "Large Language Models Must Be Taught to Know What They Don't
Know"): the model is trained to answer the P(True) question about its own graded answers correctly.

One example is (question, the model's answer, label). Its sequence is the P(True) prompt as the `p_true` estimator
builds it (chat template and all) followed by " (", and the loss is
    BCE(sigmoid(z_A - z_B), label) + kl_weight * KL(base || tuned) on the positions that predict the answer's tokens
inside the prompt, so the adapted model reads the answer as the base model does. z are the logits of "A" and "B"
after " (": the token where the estimator's " (A)" and " (B)" continuations part.

Training is deterministic for a seed (adapter init and each epoch's order come from jax.random keys of the seed) and
resumable: every `save_every` steps the adapters, the AdamW state and the step are written (safetensors + JSON,
atomically), and a restart continues from the last one with the same batches, so it ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import resource
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from calib.cache import atomic_dir
from calib.decode.planning import bucket_length
from calib.errors import CalibError
from calib.estimators.reflexive import p_true_prompt
from calib.progress import progress_bar
from calib.tuning.forward import embed, run_blocks
from calib.tuning.lora import LoraConfig, apply, init_adapters

log = logging.getLogger("calib")
MAX_KL_TOKENS = 16  # answer positions regularised per example (answers are short; longer ones are cut)
DECISIVE = " ("  # the P(True) continuations " (A)" / " (B)" share this token


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    batch_size: int = 8
    epochs: int = 1
    kl_weight: float = 1.0
    seed: int = 0
    save_every: int = 25  # steps between resumable checkpoints


@dataclasses.dataclass(frozen=True)
class Example:
    """One training row: the token ids, where the decision is read and which positions the KL covers."""

    ids: tuple[int, ...]
    label: float
    kl_first: int  # first position whose next-token distribution predicts an answer token
    kl_count: int


def build_examples(
    lm, questions: Sequence[str], answers: Sequence[str], labels: Sequence[float]
) -> list[Example]:
    """Tokenised P(True) rows for (question, answer, label); the prompt is wrapped as the runner wraps it."""
    if not (len(questions) == len(answers) == len(labels)):
        raise CalibError("calibration tuning: questions, answers and labels must have the same length")
    wrap = lm.format_prompt if lm.prompt_style == "chat" else (lambda p: p)
    decisive = lm.tokenizer(DECISIVE, add_special_tokens=False)["input_ids"]
    out = []
    for q, a, y in zip(questions, answers, labels):
        full = wrap(p_true_prompt(q, a))
        marker = "Proposed Answer: "
        head = full[: full.index(marker) + len(marker)]
        before = len(lm.encode(head))
        upto = len(lm.encode(full[: full.index(marker) + len(marker) + len(a.strip())]))
        ids = lm.encode(full) + list(decisive)
        count = max(0, min(upto - before, MAX_KL_TOKENS))
        out.append(Example(tuple(ids), float(y), max(before - 1, 0), count))
    return out


def choice_ids(lm) -> tuple[int, int]:
    """Token ids of "A" and "B" after " (" (checked: each must be one token)."""
    ids = []
    for letter in ("A", "B"):
        full = lm.tokenizer(f" ({letter})", add_special_tokens=False)["input_ids"]
        head = lm.tokenizer(DECISIVE, add_special_tokens=False)["input_ids"]
        if full[: len(head)] != head or len(full) < len(head) + 1:
            raise CalibError(
                f"calibration tuning: {lm.name}'s tokenizer does not split ' ({letter})' after ' ('"
            )
        ids.append(full[len(head)])
    return ids[0], ids[1]


def pad_batch(rows: Sequence[Example], batch_size: int) -> dict[str, np.ndarray]:
    """Right-padded arrays of one batch (padding rows have weight 0)."""
    t = bucket_length(max(len(r.ids) for r in rows))
    batch = {
        "ids": np.zeros((batch_size, t), np.int32),
        "last": np.zeros(batch_size, np.int32),
        "label": np.zeros(batch_size, np.float32),
        "weight": np.zeros(batch_size, np.float32),
        "kl_pos": np.zeros((batch_size, MAX_KL_TOKENS), np.int32),
        "kl_mask": np.zeros((batch_size, MAX_KL_TOKENS), np.float32),
    }
    for i, r in enumerate(rows):
        batch["ids"][i, : len(r.ids)] = r.ids
        batch["last"][i] = len(r.ids) - 1
        batch["label"][i] = r.label
        batch["weight"][i] = 1.0
        batch["kl_pos"][i, : r.kl_count] = np.arange(r.kl_first, r.kl_first + r.kl_count)
        batch["kl_mask"][i, : r.kl_count] = 1.0
    return batch


def _adapted(graphdef, state, adapters, scale):
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))  # fresh Variables: the base stays untouched
    apply(model, adapters, scale)
    return model


def loss_parts(adapters, graphdef, state, batch, *, scale, start, choices, kl_weight):
    """(loss, (bce, kl, z)) of one batch; z = logit("A") - logit("B") at the decisive position."""
    base = nnx.merge(graphdef, state)
    tuned = _adapted(graphdef, state, adapters, scale)
    ids = batch["ids"]
    b, t = ids.shape
    positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    low = run_blocks(base, embed(base, ids), positions, 0, start)
    n = len(base.blocks)
    h_tuned = tuned.final_norm(run_blocks(tuned, low, positions, start, n))
    h_base = jax.lax.stop_gradient(base.final_norm(run_blocks(base, low, positions, start, n)))
    rows = jnp.arange(b)
    head = tuned.project(h_tuned[rows, batch["last"]])  # [B, V]
    z = head[:, choices[0]] - head[:, choices[1]]
    w = batch["weight"]
    bce = jnp.sum(w * optax.sigmoid_binary_cross_entropy(z, batch["label"])) / jnp.maximum(w.sum(), 1.0)
    take = lambda h: h[rows[:, None], batch["kl_pos"]]  # noqa: E731  [B, M, D]
    log_t = jax.nn.log_softmax(tuned.project(take(h_tuned)), axis=-1)
    log_b = jax.lax.stop_gradient(jax.nn.log_softmax(base.project(take(h_base)), axis=-1))
    kl_tok = jnp.sum(jnp.exp(log_b) * (log_b - log_t), axis=-1)  # [B, M]
    mask = batch["kl_mask"] * w[:, None]
    kl = jnp.sum(kl_tok * mask) / jnp.maximum(mask.sum(), 1.0)
    return bce + kl_weight * kl, (bce, kl, z)


def make_step(optimizer, *, scale, start, choices, kl_weight):
    """A jitted (adapters, opt_state, batch) -> (adapters, opt_state, loss, bce, kl) for one model."""

    def step(adapters, opt_state, graphdef, state, batch):
        (loss, (bce, kl, _)), grads = jax.value_and_grad(loss_parts, has_aux=True)(
            adapters, graphdef, state, batch, scale=scale, start=start, choices=choices, kl_weight=kl_weight
        )
        updates, opt_state = optimizer.update(grads, opt_state, adapters)
        return optax.apply_updates(adapters, updates), opt_state, loss, bce, kl

    return jax.jit(step, static_argnums=(2,))


@functools.lru_cache(maxsize=8)
def _cached_step(cfg: TrainConfig, start: int, choices: tuple[int, int]):
    """One jitted step per configuration, so a resumed or repeated run in the same process compiles once."""
    return make_step(
        make_optimizer(cfg), scale=cfg.lora.scale, start=start, choices=choices, kl_weight=cfg.kl_weight
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)
    )


def batch_order(n: int, cfg: TrainConfig) -> list[list[int]]:
    """Every step's example indices: each epoch a permutation from fold_in(key(seed), epoch)."""
    steps = []
    for epoch in range(cfg.epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(cfg.seed), epoch + 1), n))
        steps += [perm[s : s + cfg.batch_size].tolist() for s in range(0, n, cfg.batch_size)]
    return steps


# ---- checkpoints --------------------------------------------------------------------------------------------------
def _flat(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_checkpoint(folder: Path, adapters, opt_state, step: int, meta: dict) -> None:
    """folder/step-<n>/ with adapters.safetensors, optimizer.safetensors and state.json, published together (all or
    nothing); older steps are removed after the new one is in place."""
    from calib.pipeline.store import write_arrays

    older = _steps(folder)
    with atomic_dir(folder / f"step-{step:07d}") as tmp:
        write_arrays(tmp / "adapters.safetensors", {k: np.asarray(v) for k, v in adapters.items()})
        write_arrays(tmp / "optimizer.safetensors", _flat(opt_state))
        (tmp / "state.json").write_text(json.dumps({"step": step, **meta}, sort_keys=True))
    for old in older:
        if old.name != f"step-{step:07d}":
            shutil.rmtree(old, ignore_errors=True)


def _steps(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())


def load_checkpoint(folder: Path, adapters_like, opt_like) -> tuple[dict, object, int] | None:
    from calib.pipeline.store import read_arrays

    steps = _steps(folder)
    if not steps:
        return None
    folder = steps[-1]
    state = json.loads((folder / "state.json").read_text())
    adapters = {k: _device(v) for k, v in read_arrays(folder / "adapters.safetensors").items()}
    if set(adapters) != set(adapters_like):
        raise CalibError(
            f"checkpoint {folder}: its adapters do not match this configuration; delete it to restart"
        )
    flat = read_arrays(folder / "optimizer.safetensors")
    paths, treedef = jax.tree_util.tree_flatten_with_path(opt_like)
    # safetensors writes a 0-d array (AdamW's step count) as shape [1]: give every leaf its own shape back
    leaves = [
        _device(flat[jax.tree_util.keystr(p)].astype(leaf.dtype).reshape(leaf.shape)) for p, leaf in paths
    ]
    return adapters, jax.tree_util.tree_unflatten(treedef, leaves), int(state["step"])


def _device(array: np.ndarray) -> jax.Array:
    return jnp.asarray(np.array(array, copy=True))


# ---- the loop -----------------------------------------------------------------------------------------------------
def train_lora(
    lm,
    examples: Sequence[Example],
    cfg: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    max_steps: int | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """(adapters, record) after cfg.epochs over the examples; resumes from checkpoint_dir when it holds one.
    max_steps stops early (the run can be resumed later from its checkpoint)."""
    if not examples:
        raise CalibError("calibration tuning: no training examples")
    graphdef, state = lm.graphdef_and_state
    n_layers = len(lm.model.blocks)
    start = cfg.lora.first_layer(n_layers)
    adapters = init_adapters(lm.model, cfg.lora, jax.random.key(cfg.seed))
    optimizer = make_optimizer(cfg)
    opt_state = optimizer.init(adapters)
    first_step = 0
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if folder is not None:
        loaded = load_checkpoint(folder, adapters, opt_state)
        if loaded is not None:
            adapters, opt_state, first_step = loaded
            log.info("calibration tuning: resuming at step %d from %s", first_step, folder)
    step_fn = _cached_step(cfg, start, choice_ids(lm))
    order = batch_order(len(examples), cfg)
    last = len(order) if max_steps is None else min(len(order), first_step + max_steps)
    history, started = [], time.perf_counter()
    bar = progress_bar(
        range(first_step, last), "calibration tuning", enabled=progress, unit="step", total=last - first_step
    )
    for step in bar:
        batch = pad_batch([examples[i] for i in order[step]], cfg.batch_size)
        adapters, opt_state, loss, bce, kl = step_fn(adapters, opt_state, graphdef, state, batch)
        history.append((float(loss), float(bce), float(kl)))
        if folder is not None and ((step + 1) % cfg.save_every == 0 or step + 1 == last):
            save_checkpoint(folder, adapters, opt_state, step + 1, {"steps": len(order)})
    record = {
        "steps": len(order),
        "steps_run": last - first_step,
        "first_step": first_step,
        "seconds": time.perf_counter() - started,
        "loss": [h[0] for h in history],
        "bce": [h[1] for h in history],
        "kl": [h[2] for h in history],
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "finished": last == len(order),
    }
    return {k: np.asarray(v) for k, v in adapters.items()}, record


def tuned_scores(
    lm, adapters, examples: Sequence[Example], cfg: LoraConfig, batch_size: int = 8
) -> np.ndarray:
    """z = logit(A) - logit(B) of each example under base + adapters (the training objective's input)."""
    graphdef, state = lm.graphdef_and_state
    start = cfg.first_layer(len(lm.model.blocks))
    fn = jax.jit(
        lambda a, st, b: loss_parts(
            a, graphdef, st, b, scale=cfg.scale, start=start, choices=choice_ids(lm), kl_weight=0.0
        )[1][2]
    )
    out = []
    jadapters = {k: jnp.asarray(v) for k, v in adapters.items()}
    for s in range(0, len(examples), batch_size):
        rows = list(examples[s : s + batch_size])
        out.append(np.asarray(fn(jadapters, state, pad_batch(rows, batch_size)))[: len(rows)])
    return np.concatenate(out)
