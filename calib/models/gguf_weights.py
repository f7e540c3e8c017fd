"""GGUF checkpoints: metadata -> ModelConfig, tensors -> a transformers-named float32 state dict.

Converting to transformers names lets GGUF and HF folders share one path (params.py) into the JAX model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from calib.errors import CalibError
from calib.models.config import ModelConfig, sliding_every
from calib.models.gguf_file import REQUIRED, field_value, meta_value, open_gguf  # noqa: F401 (open_gguf: public here)

LLAMA_LIKE = {
    "llama": True,
    "mistral": True,
    "qwen2": False,
    "qwen3": False,
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
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
}
NAME_MAPS = {
    "llama": {**_COMMON, "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight"},
    "gemma3": {
        **_COMMON,
        "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
        "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
    },
}


# Metadata under "{arch}." that calib reads (or that cannot change the output); any other such key changes the
# computation in a way calib does not implement (soft-capping, experts, YaRN, ...) and is refused.
KNOWN_KEYS = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "vocab_size",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "attention.scale",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.freq_base_swa",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",  # informational for linear scaling (the only type calib runs)
    "rope.scaling.finetuned",
}
DEQUANT_CHUNK_BYTES = 1 << 24  # float32 bytes per dequantized chunk of a quantized tensor
ROPE_FREQS = ("rope_freqs.weight", "rope_freqs")  # llama.cpp's per-frequency RoPE divisors (Llama 3 scaling)


def _refuse_unknown_keys(reader, arch: str, path: str) -> None:
    for key in reader.fields:
        if key.startswith(f"{arch}.") and key[len(arch) + 1 :] not in KNOWN_KEYS:
            value = field_value(reader, key)
            if key.endswith("expert_count") and value == 0:
                continue  # a dense model that states it has no experts
            what = "soft-capping" if "softcapping" in key else "experts" if "expert" in key else "metadata"
            raise CalibError(
                f"GGUF file {path}: {what} key {key} = {value!r} changes the computation and is not implemented "
                "by calib; use another model"
            )


def _rope_scaling(reader, arch: str, path: str, head_dim: int) -> dict:
    """The linear factor ({arch}.rope.scaling.*) and Llama 3's rope_freqs tensor, as ModelConfig fields."""
    kind = field_value(reader, f"{arch}.rope.scaling.type")
    factor = meta_value(reader, path, f"{arch}.rope.scaling.factor", "number", 1.0)
    if kind not in (None, "none", "linear"):
        raise CalibError(
            f"GGUF file {path}: RoPE scaling {kind!r} ({arch}.rope.scaling.type) is not implemented by calib "
            "(it runs none, linear and Llama 3's rope_freqs); use another model"
        )
    out = {"rope_factor": float(factor)} if kind != "none" else {}
    tensor = next((t for t in reader.tensors if t.name in ROPE_FREQS), None)
    if tensor is not None:
        if arch not in LLAMA_LIKE or arch == "qwen2":
            raise CalibError(f"GGUF file {path}: tensor {tensor.name} is not implemented for {arch}")
        import gguf

        freqs = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float64).ravel()
        if freqs.size != head_dim // 2 or not (np.isfinite(freqs).all() and (freqs > 0).all()):
            raise CalibError(
                f"GGUF file {path}: tensor {tensor.name} holds {freqs.size} values, expected {head_dim // 2} "
                "positive ones (corrupt file; re-convert it)"
            )
        out["rope_freq_factors"] = tuple(float(f) for f in freqs)
    return out


def _gemma3_layers(reader, path: str, layers: int) -> tuple[str, ...]:
    """gemma3.attention.sliding_window_pattern (a period or one bool per layer, true = sliding), else llama.cpp's
    fixed period of 6."""
    pattern = field_value(reader, "gemma3.attention.sliding_window_pattern", 6)
    if isinstance(pattern, list):
        if len(pattern) != layers or not all(isinstance(p, bool) for p in pattern):
            raise CalibError(
                f"GGUF file {path}: gemma3.attention.sliding_window_pattern has {len(pattern)} entries, "
                f"expected {layers} booleans (re-convert it)"
            )
        return tuple("sliding_attention" if p else "full_attention" for p in pattern)
    return sliding_every(
        layers, meta_value(reader, path, "gemma3.attention.sliding_window_pattern", "count", 6)
    )


def gguf_config(reader, path: str) -> ModelConfig:
    """Build the ModelConfig from GGUF metadata (keys are prefixed by the architecture name); every value is
    type-checked first, so a damaged file is a one-line error naming the key."""
    arch = field_value(reader, "general.architecture")
    if not isinstance(arch, str) or (arch not in LLAMA_LIKE and arch != "gemma3"):
        raise CalibError(
            f"unsupported architecture {arch!r} in {path}: calib runs {sorted([*LLAMA_LIKE, 'gemma3'])}"
        )
    _refuse_unknown_keys(reader, arch, path)

    def need(key: str, kind: str = "count", default=REQUIRED):
        return meta_value(reader, path, f"{arch}.{key}", kind, default)

    tokens = field_value(reader, "tokenizer.ggml.tokens")
    if tokens is not None and (not isinstance(tokens, list) or not tokens):
        raise CalibError(
            f"GGUF file {path}: tokenizer.ggml.tokens is not a non-empty list of tokens (re-convert it)"
        )
    heads = need("attention.head_count")
    kv_heads = need("attention.head_count_kv", default=heads)
    embed = need("embedding_length")
    if heads % kv_heads:
        raise CalibError(
            f"GGUF file {path}: {arch}.attention.head_count ({heads}) is not a multiple of "
            f"{arch}.attention.head_count_kv ({kv_heads}) (corrupt or foreign file; re-convert it)"
        )
    head_dim = need("attention.key_length", default=None) or need("rope.dimension_count", default=None)
    if head_dim is None and embed % heads:
        raise CalibError(
            f"GGUF file {path}: {arch}.embedding_length ({embed}) is not a multiple of "
            f"{arch}.attention.head_count ({heads}) and no key_length is given (re-convert it)"
        )
    head_dim = head_dim or embed // heads
    for key in ("attention.value_length", "rope.dimension_count"):
        if need(key, default=head_dim) != head_dim:
            raise CalibError(
                f"GGUF file {path}: {arch}.{key} = {need(key)} differs from the head size {head_dim} "
                "(partial RoPE or unequal key/value heads are not implemented by calib)"
            )
    layers = need("block_count")
    eos = meta_value(reader, path, "tokenizer.ggml.eos_token_id", "id", None)
    common = dict(
        vocab_size=len(tokens) if tokens is not None else need("vocab_size"),
        embed_dim=embed,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        ffw_dim=need("feed_forward_length"),
        rope_base=float(need("rope.freq_base", "number", 10_000.0)),
        norm_eps=float(need("attention.layer_norm_rms_epsilon", "number")),
        max_context=need("context_length"),
        bos_id=meta_value(reader, path, "tokenizer.ggml.bos_token_id", "id", None),
        eos_ids=() if eos is None else (eos,),
        pad_id=meta_value(
            reader, path, "tokenizer.ggml.padding_token_id", "id", eos if eos is not None else 0
        ),
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
        **_rope_scaling(reader, arch, path, head_dim),
    )
    window = need("attention.sliding_window", default=None)
    if arch == "gemma3":
        # llama.cpp scales Gemma 3 queries by head_dim ** -0.5, except 27B (62 layers): (embed / heads) ** -0.5
        scale = need("attention.scale", "number", None)
        scalar = scale**-2 if scale else (embed / heads if layers == 62 else head_dim)
        return ModelConfig.gemma3(
            **common,
            rope_base_local=float(need("rope.freq_base_swa", "number", 10_000.0)),
            sliding_window=need("attention.sliding_window"),
            layer_types=_gemma3_layers(reader, path, layers),
            query_pre_attn_scalar=scalar,
        )
    if need("attention.scale", "number", None) is not None:
        raise CalibError(f"GGUF file {path}: {arch}.attention.scale is not implemented for {arch}")
    if arch in ("qwen2", "qwen3"):
        if window is not None:
            raise CalibError(
                f"GGUF file {path}: {arch}.attention.sliding_window is not implemented for {arch}"
            )
        return ModelConfig.qwen3(**common) if arch == "qwen3" else ModelConfig.qwen2(**common)
    if any(t.name == "blk.0.attn_q.bias" for t in reader.tensors):
        raise CalibError(f"GGUF file {path}: q/k/v biases are not implemented for {arch} (only for qwen2)")
    return ModelConfig.mistral(**common, sliding_window=window) if window else ModelConfig.llama(**common)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-RoPE row permutation of Q/K so transformers' rotate_half RoPE applies."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(arch: str, name: str) -> str | None:
    match = re.match(r"blk\.(\d+)\.(.+)", name)
    key, layer = (f"blk.{{i}}.{match.group(2)}", match.group(1)) if match else (name, None)
    target = NAME_MAPS[arch].get(key)
    return None if target is None else target.format(i=layer)


def gguf_plan(reader, cfg: ModelConfig, path: str) -> list[tuple[object, str, tuple[int, ...]]]:
    """(GGUF tensor, transformers name, float32 shape) of every tensor the model takes, in file order, checked
    before any is dequantized: an unknown tensor is refused before a cache file is started."""
    plan = []
    for tensor in reader.tensors:
        if tensor.name in ROPE_FREQS:
            continue  # read into cfg.rope_freq_factors by gguf_config
        name = _hf_name(cfg.arch, tensor.name)
        if name is None:
            raise CalibError(
                f"GGUF file {path}: tensor {tensor.name} is not implemented by calib's {cfg.arch} model (it "
                "would change the computation); use a supported model"
            )
        plan.append((tensor, name, tuple(int(d) for d in reversed(tensor.shape))))
    return plan


def _dequantize(tensor, shape: tuple[int, ...], path: str) -> np.ndarray:
    """One tensor as float32, quantized rows dequantized in chunks of ~16 MB into the output: gguf's numpy
    dequantizers make several full-size temporaries, which for a 262k-row embedding is gigabytes."""
    import gguf

    data = tensor.data
    try:
        rows = data.shape[0] if data.ndim == 2 and data.dtype == np.uint8 else 0
        if rows < 2 or int(np.prod(shape)) % rows:
            return np.asarray(gguf.quants.dequantize(data, tensor.tensor_type), dtype=np.float32)
        out = np.empty((rows, int(np.prod(shape)) // rows), np.float32)
        step = max(1, DEQUANT_CHUNK_BYTES // (out.shape[1] * 4))
        for first in range(0, rows, step):
            chunk = gguf.quants.dequantize(data[first : first + step], tensor.tensor_type)
            out[first : first + step] = np.asarray(chunk, np.float32).reshape(-1, out.shape[1])
        return out
    except Exception as err:
        raise CalibError(f"cannot dequantize tensor {tensor.name} in {path}: {err} (corrupt file?)") from None


def gguf_tensors(
    reader, cfg: ModelConfig, path: str, plan: list | None = None
) -> Iterator[tuple[str, np.ndarray]]:
    """(transformers name, float32 array) one tensor at a time, with the Llama and Gemma fix-ups; nothing is kept,
    so a caller that casts and places each tensor holds one float32 tensor at a time, not the float32 model."""
    gguf_arch = field_value(reader, "general.architecture")
    permuted = LLAMA_LIKE.get(gguf_arch, False)
    for tensor, name, expected in plan if plan is not None else gguf_plan(reader, cfg, path):
        w = _dequantize(tensor, expected, path)
        w = w.reshape(expected) if w.size == int(np.prod(expected)) else w
        if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_heads if name.endswith("q_proj.weight") else cfg.num_kv_heads
            if w.ndim != 2 or w.shape[0] != heads * cfg.head_dim:
                raise CalibError(
                    f"tensor {tensor.name} in {path} has shape {tuple(w.shape)}, expected "
                    f"({heads * cfg.head_dim}, {cfg.embed_dim}) for this config (wrong or corrupt checkpoint)"
                )
            w = _unpermute(w, heads)
        if cfg.norm_plus_one and name.endswith("norm.weight"):
            w = w - 1.0  # GGUF stores Gemma norm weights as w + 1 (w may be the read-only mapped file)
        yield name, np.ascontiguousarray(w)
        del w


def gguf_state_dict(reader, cfg: ModelConfig, path: str) -> dict[str, np.ndarray]:
    """Every tensor as float32 under its transformers name (all in memory: for tests and small files)."""
    return dict(gguf_tensors(reader, cfg, path))
