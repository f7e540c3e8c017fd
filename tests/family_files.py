"""Tiny random models of every family, built with transformers and written as an HF folder or a GGUF file the way
llama.cpp's converter writes one (for the family parity tests and the refusal tests)."""

import numpy as np
import torch

from calib.models.tokenizer import byte_tokenizer

COMMON = dict(
    vocab_size=260,
    hidden_size=64,
    intermediate_size=96,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=257,
    eos_token_id=258,
    pad_token_id=256,
    initializer_range=0.25,  # large enough that the logits are far from uniform and every detail shows
)
FAMILIES = {
    "llama2": ("LlamaConfig", dict(num_hidden_layers=2, rope_theta=5000.0, tie_word_embeddings=False)),
    "llama3": (
        "LlamaConfig",
        dict(
            num_hidden_layers=2,
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=500_000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=32,
            ),
        ),
    ),
    "mistral": ("MistralConfig", dict(num_hidden_layers=2, head_dim=16, sliding_window=16)),
    "qwen2": ("Qwen2Config", dict(num_hidden_layers=2, tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(num_hidden_layers=2, head_dim=32, tie_word_embeddings=False)),
    "gemma3": (
        "Gemma3TextConfig",
        dict(
            num_hidden_layers=4,
            head_dim=32,
            num_key_value_heads=1,
            sliding_window=16,
            query_pre_attn_scalar=24,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"],
            rope_parameters={
                "full_attention": dict(rope_type="linear", factor=8.0, rope_theta=1_000_000.0),
                "sliding_attention": dict(rope_type="default", rope_theta=10_000.0),
            },
        ),
    ),
}


def build_hf(folder, family):
    """A tiny random transformers model of the family, saved with save_pretrained (weights and byte tokenizer)."""
    import transformers

    name, extra = FAMILIES[family]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, name)(**(COMMON | extra)))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:  # random norm weights; Gemma's (1 + w) around 0, the others around 1
                p.normal_(0.0 if family == "gemma3" else 1.0, 0.3)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return model.eval()


def _permute(w, heads):
    """llama.cpp's converter reorders Q/K rows of Llama-layout models for its interleaved RoPE."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama3_rope_freqs(params, head_dim):
    """rope_freqs as llama.cpp's converter computes it for rope_type llama3 (float32 torch, per frequency)."""
    import math

    freqs = 1.0 / (params["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    factor, low, high = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old = params["original_max_position_embeddings"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


def write_gguf(path, family, ref, extra_meta=None, extra_tensors=None):
    """The transformers model's tensors and config as a GGUF file, named and fixed up as llama.cpp's converter
    does (gguf's own name map, Q/K permutation for Llama layouts, Gemma norms + 1, rope_freqs for Llama 3)."""
    import gguf

    cfg = ref.config
    arch = {"llama2": "llama", "llama3": "llama", "mistral": "llama"}.get(family, family)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    model_arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    names = gguf.get_tensor_name_map(model_arch, cfg.num_hidden_layers)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    rope = cfg.rope_parameters
    if family == "gemma3":
        w.add_rope_freq_base(rope["full_attention"]["rope_theta"])
        w.add_rope_freq_base_swa(rope["sliding_attention"]["rope_theta"])
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["full_attention"]["factor"])
        w.add_sliding_window(cfg.sliding_window)
        w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
        w.add_attention_scale(cfg.query_pre_attn_scalar**-0.5)
    else:
        w.add_rope_freq_base(rope["rope_theta"])
        w.add_rope_dimension_count(head_dim)
    if family == "mistral":
        w.add_sliding_window(cfg.sliding_window)
    for key, value in (extra_meta or {}).items():
        w.add_key_value(key, value[0], value[1])
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(cfg.vocab_size)])
    w.add_bos_token_id(257)
    w.add_eos_token_id(258)
    w.add_pad_token_id(256)
    if family == "llama3":
        w.add_tensor("rope_freqs.weight", _llama3_rope_freqs(rope, head_dim))
    for name, value in ref.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        value = value.float().numpy()
        if arch == "llama" and name.endswith("q_proj.weight"):
            value = _permute(value, cfg.num_attention_heads)
        elif arch == "llama" and name.endswith("k_proj.weight"):
            value = _permute(value, cfg.num_key_value_heads)
        if family == "gemma3" and name.endswith("norm.weight"):
            value = value + 1.0
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), np.ascontiguousarray(value))
    for name, value in (extra_tensors or {}).items():
        w.add_tensor(name, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def load_gguf(path):
    """Config and tensors through calib's GGUF reader, with the byte tokenizer the HF folder has."""
    import hashlib

    from calib.devices import data_mesh, replicated
    from calib.models.gguf_weights import gguf_config, gguf_state_dict, open_gguf
    from calib.models.lm import LanguageModel
    from calib.models.params import build_model

    reader = open_gguf(str(path))
    cfg = gguf_config(reader, str(path))
    mesh = data_mesh()
    model = build_model(cfg, gguf_state_dict(reader, cfg, str(path)), str(path), sharding=replicated(mesh))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LanguageModel(path.stem, cfg, model, byte_tokenizer, digest, "completion", mesh=mesh)
