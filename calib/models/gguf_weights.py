"""GGUF checkpoints: metadata -> ModelConfig, tensors -> a transformers-named float32 state dict.

Converting to transformers names lets GGUF and HF folders share one path (params.py) into the JAX model.
"""

from __future__ import annotations

import os
import re

import numpy as np

from calib.errors import CalibError
from calib.models.config import ModelConfig

LLAMA_LIKE = {
    "llama": True,
    "mistral": True,
    "qwen2": False,
}  # arch -> are Q/K rows permuted for llama.cpp RoPE?

# GGUF tensor name -> transformers name ({i} is the layer). Llama's ffn_norm is the pre-MLP norm, which
# transformers calls post_attention_layernorm; Gemma 3 has a real post-attention norm, so its map differs.
_COMMON = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
}
NAME_MAPS = {
    "llama": {**_COMMON, "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight"},
    "gemma3": {
        **_COMMON,
        "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
        "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
        "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
        "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
    },
}


def open_gguf(path: str):
    """Open a GGUF file or raise one clear line naming it."""
    import gguf

    if not os.path.isfile(path):
        raise CalibError(
            f"GGUF file not found: {path} (check the path; built-in models install with `make setup`)"
        )
    try:
        return gguf.GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, KeyError, struct errors... on truncated files
        raise CalibError(
            f"cannot read GGUF file {path}: {type(err).__name__}: {err} (the file is corrupt or truncated; re-download it)"
        ) from None


def field_value(reader, key: str, default=None):
    """A scalar, string or array metadata value of a GGUF file."""
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def gguf_config(reader, path: str) -> ModelConfig:
    """Build the ModelConfig from GGUF metadata (keys are prefixed by the architecture name)."""
    arch = field_value(reader, "general.architecture")
    if arch not in LLAMA_LIKE and arch != "gemma3":
        raise CalibError(
            f"unsupported architecture {arch!r} in {path}: calib runs llama, mistral, qwen2 and gemma3"
        )

    def need(key: str):
        value = field_value(reader, f"{arch}.{key}")
        if value is None:
            raise CalibError(
                f"GGUF file {path} lacks metadata key {arch}.{key} (incomplete conversion; re-convert it)"
            )
        return value

    tokens = field_value(reader, "tokenizer.ggml.tokens")
    heads = int(need("attention.head_count"))
    embed = int(need("embedding_length"))
    head_dim = int(
        field_value(reader, f"{arch}.attention.key_length", 0)
        or field_value(reader, f"{arch}.rope.dimension_count", 0)
        or embed // heads
    )
    eos = field_value(reader, "tokenizer.ggml.eos_token_id")
    common = dict(
        vocab_size=len(tokens) if tokens is not None else int(need("vocab_size")),
        embed_dim=embed,
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(field_value(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        ffw_dim=int(need("feed_forward_length")),
        rope_base=float(field_value(reader, f"{arch}.rope.freq_base", 10_000.0)),
        norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        max_context=int(need("context_length")),
        bos_id=field_value(reader, "tokenizer.ggml.bos_token_id"),
        eos_ids=() if eos is None else (int(eos),),
        pad_id=int(field_value(reader, "tokenizer.ggml.padding_token_id", eos if eos is not None else 0)),
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
    )
    if arch == "gemma3":
        return ModelConfig(
            arch="gemma3",
            **common,
            rope_base_local=float(field_value(reader, "gemma3.rope.freq_base_swa", 10_000.0)),
            sliding_window=int(need("attention.sliding_window")),
            sliding_pattern=6,
            qk_norm=True,
            sandwich_norms=True,
            norm_plus_one=True,
            activation="gelu_tanh",
            scale_embeddings=True,
            query_scale=head_dim**-0.5,
        )
    return ModelConfig(
        arch="llama", qkv_bias=any(t.name == "blk.0.attn_q.bias" for t in reader.tensors), **common
    )


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-RoPE row permutation of Q/K so transformers' rotate_half RoPE applies."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(arch: str, name: str) -> str | None:
    match = re.match(r"blk\.(\d+)\.(.+)", name)
    key, layer = (f"blk.{{i}}.{match.group(2)}", match.group(1)) if match else (name, None)
    target = NAME_MAPS[arch].get(key)
    return None if target is None else target.format(i=layer)


def gguf_state_dict(reader, cfg: ModelConfig, path: str) -> dict[str, np.ndarray]:
    """Dequantize every tensor to float32 under its transformers name, with the Llama and Gemma fix-ups."""
    import gguf

    gguf_arch = field_value(reader, "general.architecture")
    permuted = LLAMA_LIKE.get(gguf_arch, False)
    out = {}
    for tensor in reader.tensors:
        name = _hf_name(cfg.arch, tensor.name)
        if name is None:
            continue  # e.g. rope_freqs tables llama.cpp stores for its own kernels
        try:
            w = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        except Exception as err:
            raise CalibError(
                f"cannot dequantize tensor {tensor.name} in {path}: {err} (corrupt file?)"
            ) from None
        expected = tuple(int(d) for d in reversed(tensor.shape))
        w = w.reshape(expected) if w.size == int(np.prod(expected)) else w
        if permuted and name.endswith("q_proj.weight"):
            w = _unpermute(w, cfg.num_heads)
        elif permuted and name.endswith("k_proj.weight"):
            w = _unpermute(w, cfg.num_kv_heads)
        if cfg.norm_plus_one and name.endswith("norm.weight"):
            w = w - 1.0  # GGUF stores Gemma norm weights as w + 1
        out[name] = np.ascontiguousarray(w)
    return out
