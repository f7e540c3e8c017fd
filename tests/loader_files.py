"""Tiny valid model and question files for the loader error and fuzz tests (milliseconds to write and to read)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

D, HEADS, KV, FFW, VOCAB = 8, 2, 1, 16, 12

GGUF_META = {
    "llama.context_length": 64,
    "llama.embedding_length": D,
    "llama.block_count": 1,
    "llama.feed_forward_length": FFW,
    "llama.attention.head_count": HEADS,
    "llama.attention.head_count_kv": KV,
    "llama.rope.freq_base": 10000.0,
    "llama.attention.layer_norm_rms_epsilon": 1e-5,
}

HF_CONFIG = {
    "model_type": "llama",
    "vocab_size": VOCAB,
    "hidden_size": D,
    "num_hidden_layers": 1,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV,
    "intermediate_size": FFW,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 64,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": True,
}


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def llama_tensors() -> dict[str, np.ndarray]:
    """GGUF-named tensors of a 1-layer Llama with the shapes GGUF_META describes."""
    rng = np.random.default_rng(0)
    hd = D // HEADS
    shapes = {
        "token_embd.weight": (VOCAB, D),
        "output_norm.weight": (D,),
        "blk.0.attn_q.weight": (D, D),
        "blk.0.attn_k.weight": (KV * hd, D),
        "blk.0.attn_v.weight": (KV * hd, D),
        "blk.0.attn_output.weight": (D, D),
        "blk.0.ffn_gate.weight": (FFW, D),
        "blk.0.ffn_up.weight": (FFW, D),
        "blk.0.ffn_down.weight": (D, FFW),
        "blk.0.attn_norm.weight": (D,),
        "blk.0.ffn_norm.weight": (D,),
    }
    return {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}


def write_gguf(path: str | Path, arch: str = "llama", **meta) -> Path:
    """A tiny Llama GGUF; meta overrides GGUF_META by key (dots as "__"), None drops a key, and the value's
    Python type picks the GGUF type (str, bool, int -> uint32, float -> float32), so tests can write wrong types."""
    import gguf

    values = dict(GGUF_META)
    for key, value in meta.items():
        values[key.replace("__", ".")] = value
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_float32(key, value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(VOCAB)])
    writer.add_eos_token_id(2)
    for name, value in llama_tensors().items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def write_hf_folder(folder: str | Path, config: object = None) -> Path:
    """config.json (HF_CONFIG unless given; bytes are written as they are) and one small model.safetensors."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = HF_CONFIG if config is None else config
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    (folder / "config.json").write_bytes(raw)
    rng = np.random.default_rng(0)
    tensors = {
        "model.embed_tokens.weight": rng.normal(size=(VOCAB, D)).astype(np.float32),
        "model.norm.weight": np.ones(D, np.float32),
    }
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def write_jsonl(path: str | Path, rows: list) -> Path:
    """One JSON line per row (a str row is written as it is, so tests can write broken lines)."""
    path = Path(path)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path
