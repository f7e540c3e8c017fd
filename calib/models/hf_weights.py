"""Hugging Face checkpoint folders: config.json -> ModelConfig, (sharded) *.safetensors -> state dict."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from calib.errors import CalibError
from calib.models.config import ModelConfig

LLAMA_TYPES = {"llama", "mistral", "qwen2", "smollm3"}
GEMMA3_TYPES = {"gemma3_text", "gemma3"}


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


def _rope_type(params: dict, path: str) -> str | None:
    value = params.get("rope_type", params.get("type", "default"))
    if value is not None and not isinstance(value, str):
        raise _fail(path, "rope_type", value, "a RoPE type name")
    return value


def _rope_bases(cfg: dict, path: str) -> tuple[float, float]:
    """(global, local) RoPE bases from either the transformers 4 keys or transformers 5's rope_parameters."""
    params = _dict(cfg, "rope_parameters", path)
    scaling = _dict(cfg, "rope_scaling", path)
    local_default = _number(cfg, "rope_local_base_freq", path, 10_000.0)
    if "full_attention" in params:  # per-layer-type dict (Gemma 3 in transformers 5)
        full = _dict(params, "full_attention", f"{path} rope_parameters")
        local = _dict(params, "sliding_attention", f"{path} rope_parameters")
        kinds = {_rope_type(full, path), _rope_type(local, path)}
        base = _number(full, "rope_theta", f"{path} rope_parameters.full_attention", 10_000.0)
        base_local = _number(local, "rope_theta", f"{path} rope_parameters.sliding_attention", local_default)
    else:
        kinds = {_rope_type(params, path) if "rope_type" in params else _rope_type(scaling, path)}
        theta = params.get("rope_theta", cfg.get("rope_theta"))
        base = _number({"rope_theta": theta}, "rope_theta", path, 10_000.0)
        base_local = local_default
    if kinds - {"default", None}:
        raise CalibError(
            f"unsupported RoPE scaling {sorted(map(str, kinds))} in {path}: calib implements plain RoPE only"
        )
    return base, base_local


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
    base, base_local = _rope_bases(cfg, path)
    eos = cfg.get("eos_token_id")
    eos_list = eos if isinstance(eos, list) else ([] if eos is None else [eos])
    eos_ids = tuple(_token_id({"eos_token_id": e}, "eos_token_id", path) for e in eos_list)
    pad = _token_id(cfg, "pad_token_id", path)
    for key in ("tie_word_embeddings", "attention_bias"):
        if cfg.get(key) is not None and not isinstance(cfg[key], bool):
            raise _fail(path, key, cfg[key], "true or false")
    common = dict(
        vocab_size=_int(cfg, "vocab_size", path),
        embed_dim=embed,
        num_layers=_int(cfg, "num_hidden_layers", path),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        ffw_dim=_int(cfg, "intermediate_size", path),
        rope_base=base,
        norm_eps=_number(cfg, "rms_norm_eps", path, 1e-6),
        max_context=_int(cfg, "max_position_embeddings", path, default=8192),
        bos_id=_token_id(cfg, "bos_token_id", path),
        eos_ids=eos_ids,
        pad_id=pad if pad is not None else (eos_ids[0] if eos_ids else 0),
        tie_embeddings=cfg.get("tie_word_embeddings", True),
    )
    if kind in GEMMA3_TYPES:
        if cfg.get("final_logit_softcapping") or cfg.get("attn_logit_softcapping"):
            raise CalibError(f"soft-capping in {path} is not supported by calib's Gemma 3")
        window = cfg.get("sliding_window", 512)  # an explicit null means no sliding window
        types = cfg.get("layer_types")
        if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
            raise _fail(path, "layer_types", types, "a list of layer type names")
        pattern = (
            types.index("full_attention") + 1
            if types and "full_attention" in types
            else _int(cfg, "sliding_window_pattern", path, default=6)
        )
        return ModelConfig(
            arch="gemma3",
            **common,
            rope_base_local=base_local,
            sliding_window=None if window is None else _int(cfg, "sliding_window", path),
            sliding_pattern=pattern,
            qk_norm=True,
            sandwich_norms=True,
            norm_plus_one=True,
            activation="gelu_tanh",
            scale_embeddings=True,
            query_scale=_number(cfg, "query_pre_attn_scalar", path, float(head_dim)) ** -0.5,
        )
    if cfg.get("hidden_act", "silu") != "silu":
        raise CalibError(
            f"unsupported hidden_act {cfg.get('hidden_act')!r} in {path}: Llama-family models use silu"
        )
    return ModelConfig(arch="llama", qkv_bias=cfg.get("attention_bias", kind == "qwen2") is True, **common)


_ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
}
_ITEM_BYTES |= {"I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def safetensors_header(file: str) -> dict[str, dict]:
    """The tensor table of a safetensors file ({name: {dtype, shape, data_offsets}}), checked against the file's
    size before any tensor is read, so a damaged or foreign file is one line naming it."""

    def bad(what: str) -> CalibError:
        return CalibError(
            f"{file} is not a valid safetensors file ({what}); re-download it or re-save the model with "
            "save_pretrained(safe_serialization=True)"
        )

    try:
        size = os.path.getsize(file)
        with open(file, "rb") as f:
            prefix = f.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 2 <= n <= min(size - 8, _MAX_HEADER):
                raise bad(f"header length {n} does not fit a file of {size} bytes")
            raw = f.read(n)
    except OSError as err:
        raise CalibError(f"cannot read {file}: {err.strerror or err}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_bytes = size - 8 - n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise bad("__metadata__ is not a string-to-string map")
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} has no dtype/shape/data_offsets entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _ITEM_BYTES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        ints = lambda v: isinstance(v, list) and all(type(x) is int and x >= 0 for x in v)  # noqa: E731
        if not ints(shape):
            raise bad(f"tensor {name!r} has shape {shape!r}")
        if not ints(offsets) or len(offsets) != 2 or not offsets[0] <= offsets[1] <= data_bytes:
            raise bad(f"tensor {name!r} has data_offsets {offsets!r} outside the {data_bytes} data bytes")
        if offsets[1] - offsets[0] != int(np.prod(shape, dtype=object)) * _ITEM_BYTES[dtype]:
            raise bad(f"tensor {name!r} of shape {shape} and dtype {dtype} does not match its data_offsets")
        tensors[name] = info
    return tensors


def hf_state_dict(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of every *.safetensors shard in the folder, as float32 numpy, names without a wrapper prefix.
    Every shard's header is checked before any tensor is read."""
    from safetensors import SafetensorError, safe_open

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise CalibError(
            f"no *.safetensors files in {folder}: save the model with save_pretrained(safe_serialization=True)"
        )
    for file in files:
        safetensors_header(file)
    out = {}
    for file in files:
        try:  # through torch so bfloat16 checkpoints load too
            with safe_open(file, framework="pt") as reader:
                for name in reader.keys():  # noqa: SIM118 (safe_open is not a dict)
                    value = reader.get_tensor(name).float().numpy()
                    out[
                        name.replace("model.language_model.", "model.").replace(
                            "language_model.model.", "model."
                        )
                    ] = value
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
            raise CalibError(
                f"cannot read {file}: {type(err).__name__}: {err} (corrupt or truncated safetensors file; "
                "re-download it)"
            ) from None
    return out
