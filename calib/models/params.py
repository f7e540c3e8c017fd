"""Checkpoint (transformers-named) tensors -> the JAX module tree: one regex table, shapes checked."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.errors import CalibError
from calib.models.config import ModelConfig
from calib.models.quant import check_weights, quantized_value
from calib.models.transformer import Transformer, stack_runs

Transform = Callable[[np.ndarray, ModelConfig], np.ndarray]

_T = lambda w, c: w.T  # noqa: E731  [out, in] -> [in, out]
_ID = lambda w, c: w  # noqa: E731
_Q = lambda w, c: w.T.reshape(c.embed_dim, c.num_heads, c.head_dim)  # noqa: E731
_KV = lambda w, c: w.T.reshape(c.embed_dim, c.num_kv_heads, c.head_dim)  # noqa: E731
_O = lambda w, c: w.T.reshape(c.num_heads, c.head_dim, c.embed_dim)  # noqa: E731
_QB = lambda w, c: w.reshape(c.num_heads, c.head_dim)  # noqa: E731
_KVB = lambda w, c: w.reshape(c.num_kv_heads, c.head_dim)  # noqa: E731

_SHARED = [
    (r"model\.embed_tokens\.weight", "embedding", _ID),
    (r"lm_head\.weight", "head", _T),
    (r"model\.norm\.weight", "final_norm.scale", _ID),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.weight", r"blocks.\1.attn.q", _Q),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.weight", r"blocks.\1.attn.k", _KV),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.weight", r"blocks.\1.attn.v", _KV),
    (r"model\.layers\.(\d+)\.self_attn\.o_proj\.weight", r"blocks.\1.attn.o", _O),
    (r"model\.layers\.(\d+)\.self_attn\.q_proj\.bias", r"blocks.\1.attn.q_bias", _QB),
    (r"model\.layers\.(\d+)\.self_attn\.k_proj\.bias", r"blocks.\1.attn.k_bias", _KVB),
    (r"model\.layers\.(\d+)\.self_attn\.v_proj\.bias", r"blocks.\1.attn.v_bias", _KVB),
    (r"model\.layers\.(\d+)\.self_attn\.q_norm\.weight", r"blocks.\1.attn.q_norm.scale", _ID),
    (r"model\.layers\.(\d+)\.self_attn\.k_norm\.weight", r"blocks.\1.attn.k_norm.scale", _ID),
    (r"model\.layers\.(\d+)\.mlp\.gate_proj\.weight", r"blocks.\1.mlp.gate", _T),
    (r"model\.layers\.(\d+)\.mlp\.up_proj\.weight", r"blocks.\1.mlp.up", _T),
    (r"model\.layers\.(\d+)\.mlp\.down_proj\.weight", r"blocks.\1.mlp.down", _T),
    (r"model\.layers\.(\d+)\.input_layernorm\.weight", r"blocks.\1.pre_attn_norm.scale", _ID),
]
PARAM_TABLE: dict[str, list[tuple[str, str, Transform]]] = {
    "llama": [
        *_SHARED,
        (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.pre_ffw_norm.scale", _ID),
    ],
    "gemma3": [
        *_SHARED,
        (r"model\.layers\.(\d+)\.post_attention_layernorm\.weight", r"blocks.\1.post_attn_norm.scale", _ID),
        (r"model\.layers\.(\d+)\.pre_feedforward_layernorm\.weight", r"blocks.\1.pre_ffw_norm.scale", _ID),
        (r"model\.layers\.(\d+)\.post_feedforward_layernorm\.weight", r"blocks.\1.post_ffw_norm.scale", _ID),
    ],
}


# tensors that do not change the text decoder's output: cached rotary tables, multimodal Gemma 3's vision parts
IGNORED = r"(.*\.rotary_emb\.inv_freq|(model\.)?(vision_tower|multi_modal_projector)\..*)"


def _variable(model: nnx.Module, path: str) -> nnx.Variable:
    node = model
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part, None)
        if node is None:
            raise KeyError(path)
    return node


def build_model(
    cfg: ModelConfig,
    tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
    source: str,
    dtype=jnp.float32,
    sharding: jax.sharding.Sharding | Callable[[str, tuple], jax.sharding.Sharding] | None = None,
    weights: str = "full",
) -> Transformer:
    """Place checkpoint tensors into a fresh (abstract, never randomly initialised) Transformer. tensors: a dict or
    a stream of (name, array) pairs in any float dtype; each is cast to `dtype` on the host and copied to the device
    before the next is read, so host memory holds one source tensor at a time beside the model. sharding: one for
    every tensor, or a function of (parameter path, shape) such as calib.devices.param_spec's rules. weights="int8"
    quantises the layer matrices and the head (quant.py) from the source tensor, also one at a time."""
    int8 = check_weights(weights) == "int8"
    model = Transformer(cfg, dtype=dtype, rngs=None)  # placeholders only: nothing is initialised or traced
    table = PARAM_TABLE[cfg.arch]
    host_dtype = np.dtype(jnp.dtype(dtype))  # bfloat16 is ml_dtypes.bfloat16, which numpy casts to and from
    filled = set()
    for name, value in tensors.items() if isinstance(tensors, Mapping) else tensors:
        for pattern, target, transform in table:  # noqa: B007 (used after break)
            if re.fullmatch(pattern, name):
                path = re.sub(pattern, target, name)
                break
        else:
            if re.fullmatch(IGNORED, name):
                continue
            raise CalibError(
                f"tensor {name} in {source} is not implemented by calib's {cfg.arch} model (it would change the "
                "computation); use a supported checkpoint"
            )
        try:
            var = _variable(model, path)
        except (KeyError, IndexError, AttributeError):
            raise CalibError(
                f"tensor {name} in {source} does not fit the {cfg.arch} config (no parameter {path})"
            ) from None
        array = transform(value, cfg) if value.size == int(np.prod(var.shape)) else value
        if tuple(array.shape) != tuple(var.shape):
            raise CalibError(
                f"tensor {name} in {source} has shape {tuple(value.shape)}, expected {tuple(var.shape)} "
                "for this config (wrong or corrupt checkpoint)"
            )
        quantized = quantized_value(path, array, dtype, sharding) if int8 else None
        if quantized is not None:
            var.set_value(quantized)
            del value, array, quantized
            filled.add(path)
            continue
        with np.errstate(
            over="ignore"
        ):  # rounds to nearest even like torch; float16 overflow is refused below
            arr = np.ascontiguousarray(array, dtype=host_dtype)
        if host_dtype == np.float16 and not np.isfinite(arr).all() and np.isfinite(array).all():
            raise CalibError(
                f"tensor {name} in {source} has values beyond float16's range (max |w| "
                f"{float(np.abs(np.asarray(array, np.float32)).max()):.3g} > 65504); load it as bfloat16 or float32"
            )
        placement = sharding(path, arr.shape) if callable(sharding) else sharding
        var.set_value(jax.device_put(arr, placement))  # one host -> device copy
        del value, array, arr  # the host copies go before the next tensor is read
        filled.add(path)
    missing = [p for p, _ in _abstract_paths(model) if p not in filled]
    if missing:
        raise CalibError(
            f"{source} lacks {len(missing)} tensors the {cfg.arch} model needs, e.g. {missing[0]} (incomplete checkpoint)"
        )
    return stack_runs(model) if int8 else model


def _abstract_paths(model: nnx.Module):
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and isinstance(var.get_value(), jax.ShapeDtypeStruct):
            yield ".".join(str(p) for p in path), var
