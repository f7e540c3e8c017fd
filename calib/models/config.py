"""A model is its config: one frozen dataclass describes every supported decoder architecture, and one classmethod
per family (llama, mistral, qwen2, qwen3, gemma3) sets that family's flags for the tiny configs and both loaders."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from calib.errors import CalibError

Arch = Literal["llama", "gemma3"]  # picks the checkpoint-name table (params.py) and Gemma 3's local RoPE
LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a decoder-only LM. Families differ only in the fields below (see the classmethods)."""

    arch: Arch
    vocab_size: int
    embed_dim: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffw_dim: int
    rope_base: float = 10_000.0
    rope_base_local: float = 10_000.0  # Gemma 3 sliding-window layers (plain RoPE, never scaled)
    rope_factor: float = (
        1.0  # linear RoPE scaling: inverse frequencies / factor (Gemma 3: global layers only)
    )
    rope_freq_factors: tuple[
        float, ...
    ] = ()  # per-frequency divisors (Llama 3 scaling; llama.cpp's rope_freqs)
    norm_eps: float = 1e-5
    max_context: int = 8192
    sliding_window: int | None = None  # sliding layers see keys with 0 <= q - k < window
    layer_types: tuple[str, ...] = ()  # per layer "full_attention" or "sliding_attention"; () = all full
    qkv_bias: bool = False  # Qwen2-style biases on q, k, v projections
    qk_norm: bool = False  # RMSNorm over head_dim on q and k before RoPE (Qwen3, Gemma 3)
    sandwich_norms: bool = False  # extra post-attention and post-MLP norms (Gemma 3)
    norm_plus_one: bool = False  # RMSNorm scales by (1 + w) (Gemma)
    activation: Literal["silu", "gelu_tanh"] = "silu"
    scale_embeddings: bool = False  # multiply embeddings by sqrt(embed_dim) (Gemma)
    tie_embeddings: bool = True
    query_scale: float | None = None  # defaults to head_dim ** -0.5
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        if self.layer_types and len(self.layer_types) != self.num_layers:
            raise CalibError(
                f"layer_types has {len(self.layer_types)} entries for {self.num_layers} layers; give one per layer"
            )
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            raise CalibError(f"layer type {unknown[0]!r} is not implemented: calib runs {list(LAYER_TYPES)}")
        if "sliding_attention" in self.layer_types and not self.sliding_window:
            raise CalibError("sliding_attention layers need a sliding_window (a positive integer)")
        if self.rope_freq_factors and len(self.rope_freq_factors) != self.head_dim // 2:
            raise CalibError(
                f"{len(self.rope_freq_factors)} RoPE frequency factors for head_dim {self.head_dim}: expected "
                f"{self.head_dim // 2}"
            )

    # ---- family presets ------------------------------------------------------------------------------------
    @classmethod
    def llama(cls, **fields) -> ModelConfig:
        """Llama 2 / 3.x (and SmolLM2): SwiGLU, pre-norm, GQA; Llama 3 scaling comes as rope_freq_factors."""
        return cls(arch="llama", **fields)

    @classmethod
    def mistral(cls, *, num_layers: int, sliding_window: int | None = None, **fields) -> ModelConfig:
        """Llama layout; a configured sliding window applies to every layer."""
        kind = "sliding_attention" if sliding_window else "full_attention"
        return cls(
            arch="llama",
            num_layers=num_layers,
            sliding_window=sliding_window,
            layer_types=(kind,) * num_layers,
            **fields,
        )

    @classmethod
    def qwen2(cls, **fields) -> ModelConfig:
        """Llama layout with biases on the q, k and v projections."""
        return cls(arch="llama", qkv_bias=True, **fields)

    @classmethod
    def qwen3(cls, **fields) -> ModelConfig:
        """Llama layout with RMSNorm on q and k per head, no biases."""
        return cls(arch="llama", qk_norm=True, **fields)

    @classmethod
    def gemma3(
        cls,
        *,
        num_layers: int,
        head_dim: int,
        query_pre_attn_scalar: float | None = None,
        layer_types: tuple[str, ...] | None = None,
        **fields,
    ) -> ModelConfig:
        """Gemma 3 text at every size: GeGLU, (1 + w) norms, sandwich norms, QK-norm, scaled embeddings, local and
        global layers (5 : 1 unless layer_types says otherwise), queries scaled by query_pre_attn_scalar ** -0.5."""
        return cls(
            arch="gemma3",
            num_layers=num_layers,
            head_dim=head_dim,
            layer_types=tuple(layer_types) if layer_types is not None else sliding_every(num_layers, 6),
            qk_norm=True,
            sandwich_norms=True,
            norm_plus_one=True,
            activation="gelu_tanh",
            scale_embeddings=True,
            query_scale=float(query_pre_attn_scalar or head_dim) ** -0.5,
            **fields,
        )

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
        """As stored: the layer's type is "sliding_attention"."""
        return bool(self.layer_types) and self.layer_types[layer] == "sliding_attention"

    def rope_for(self, layer: int) -> tuple[float, tuple[float, ...]]:
        """(base, per-frequency divisors) of a layer's RoPE. Gemma 3's local layers use their own base and no
        scaling; every other layer uses the global base with the linear factor and the frequency factors."""
        if self.arch == "gemma3" and self.is_sliding(layer):
            return self.rope_base_local, ()
        factors = self.rope_freq_factors or ((1.0,) * (self.head_dim // 2) if self.rope_factor != 1.0 else ())
        return self.rope_base, tuple(f * self.rope_factor for f in factors)

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def sliding_every(num_layers: int, pattern: int) -> tuple[str, ...]:
    """Gemma 3's pattern as transformers and llama.cpp expand it: every `pattern`-th layer is global."""
    return tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers))


def llama3_rope_factors(
    base: float,
    head_dim: int,
    factor: float,
    low_freq_factor: float,
    high_freq_factor: float,
    original_context: int,
) -> tuple[float, ...]:
    """Llama 3's RoPE scaling as per-frequency divisors (what llama.cpp's converter writes as rope_freqs): high
    frequencies kept, low ones divided by factor, a smooth blend between (transformers' _compute_llama3_parameters)."""
    low_wavelen, high_wavelen = original_context / low_freq_factor, original_context / high_freq_factor
    out = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * base ** (i / head_dim)
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(float(factor))
        else:
            smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return tuple(out)


_TINY = dict(
    vocab_size=260, embed_dim=64, num_heads=4, ffw_dim=128, max_context=512, bos_id=257, eos_ids=(258,)
)


def tiny_llama() -> ModelConfig:
    """A 2-layer random Llama with GQA for fast tests (byte vocabulary + 4 specials, see tokenizer.byte_tokenizer)."""
    return ModelConfig.llama(
        **_TINY, num_layers=2, num_kv_heads=2, head_dim=16, rope_base=10_000.0, norm_eps=1e-5, pad_id=256
    )


def tiny_gemma3() -> ModelConfig:
    """A 6-layer random Gemma 3 (5 local : 1 global, window 8) so sliding-window paths run in tests."""
    return ModelConfig.gemma3(
        **_TINY,
        num_layers=6,
        num_kv_heads=1,
        head_dim=32,
        rope_base=1_000_000.0,
        rope_base_local=10_000.0,
        norm_eps=1e-6,
        sliding_window=8,
        query_pre_attn_scalar=32,
        pad_id=256,
    )
