"""LanguageModel: a JAX Transformer with its tokenizer, config and how it wants to be prompted."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.devices import constrain, data_size, put_rows
from calib.errors import CalibError
from calib.models.config import ModelConfig
from calib.models.transformer import Transformer


@dataclass(eq=False)
class LanguageModel:
    """What every stage needs of a model. `digest` identifies the weights (artifact keys depend on it)."""

    name: str
    config: ModelConfig
    model: Transformer
    tokenizer_factory: Callable[
        [], object
    ]  # builds the transformers tokenizer on first use (it can take seconds)
    digest: str
    prompt_style: Literal["chat", "completion"] = "completion"
    cache_dir: str | None = None
    mesh: jax.sharding.Mesh | None = None
    weights: str = "full"  # full | int8 (layer matrices and head quantised; quant.py)
    _split: tuple = field(default=None, init=False, repr=False)

    @functools.cached_property
    def tokenizer(self):
        """A transformers tokenizer, loaded lazily: loading weights does not wait for a 262k-entry vocabulary."""
        return self.tokenizer_factory()

    @property
    def graphdef_and_state(self) -> tuple:
        """(graphdef, state) of the module, split once: the jitted functions take the state as an argument."""
        if self._split is None:
            self._split = nnx.split(self.model)
        return self._split

    @property
    def dtype(self):
        """The compute dtype (int8 weights dequantize to it)."""
        return self.model.dtype

    @property
    def dtype_name(self) -> str:
        """The weights' dtype as loaded ("float32", "bfloat16", ...; never "auto"): what artifact keys record."""
        return jnp.dtype(self.dtype).name

    @property
    def eos_ids(self) -> tuple[int, ...]:
        ids = set(self.config.eos_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return tuple(sorted(ids))

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of a prompt. Completion-style models get their BOS token when the tokenizer adds one."""
        if add_special_tokens is None:
            add_special_tokens = self.prompt_style == "completion"
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids) -> str:
        return self.tokenizer.decode(list(map(int, ids)), skip_special_tokens=True)

    def logits(self, ids) -> np.ndarray:
        """Teacher-forced logits: int [B, T] (no padding) -> float32 numpy [B, T, V] (float64 for float64 weights)."""
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[1] == 0:
            raise CalibError(f"lm.logits expects int token ids of shape [batch, time], got shape {ids.shape}")
        if ids.shape[1] > self.config.max_context:
            raise CalibError(
                f"{ids.shape[1]} tokens exceed {self.name}'s context of {self.config.max_context}"
            )
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise CalibError(f"token ids must lie in [0, {self.config.vocab_size}) for {self.name}")
        graphdef, state = self.graphdef_and_state
        mesh = self.mesh if self.mesh is not None and self.mesh.devices.size > 1 else None
        n = ids.shape[0]
        d = data_size(mesh)
        padded = np.concatenate([ids, np.repeat(ids[-1:], -n % d, axis=0)])  # rows split evenly over "data"
        return np.asarray(_forward(graphdef, state, put_rows(jnp.asarray(padded, jnp.int32), mesh), mesh))[:n]

    def format_prompt(self, user_text: str, system: str | None = None) -> str:
        """Wrap a question in the chat template (instruct models) or return it unchanged (base models)."""
        if self.prompt_style != "chat":
            return user_text
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user_text}
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _forward(graphdef, state, ids: jax.Array, mesh=None) -> jax.Array:
    """Logits [B, T, V], rows split over "data" (each device runs its own rows)."""
    return constrain(nnx.merge(graphdef, state)(ids), mesh, "data")
