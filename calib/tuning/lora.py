"""LoRA adapters for the calib Transformer, applied to the weights rather than wired into the layers.

An adapter on a weight W (attention q, k, v, o; MLP gate, up, down) is a pair A [in, r], B [r, out], and the adapted
weight is W + (A @ B) * alpha / r, reshaped to W's shape (the first axis of W is its input side: D for q/k/v/gate/up,
N*H for o, F for down). `apply` writes that sum into a freshly merged module inside the jitted loss, and `merged_lm`
writes it once into a copy of a LanguageModel for inference, so the model files (layers.py, transformer.py) are not
touched. B starts at zero, so a new adapter changes nothing: W + 0 is W bit for bit.

Only the last `layers` blocks get adapters: the blocks below them are frozen, so their output is the base model's
and is computed once per step for both the tuned and the base (KL) pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.errors import CalibError

TARGETS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Which matrices get adapters, their rank and scale."""

    rank: int = 8
    alpha: float = 16.0
    layers: int | None = None  # adapters on the last `layers` blocks; None: every block
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise CalibError(f"lora.rank must be a positive integer, got {self.rank!r}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise CalibError(f"lora.targets: {unknown or '(none)'} not in {', '.join(TARGETS)}")
        object.__setattr__(self, "targets", tuple(self.targets))

    @property
    def scale(self) -> float:
        return float(self.alpha) / self.rank

    def first_layer(self, num_layers: int) -> int:
        if self.layers is None:
            return 0
        if not isinstance(self.layers, int) or not 1 <= self.layers <= num_layers:
            raise CalibError(
                f"lora.layers must be 1..{num_layers} (or null for every block), got {self.layers!r}"
            )
        return num_layers - self.layers


def _weight(block: nnx.Module, target: str) -> nnx.Param:
    part, name = target.split(".")
    return getattr(getattr(block, part), name)


def _in_out(shape: tuple[int, ...], target: str) -> tuple[int, int]:
    """(fan-in, fan-out) of a weight as a matrix: o is [N, H, D] -> (N*H, D); q is [D, N, H] -> (D, N*H)."""
    if target == "attn.o":
        return shape[0] * shape[1], shape[2]
    return shape[0], math.prod(shape[1:])


def init_adapters(model: nnx.Module, cfg: LoraConfig, key: jax.Array) -> dict[str, jax.Array]:
    """{"<layer>.<target>.a": [in, r] ~ N(0, 1/in), "<layer>.<target>.b": zeros [r, out]} in float32."""
    adapters = {}
    start = cfg.first_layer(len(model.blocks))
    for layer in range(start, len(model.blocks)):
        for target in cfg.targets:
            fan_in, fan_out = _in_out(_weight(model.blocks[layer], target)[...].shape, target)
            key, sub = jax.random.split(key)
            adapters[f"{layer}.{target}.a"] = (
                jax.random.normal(sub, (fan_in, cfg.rank), jnp.float32) * fan_in**-0.5
            )
            adapters[f"{layer}.{target}.b"] = jnp.zeros((cfg.rank, fan_out), jnp.float32)
    return adapters


def delta(a: jax.Array, b: jax.Array, shape: tuple[int, ...], scale: float, dtype) -> jax.Array:
    """(A @ B) * scale reshaped to the weight's shape, in the weight's dtype."""
    return ((a @ b) * scale).reshape(shape).astype(dtype)


def apply(model: nnx.Module, adapters: Mapping[str, jax.Array], scale: float) -> None:
    """Add every adapter's delta to its weight in place (on a module merged for this call; traced or not)."""
    for name in {n.rsplit(".", 1)[0] for n in adapters}:
        layer, target = name.split(".", 1)
        param = _weight(model.blocks[int(layer)], target)
        w = param[...]
        param[...] = w + delta(adapters[f"{name}.a"], adapters[f"{name}.b"], w.shape, scale, w.dtype)


def check_adapters(model: nnx.Module, adapters: Mapping[str, np.ndarray], where: str) -> None:
    """Every adapter names a block and matrix of this model and has the matching shapes."""
    for name in adapters:
        try:
            layer, target, side = name.split(".", 1)[0], name.split(".", 1)[1].rsplit(".", 1)[0], name[-1]
            shape = _weight(model.blocks[int(layer)], target)[...].shape
        except (ValueError, IndexError, AttributeError):
            raise CalibError(f"{where}: adapter {name!r} has no matching weight in this model") from None
        fan_in, fan_out = _in_out(shape, target)
        got = tuple(adapters[name].shape)
        if (side == "a" and got[0] != fan_in) or (side == "b" and got[1] != fan_out):
            raise CalibError(
                f"{where}: adapter {name!r} has shape {got}, which does not fit the weight {shape}"
            )


def merged_lm(lm, adapters: Mapping[str, np.ndarray], scale: float, tag: str):
    """A LanguageModel whose weights are W + delta (a copy; `lm` is unchanged), with a digest naming the adapter."""
    from calib.models.lm import LanguageModel

    graphdef, state = nnx.split(lm.model)
    model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
    check_adapters(model, adapters, f"adapter {tag}")
    apply(model, {k: jnp.asarray(v) for k, v in adapters.items()}, scale)
    return LanguageModel(
        name=f"{lm.name}+{tag}",
        config=lm.config,
        model=model,
        tokenizer_factory=lm.tokenizer_factory,
        digest=f"{lm.digest}+{tag}",
        prompt_style=lm.prompt_style,
        cache_dir=lm.cache_dir,
        mesh=lm.mesh,
    )


def parameter_count(adapters: Mapping[str, jax.Array]) -> int:
    return int(sum(np.prod(v.shape) for v in adapters.values()))
