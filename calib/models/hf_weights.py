"""Hugging Face checkpoint folders: config.json -> ModelConfig, (sharded) *.safetensors -> state dict."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import numpy as np

from calib.errors import CalibError
from calib.models.config import LAYER_TYPES, ModelConfig, llama3_rope_factors, sliding_every
from calib.models.safetensors_io import read_safetensors

QWEN_TYPES = {"qwen2", "qwen3"}
LLAMA_TYPES = {"llama", "mistral"} | QWEN_TYPES
GEMMA3_TYPES = {"gemma3_text", "gemma3"}
ROPE_TYPES = {"default", "linear", "llama3"}
# config keys whose non-default value changes the computation in a way calib does not implement
REFUSED_KEYS = {
    "final_logit_softcapping": "soft-capping",
    "attn_logit_softcapping": "soft-capping",
    "num_local_experts": "mixture of experts",
    "num_experts": "mixture of experts",
    "n_routed_experts": "mixture of experts",
    "mlp_bias": "MLP biases",
    "use_bidirectional_attention": "bidirectional attention",
    "no_rope_layers": "layers without RoPE",
}


def _fail(path: str, key: str, value: object, want: str) -> CalibError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return CalibError(
        f"{path}: {key} is {shown}, expected {want}; fix that field (or re-save the model with save_pretrained)"
    )


def _int(cfg: dict, key: str, path: str, default: object = None, minimum: int = 1) -> int:
    """An integer field (JSON true/false and 4.0 are not integers): required when default is None."""
    value = cfg.get(key)
    value = default if value is None else value
    if value is None:
        raise CalibError(
            f"{path} lacks {key}: an HF model config needs it (re-save the model with save_pretrained)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, key, value, "a positive integer" if minimum == 1 else f"an integer >= {minimum}")
    return value


def _number(cfg: dict, key: str, path: str, default: float) -> float:
    """A positive finite float field."""
    value = cfg.get(key)
    value = default if value is None else value
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
        raise _fail(path, key, value, "a positive number")
    return float(value)


def _dict(cfg: dict, key: str, path: str) -> dict:
    value = cfg.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, key, value, "a JSON object")
    return value


def _token_id(cfg: dict, key: str, path: str) -> int | None:
    value = cfg.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise _fail(path, key, value, "a token id (an integer >= 0) or null")
    return value


def _rope_type(params: dict, path: str) -> str:
    value = params.get("rope_type", params.get("type")) or "default"
    if not isinstance(value, str):
        raise _fail(path, "rope_type", value, "a RoPE type name")
    if value not in ROPE_TYPES:
        raise CalibError(
            f"unsupported RoPE scaling {value!r} in {path}: calib implements {sorted(ROPE_TYPES)}; "
            "use a model without it"
        )
    return value


def _scaled_rope(params: dict, base: float, head_dim: int, path: str) -> dict:
    """ModelConfig fields of one RoPE parameter set: the linear factor or Llama 3's per-frequency factors."""
    kind = _rope_type(params, path)
    if kind == "linear":
        return {"rope_factor": _number(params, "factor", f"{path} rope linear", 0.0)}
    if kind == "llama3":
        where = f"{path} rope llama3"
        low, high = (
            _number(params, "low_freq_factor", where, 1.0),
            _number(params, "high_freq_factor", where, 4.0),
        )
        if high <= low:
            raise _fail(where, "high_freq_factor", high, f"a number above low_freq_factor ({low})")
        factor = _number(params, "factor", where, 0.0)
        original = _int(params, "original_max_position_embeddings", where)
        factors = llama3_rope_factors(base, head_dim, factor, low, high, original)
        return {"rope_freq_factors": factors}
    return {}


def _rope(cfg: dict, head_dim: int, path: str) -> dict:
    """RoPE fields from transformers 4 keys (rope_theta, rope_scaling, rope_local_base_freq) or transformers 5's
    rope_parameters (flat, or per layer type for Gemma 3). Scaling applies to the global layers only."""
    factor = cfg.get("partial_rotary_factor")
    if factor is not None and factor != 1:
        raise _fail(path, "partial_rotary_factor", factor, "1 (calib rotates the whole head)")
    params = _dict(cfg, "rope_parameters", path)
    local_default = _number(cfg, "rope_local_base_freq", path, 10_000.0)
    if "full_attention" in params:  # per-layer-type dict (Gemma 3 in transformers 5)
        full = _dict(params, "full_attention", f"{path} rope_parameters")
        local = _dict(params, "sliding_attention", f"{path} rope_parameters")
        if _rope_type(local, path) != "default":
            raise CalibError(
                f"RoPE scaling on sliding layers in {path} is not implemented (Gemma 3 scales global layers only)"
            )
        base = _number(full, "rope_theta", f"{path} rope_parameters.full_attention", 10_000.0)
        base_local = _number(local, "rope_theta", f"{path} rope_parameters.sliding_attention", local_default)
    else:
        full = params if params else _dict(cfg, "rope_scaling", path)
        theta = params.get("rope_theta", cfg.get("rope_theta"))
        base = _number({"rope_theta": theta}, "rope_theta", path, 10_000.0)
        base_local = local_default
    return {"rope_base": base, "rope_base_local": base_local, **_scaled_rope(full, base, head_dim, path)}


def _layer_types(cfg: dict, kind: str, layers: int, path: str) -> tuple[str, ...] | None:
    """layer_types as given; older configs: Qwen's use_sliding_window/max_window_layers, Gemma 3's pattern."""
    types = cfg.get("layer_types")
    if types is not None:
        if not (isinstance(types, list) and all(isinstance(t, str) for t in types)) or len(types) != layers:
            raise _fail(path, "layer_types", types, f"a list of {layers} layer type names")
        bad = sorted(set(types) - set(LAYER_TYPES))
        if bad:
            raise CalibError(
                f"layer type {bad[0]!r} in {path} is not implemented: calib runs {list(LAYER_TYPES)}"
            )
        return tuple(types)
    if kind in QWEN_TYPES and cfg.get("use_sliding_window"):
        first = _int(cfg, "max_window_layers", path, minimum=0)
        return tuple("sliding_attention" if i >= first else "full_attention" for i in range(layers))
    if kind in GEMMA3_TYPES:
        return sliding_every(layers, _int(cfg, "sliding_window_pattern", path, default=6))
    return None


def _read_config(path: str) -> dict:
    """config.json as a dict (the text config of a multimodal model), decoded strictly as UTF-8."""
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as err:
        raise CalibError(f"cannot read {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise CalibError(
            f"{path} is not UTF-8 (byte offset {err.start}: {err.reason}); config.json must be UTF-8 JSON, "
            "re-save it with save_pretrained"
        ) from None
    except json.JSONDecodeError as err:
        raise CalibError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}); "
            "fix the file or re-save it with save_pretrained"
        ) from None
    except RecursionError:
        raise CalibError(
            f"{path}: JSON nested too deeply; fix the file or re-save it with save_pretrained"
        ) from None
    if not isinstance(cfg, dict):
        raise CalibError(
            f"{path} holds a JSON {type(cfg).__name__}, expected an object of model settings "
            "(re-save the model with save_pretrained)"
        )
    text = _dict(cfg, "text_config", path) or cfg
    kind = text.get("model_type", cfg.get("model_type"))
    return text | {"model_type": kind}


def hf_config(folder: str) -> ModelConfig:
    """Read config.json (text config of multimodal Gemma 3 too) into a ModelConfig; every field it uses is
    checked first, so a malformed file is one line naming the field rather than a KeyError or ZeroDivisionError."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise CalibError(
            f"no config.json in {folder}: an HF model folder needs config.json, *.safetensors and tokenizer files"
        )
    cfg = _read_config(path)
    kind = cfg.get("model_type")
    if not isinstance(kind, str) or kind not in LLAMA_TYPES | GEMMA3_TYPES:
        raise CalibError(
            f"unsupported model_type {kind!r} in {path}: calib runs {sorted(LLAMA_TYPES | GEMMA3_TYPES)}"
        )
    embed = _int(cfg, "hidden_size", path)
    heads = _int(cfg, "num_attention_heads", path)
    kv_heads = _int(cfg, "num_key_value_heads", path, default=heads)
    if heads % kv_heads:
        raise CalibError(
            f"{path}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv_heads}); "
            "fix one of them"
        )
    if cfg.get("head_dim") is None and embed % heads:
        raise CalibError(
            f"{path}: hidden_size ({embed}) is not a multiple of num_attention_heads ({heads}) and head_dim is "
            "not set; add head_dim"
        )
    head_dim = _int(cfg, "head_dim", path, default=embed // heads)
    for key, what in REFUSED_KEYS.items():
        value = cfg.get(key)
        if value not in (None, False, 0, []):
            raise CalibError(
                f"{what} ({key}: {value!r}) in {path} is not implemented by calib; use another model"
            )
    if kind in GEMMA3_TYPES:
        act_key, act_want = "hidden_activation", "gelu_pytorch_tanh"
    else:
        act_key, act_want = "hidden_act", "silu"
    if cfg.get(act_key, act_want) != act_want:
        raise _fail(path, act_key, cfg.get(act_key), f"{act_want!r} (the only activation this family runs)")
    eos = cfg.get("eos_token_id")
    eos_list = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    eos_ids = tuple(_token_id({"eos_token_id": e}, "eos_token_id", path) for e in eos_list)
    pad = _token_id(cfg, "pad_token_id", path)
    for key in ("tie_word_embeddings", "attention_bias", "use_sliding_window"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise _fail(path, key, cfg[key], "true or false")
    if cfg.get("attention_bias") and kind != "qwen2":
        raise CalibError(
            f"attention_bias in {path} adds an output-projection bias, which calib does not implement"
        )
    layers = _int(cfg, "num_hidden_layers", path)
    types = _layer_types(cfg, kind, layers, path)
    window = None
    if (types and "sliding_attention" in types) or (
        kind == "mistral" and cfg.get("sliding_window") is not None
    ):
        window = _int(cfg, "sliding_window", path)
    common = dict(
        vocab_size=_int(cfg, "vocab_size", path),
        embed_dim=embed,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        ffw_dim=_int(cfg, "intermediate_size", path),
        norm_eps=_number(cfg, "rms_norm_eps", path, 1e-6),
        max_context=_int(cfg, "max_position_embeddings", path, default=8192),
        bos_id=_token_id(cfg, "bos_token_id", path),
        eos_ids=eos_ids,
        pad_id=pad if pad is not None else (eos_ids[0] if eos_ids else 0),
        tie_embeddings=cfg.get("tie_word_embeddings", True),
        **_rope(cfg, head_dim, path),
    )
    if kind in GEMMA3_TYPES:
        scalar = _number(cfg, "query_pre_attn_scalar", path, float(head_dim))
        return ModelConfig.gemma3(
            **common, sliding_window=window, layer_types=types, query_pre_attn_scalar=scalar
        )
    if kind == "mistral":
        return ModelConfig.mistral(**common, sliding_window=window)
    sliding = dict(sliding_window=window, layer_types=types or ())
    return {"llama": ModelConfig.llama, "qwen2": ModelConfig.qwen2, "qwen3": ModelConfig.qwen3}[kind](
        **common, **sliding
    )


def hf_tensors(folder: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every tensor of every *.safetensors shard in the folder, one at a time in the file's own
    dtype (bfloat16 as ml_dtypes.bfloat16), largest first, names without a wrapper prefix. Every shard's header is
    checked before this returns, so a damaged file fails before any tensor is read."""
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise CalibError(
            f"no *.safetensors files in {folder}: save the model with save_pretrained(safe_serialization=True)"
        )
    stream = read_safetensors(files)
    return ((_strip(name), value) for name, value in stream)


def _strip(name: str) -> str:
    return name.replace("model.language_model.", "model.").replace("language_model.model.", "model.")


def hf_state_dict(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of the folder as float32 numpy (tests and tools; loading streams hf_tensors instead)."""
    return {name: np.asarray(value, np.float32) for name, value in hf_tensors(folder)}
