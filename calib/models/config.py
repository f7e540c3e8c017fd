"""A model is its config: one frozen dataclass describes every supported decoder architecture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Arch = Literal["llama", "gemma3"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only LM. Llama-family and Gemma 3 differ only in the fields below."""

    arch: Arch
    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffw_dim: int
    rope_base: float = 10_000.0
    rope_base_local: float = 10_000.0  # Gemma 3 sliding-window layers
    norm_eps: float = 1e-5
    max_context: int = 8192
    sliding_window: int | None = None  # Gemma 3: local layers see keys with 0 <= q - k < window
    sliding_pattern: int = 0  # Gemma 3: every `sliding_pattern`-th layer is global (6 -> 5 local : 1 global)
    qkv_bias: bool = False  # Qwen2-style biases on q, k, v projections
    qk_norm: bool = False  # RMSNorm over head_dim on q and k (Gemma 3)
    sandwich_norms: bool = False  # extra post-attention and post-MLP norms (Gemma 3)
    norm_plus_one: bool = False  # RMSNorm scales by (1 + w) (Gemma)
    activation: Literal["silu", "gelu_tanh"] = "silu"
    scale_embeddings: bool = False  # multiply embeddings by sqrt(embed_dim) (Gemma)
    tie_embeddings: bool = True
    query_scale: float | None = None  # defaults to head_dim ** -0.5
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0

    @property
    def num_params(self) -> int:
        """Parameter count (embedding counted once when tied)."""
        d, h = self.embed_dim, self.head_dim
        attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * d * self.ffw_dim
        per_layer = attn + mlp + d * (4 if self.sandwich_norms else 2)
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.vocab_size * d + self.num_layers * per_layer + d + head

    @property
    def flops_per_token(self) -> int:
        """Matmul FLOPs to produce one token's logits (2 x weights touched; attention over the cache excluded)."""
        untied_lookup = 0 if self.tie_embeddings else self.vocab_size * self.embed_dim
        return 2 * (self.num_params - untied_lookup)

    def is_sliding(self, layer: int) -> bool:
        """Gemma 3 pattern: layers 5, 11, 17, ... (0-based) are global; the rest use the sliding window."""
        if not self.sliding_window or not self.sliding_pattern:
            return False
        return (layer + 1) % self.sliding_pattern != 0

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def tiny_llama() -> ModelConfig:
    """A 2-layer random Llama with GQA for fast tests (byte vocabulary + 4 specials, see tokenizer.byte_tokenizer)."""
    return ModelConfig(
        arch="llama",
        vocab_size=260,
        embed_dim=64,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        ffw_dim=128,
        rope_base=10_000.0,
        norm_eps=1e-5,
        max_context=512,
        bos_id=257,
        eos_ids=(258,),
        pad_id=256,
    )


def tiny_gemma3() -> ModelConfig:
    """A 6-layer random Gemma 3 (5 local : 1 global, window 8) so sliding-window paths run in tests."""
    return ModelConfig(
        arch="gemma3",
        vocab_size=260,
        embed_dim=64,
        num_layers=6,
        num_heads=4,
        num_kv_heads=1,
        head_dim=32,
        ffw_dim=128,
        rope_base=1_000_000.0,
        rope_base_local=10_000.0,
        norm_eps=1e-6,
        max_context=512,
        sliding_window=8,
        sliding_pattern=6,
        qk_norm=True,
        sandwich_norms=True,
        norm_plus_one=True,
        activation="gelu_tanh",
        scale_embeddings=True,
        query_scale=32**-0.5,
        bos_id=257,
        eos_ids=(258,),
        pad_id=256,
    )
