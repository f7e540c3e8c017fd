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


def _rope_bases(cfg: dict, path: str) -> tuple[float, float]:
    """(global, local) RoPE bases from either the transformers 4 keys or transformers 5's rope_parameters."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    if "full_attention" in params:  # per-layer-type dict (Gemma 3 in transformers 5)
        full, local = params["full_attention"], params.get("sliding_attention", {})
        kinds = {full.get("rope_type", "default"), local.get("rope_type", "default")}
        base, base_local = (
            full.get("rope_theta"),
            local.get("rope_theta", cfg.get("rope_local_base_freq", 10_000.0)),
        )
    else:
        kinds = {params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))}
        base, base_local = (
            params.get("rope_theta", cfg.get("rope_theta")),
            cfg.get("rope_local_base_freq", 10_000.0),
        )
    if kinds - {"default", None}:
        raise CalibError(
            f"unsupported RoPE scaling {sorted(map(str, kinds))} in {path}: calib implements plain RoPE only"
        )
    return float(base if base is not None else 10_000.0), float(base_local)


def hf_config(folder: str) -> ModelConfig:
    """Read config.json (text config of multimodal Gemma 3 too) into a ModelConfig."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise CalibError(
            f"no config.json in {folder}: an HF model folder needs config.json, *.safetensors and tokenizer files"
        )
    try:
        with open(path) as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise CalibError(f"cannot parse {path}: {err}") from None
    cfg = cfg.get("text_config", cfg) | {
        "model_type": cfg.get("text_config", cfg).get("model_type", cfg.get("model_type"))
    }
    kind = cfg.get("model_type")
    if kind not in LLAMA_TYPES | GEMMA3_TYPES:
        raise CalibError(
            f"unsupported model_type {kind!r} in {path}: calib runs {sorted(LLAMA_TYPES | GEMMA3_TYPES)}"
        )
    heads = cfg["num_attention_heads"]
    base, base_local = _rope_bases(cfg, path)
    eos = cfg.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    common = dict(
        vocab_size=cfg["vocab_size"],
        embed_dim=cfg["hidden_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads", heads),
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        ffw_dim=cfg["intermediate_size"],
        rope_base=base,
        norm_eps=cfg.get("rms_norm_eps", 1e-6),
        max_context=cfg.get("max_position_embeddings", 8192),
        bos_id=cfg.get("bos_token_id"),
        eos_ids=eos_ids,
        pad_id=cfg.get("pad_token_id")
        if cfg.get("pad_token_id") is not None
        else (eos_ids[0] if eos_ids else 0),
        tie_embeddings=cfg.get("tie_word_embeddings", True),
    )
    if kind in GEMMA3_TYPES:
        if cfg.get("final_logit_softcapping") or cfg.get("attn_logit_softcapping"):
            raise CalibError(f"soft-capping in {path} is not supported by calib's Gemma 3")
        types = cfg.get("layer_types")
        pattern = (
            types.index("full_attention") + 1
            if types and "full_attention" in types
            else cfg.get("sliding_window_pattern", 6)
        )
        return ModelConfig(
            arch="gemma3",
            **common,
            rope_base_local=base_local,
            sliding_window=cfg.get("sliding_window", 512),
            sliding_pattern=pattern,
            qk_norm=True,
            sandwich_norms=True,
            norm_plus_one=True,
            activation="gelu_tanh",
            scale_embeddings=True,
            query_scale=cfg.get("query_pre_attn_scalar", common["head_dim"]) ** -0.5,
        )
    if cfg.get("hidden_act", "silu") != "silu":
        raise CalibError(
            f"unsupported hidden_act {cfg.get('hidden_act')!r} in {path}: Llama-family models use silu"
        )
    return ModelConfig(arch="llama", qkv_bias=bool(cfg.get("attention_bias", kind == "qwen2")), **common)


def hf_state_dict(folder: str) -> dict[str, np.ndarray]:
    """Every tensor of every *.safetensors shard in the folder, as float32 numpy, names without a wrapper prefix."""
    from safetensors import SafetensorError, safe_open

    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if not files:
        raise CalibError(
            f"no *.safetensors files in {folder}: save the model with save_pretrained(safe_serialization=True)"
        )
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
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CalibError(f"cannot read {file}: {err} (corrupt or truncated safetensors file)") from None
    return out
