"""GGUF checkpoints: metadata -> ModelConfig, tensors -> a transformers-named float32 state dict.

Converting to transformers names lets GGUF and HF folders share one path (params.py) into the JAX model.
"""

from __future__ import annotations

import os
import re

import numpy as np

from calib.errors import CalibError
from calib.models.config import ModelConfig, sliding_every

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


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType -> size
_STRING, _ARRAY = 8, 9
_REQUIRED = object()


class _Header:
    """A bounds-checked cursor over a GGUF header. gguf.GGUFReader reads past the end of a file as empty arrays, so
    an array whose length field is damaged makes it loop (nearly) forever; this walk refuses such a file first."""

    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos, self.order = buf, path, 0, "<"

    def bad(self, what: str) -> CalibError:
        return CalibError(
            f"cannot read GGUF file {self.path}: {what} at byte {self.pos} (the file is corrupt or truncated; "
            "re-download or re-convert it)"
        )

    def take(self, n: int) -> int:
        if n > len(self.buf) - self.pos:
            raise self.bad(f"{n} more bytes needed but the file ends at byte {len(self.buf)}")
        start, self.pos = self.pos, self.pos + n
        return start

    def uint(self, size: int) -> int:
        start = self.take(size)
        return int.from_bytes(self.buf[start : self.pos], "little" if self.order == "<" else "big")

    def text(self, what: str) -> str:
        n = self.uint(8)
        start = self.take(n)
        try:
            return bytes(self.buf[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8") from None

    def value(self, kind: int, key: str, depth: int = 0) -> None:
        if kind in _SCALAR_BYTES:
            self.take(_SCALAR_BYTES[kind])
        elif kind == _STRING:
            self.text(f"the value of {key}")
        elif kind == _ARRAY and depth < 4:
            item, count = self.uint(4), self.uint(8)
            least = _SCALAR_BYTES.get(item, 8 if item == _STRING else 12)
            if count * least > len(self.buf) - self.pos:
                raise self.bad(f"array {key} claims {count} items, more than the file holds")
            if item in _SCALAR_BYTES:
                self.take(count * least)
            else:
                for _ in range(count):
                    self.value(item, key, depth + 1)
        else:
            raise self.bad(f"metadata {key} has unknown value type {kind}")

    def walk(self) -> None:
        """Magic, version, every key/value and every tensor description, each inside the file."""
        if bytes(self.buf[:4]) != b"GGUF":
            raise self.bad("no GGUF magic (this is not a GGUF file)")
        self.pos = 4
        version = self.uint(4)
        if version & 0xFFFF == 0:  # written on a big-endian machine, as gguf.GGUFReader detects it
            self.order, self.pos = ">", 4
            version = self.uint(4)
        if version not in (2, 3):
            raise self.bad(f"GGUF version {version} (calib reads versions 2 and 3)")
        tensors, keys = self.uint(8), self.uint(8)
        if keys * 13 + tensors * 24 > len(self.buf) - self.pos:
            raise self.bad(f"{keys} metadata keys and {tensors} tensors claimed, more than the file holds")
        for _ in range(keys):
            key = self.text("a metadata key")
            self.value(self.uint(4), key)
        for _ in range(tensors):
            name = self.text("a tensor name")
            dims = self.uint(4)
            if dims > 4:
                raise self.bad(f"tensor {name} has {dims} dimensions (GGUF allows at most 4)")
            self.take(8 * dims + 4 + 8)


def check_gguf_header(path: str) -> None:
    """Walk the header with bounds checks before gguf.GGUFReader sees the file (see _Header)."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise CalibError(
                    f"cannot read GGUF file {path}: only {os.fstat(f.fileno()).st_size} bytes, too short for a "
                    "GGUF header (the file is corrupt or truncated; re-download it)"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _Header(buf, path).walk()
    except OSError as err:
        raise CalibError(f"cannot read GGUF file {path}: {err.strerror or err}") from None


def open_gguf(path: str):
    """Open a GGUF file or raise one clear line naming it."""
    import gguf

    if not os.path.isfile(path):
        raise CalibError(
            f"GGUF file not found: {path} (check the path; built-in models install with `make setup`)"
        )
    check_gguf_header(path)
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
    try:
        return field.contents()
    except Exception as err:  # e.g. a string value that is not UTF-8
        raise CalibError(
            f"GGUF file metadata {key} is unreadable ({type(err).__name__}: {err}); the file is corrupt, "
            "re-download or re-convert it"
        ) from None


def _meta(reader, path: str, key: str, kind: str, default=_REQUIRED):
    """A metadata value checked against its kind: "count" (integer >= 1), "id" (integer >= 0) or "number" (> 0)."""
    value = field_value(reader, key)
    if value is None:
        if default is _REQUIRED:
            raise CalibError(
                f"GGUF file {path} lacks metadata key {key} (incomplete conversion; re-convert it)"
            )
        return default
    integer = not isinstance(value, bool) and isinstance(value, int)
    ok = {
        "count": integer and value >= 1,
        "id": integer and value >= 0,
        "number": not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < float("inf"),
    }[kind]
    if not ok:
        want = {
            "count": "a positive integer",
            "id": "a token id (integer >= 0)",
            "number": "a positive number",
        }
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CalibError(
            f"GGUF file {path}: metadata {key} is {shown}, expected {want[kind]} (corrupt or foreign file; "
            "re-convert it)"
        )
    return value


def gguf_config(reader, path: str) -> ModelConfig:
    """Build the ModelConfig from GGUF metadata (keys are prefixed by the architecture name); every value is
    type-checked first, so a damaged file is a one-line error naming the key."""
    arch = field_value(reader, "general.architecture")
    if not isinstance(arch, str) or (arch not in LLAMA_LIKE and arch != "gemma3"):
        raise CalibError(
            f"unsupported architecture {arch!r} in {path}: calib runs llama, mistral, qwen2 and gemma3"
        )

    def need(key: str, kind: str = "count", default=_REQUIRED):
        return _meta(reader, path, f"{arch}.{key}", kind, default)

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
    eos = _meta(reader, path, "tokenizer.ggml.eos_token_id", "id", None)
    common = dict(
        vocab_size=len(tokens) if tokens is not None else need("vocab_size"),
        embed_dim=embed,
        num_layers=need("block_count"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        ffw_dim=need("feed_forward_length"),
        rope_base=float(need("rope.freq_base", "number", 10_000.0)),
        norm_eps=float(need("attention.layer_norm_rms_epsilon", "number")),
        max_context=need("context_length"),
        bos_id=_meta(reader, path, "tokenizer.ggml.bos_token_id", "id", None),
        eos_ids=() if eos is None else (eos,),
        pad_id=_meta(reader, path, "tokenizer.ggml.padding_token_id", "id", eos if eos is not None else 0),
        tie_embeddings="output.weight" not in {t.name for t in reader.tensors},
    )
    if arch == "gemma3":
        return ModelConfig.gemma3(
            **common,
            rope_base_local=float(_meta(reader, path, "gemma3.rope.freq_base_swa", "number", 10_000.0)),
            sliding_window=need("attention.sliding_window"),
            layer_types=sliding_every(common["num_layers"], 6),
            query_pre_attn_scalar=head_dim,
        )
    return ModelConfig.llama(qkv_bias=any(t.name == "blk.0.attn_q.bias" for t in reader.tensors), **common)


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
        if permuted and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = cfg.num_heads if name.endswith("q_proj.weight") else cfg.num_kv_heads
            if w.ndim != 2 or w.shape[0] != heads * cfg.head_dim:
                raise CalibError(
                    f"tensor {tensor.name} in {path} has shape {tuple(w.shape)}, expected "
                    f"({heads * cfg.head_dim}, {cfg.embed_dim}) for this config (wrong or corrupt checkpoint)"
                )
        if permuted and name.endswith("q_proj.weight"):
            w = _unpermute(w, cfg.num_heads)
        elif permuted and name.endswith("k_proj.weight"):
            w = _unpermute(w, cfg.num_kv_heads)
        if cfg.norm_plus_one and name.endswith("norm.weight"):
            w = w - 1.0  # GGUF stores Gemma norm weights as w + 1
        out[name] = np.ascontiguousarray(w)
    return out
