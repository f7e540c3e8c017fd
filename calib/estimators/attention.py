"""Attention-based estimators (RAUQ, attention score) and the teacher-forced pass that records what they read.

The pass runs the model's own blocks over prompt + answer and, at each layer, recomputes the attention probabilities
from the block's own projections (the same einsums, RoPE, QK-norm and mask as `calib.models.layers.Attention`, with no
KV cache) to keep two vectors per layer and head — the self-attention diagonal A[s, s] and the last row A[S−1, s] — so
memory is [L, H, 2, S] per answer, never [S, S] per head. Nothing in the model files changes; the test checks the
recomputed probabilities against each block's own attention output.

RAUQ reads A at the answer's positions: the weight that the step generating y_j puts on the previous token y_{j−1}
is A[P + j − 1, P + j − 1] (the query of that step sits at y_{j−1}); LM-Polygraph's `attention_all` stores the same
numbers from generation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.decode.planning import bucket_length
from calib.estimators.base import EstimatorResult, Need
from calib.estimators.bundle import Bundle
from calib.estimators.registry import register_estimator
from calib.models.layers import apply_rope, attention_mask, wide


def attention_probabilities(attn, x: jax.Array, positions: jax.Array, rope, window) -> jax.Array:
    """[B, T, D] attention inputs (after the pre-attention norm) -> probabilities [B, N, T, T] of one layer."""
    cfg = attn.cfg
    q = jnp.einsum("BTD,DNH->BTNH", x, attn.q[...])
    k = jnp.einsum("BTD,DKH->BTKH", x, attn.k[...])
    if cfg.qkv_bias:
        q, k = q + attn.q_bias[...], k + attn.k_bias[...]
    if cfg.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rope(q, positions, *rope), apply_rope(k, positions, *rope)
    b, t, n, h = q.shape
    q = (q * attn.scale).reshape(b, t, cfg.num_kv_heads, n // cfg.num_kv_heads, h)
    logits = jnp.einsum("BTKGH,BSKH->BKGTS", q, k.astype(q.dtype)).astype(wide(q.dtype))
    mask = attention_mask(positions, positions, window)[:, None, None]
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jax.nn.softmax(logits, axis=-1).reshape(b, n, t, t)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _attention_pass(graphdef, params, ids: jax.Array, length: jax.Array) -> jax.Array:
    """ids [B, S] (each row's real tokens first, `length[b]` of them, then padding) -> [B, L, H, 2, S]: the diagonal
    and row `length[b]` − 1. Causal attention keeps a row's real positions blind to the padding after them, so a
    sequence gives the same numbers alone or in a batch."""
    model = nnx.merge(graphdef, params)
    emb = model.embedding[...]
    x = jnp.take(emb, ids, axis=0)
    if model.cfg.scale_embeddings:
        x = x * jnp.asarray(model.cfg.embed_dim**0.5, dtype=emb.dtype)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1])[None, :], ids.shape)
    rows = (length - 1)[:, None, None, None]  # [B, 1, 1, 1]: each sequence's last real position
    out = []
    for block in model.blocks:
        probs = attention_probabilities(
            block.attn, block.pre_attn_norm(x), positions, block.rope, block.window
        )  # [B, H, S, S]
        diagonal = jnp.diagonal(probs, axis1=-2, axis2=-1)  # [B, H, S]
        last = jnp.take_along_axis(probs, rows, axis=2)[:, :, 0]  # [B, H, S]
        out.append(jnp.stack([diagonal, last], axis=2).astype(jnp.float32))
        x, _ = block(x, positions, None)
    return jnp.stack(out, axis=1)


PROBABILITY_BYTES = 256 << 20
"""Budget for one layer's [B, H, S, S] float32 probabilities in a batch: B shrinks as S grows."""


def batch_size(length: int, heads: int, limit: int = 32) -> int:
    """Sequences per attention pass at bucketed length `length`: the largest power of two ≤ `limit` whose one-layer
    probabilities fit PROBABILITY_BYTES (at least 1). Powers of two keep the compiled shapes few."""
    fit = max(1, PROBABILITY_BYTES // (4 * heads * length * length))
    return 1 << (min(fit, limit).bit_length() - 1)


def attention_statistics(
    lm, prompts: Sequence[str], answers: Sequence[Sequence[int]], suffix: str = "", batch: int | None = 1
) -> list[np.ndarray]:
    """[L, H, 2, P + T] per (prompt, answer token ids): the self-attention diagonal and the last position's row of
    every layer and head over prompt + answer. Sequences of the same length bucket run together, `batch` at a time
    (None: `batch_size` of the bucket, capped at the bucket's sequence count rounded up to a power of two); a short
    last batch is filled with copies of its first sequence, so each bucket compiles one shape. The default, 1, is one
    sequence per pass: on CPU, batches measured slower (docs/benchmarks.md, "Attention pass in batches"), and a
    batch changes float32 reduction order (a few 10⁻⁶ in the weights).

    With a `suffix` (CSL's "Decision:"), its tokens follow the answer and the last row is the query at the suffix's
    end, still over the P + T positions of prompt + answer."""
    graphdef, params = lm.graphdef_and_state
    tail = lm.tokenizer(suffix, add_special_tokens=False)["input_ids"] if suffix else []
    heads = [lm.encode(prompt) + [int(t) for t in answer] for prompt, answer in zip(prompts, answers)]
    sequences = [head + list(tail) for head in heads]
    buckets: dict[int, list[int]] = {}
    for i, ids in enumerate(sequences):
        buckets.setdefault(bucket_length(len(ids)), []).append(i)
    out: list[np.ndarray | None] = [None] * len(sequences)
    for length, members in sorted(buckets.items()):
        size = batch or min(batch_size(length, lm.config.num_heads), 1 << (len(members) - 1).bit_length())
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            rows = chunk + [chunk[0]] * (size - len(chunk))
            padded = np.full((size, length), lm.config.pad_id, np.int32)
            for r, i in enumerate(rows):
                padded[r, : len(sequences[i])] = sequences[i]
            lengths = jnp.asarray([len(sequences[i]) for i in rows], jnp.int32)
            stats = np.asarray(_attention_pass(graphdef, params, jnp.asarray(padded), lengths))
            for r, i in enumerate(chunk):
                out[i] = stats[r, ..., : len(heads[i])]
    return out


def rauq(logprobs: np.ndarray, previous: np.ndarray, alpha: float, layers: Sequence[int]) -> float:
    """RAUQ (Vazhentsev et al. 2025, "Uncertainty-Aware Attention Heads", arXiv 2505.20045).

    previous [L, H, T − 1]: a^{l,h}_j, the weight the step generating y_j puts on y_{j−1}. Per layer l, the head
    h* = argmax_h mean_j a^{l,h}_j; recurrent confidence c_1 = p(y_1), c_j = α p(y_j) + (1 − α) a^{l,h*}_j c_{j−1};
    u_l = −(1/T) Σ_j log c_j; RAUQ = max over the chosen layers of u_l.
    """
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    scores = []
    for layer in layers:
        a = previous[layer]
        head = int(a.mean(-1).argmax()) if a.shape[-1] else 0
        c = [p[0]]
        for j in range(1, len(p)):
            c.append(alpha * p[j] + (1 - alpha) * a[head, j - 1] * c[-1])
        scores.append(-np.mean(np.log(c)))
    return float(np.max(scores))


def middle_layers(num_layers: int) -> list[int]:
    """RAUQ's layers: ⌊L/3⌋ .. ⌈2L/3⌉ (as LM-Polygraph, clipped to the model's L layers)."""
    return [i for i in range(num_layers // 3, int(np.ceil(num_layers * 2 / 3)) + 1) if i < num_layers]


def attention_score(diagonal: np.ndarray) -> float:
    """Attention score (Sriramanan et al. 2024, "LLM-Check", NeurIPS): mean over heads h of Σ_s log A^h[s, s], the
    log-determinant of each head's (lower-triangular) attention matrix over prompt + answer, at one layer.
    diagonal [H, S]. LM-Polygraph adds 1e-12 inside the log; so does this."""
    return float(np.mean(np.sum(np.log(np.asarray(diagonal, dtype=np.float64) + 1e-12), axis=-1)))


def _per_answer(bundle: Bundle, score) -> np.ndarray:
    """score(log-probs, attention statistics) of each greedy answer; NaN for an empty answer."""
    return np.asarray(
        [
            score(lp, stats) if len(lp) else np.nan
            for lp, stats in zip(bundle.greedy_logprobs, bundle.greedy_attention)
        ]
    )


@register_estimator
class RAUQ:
    """RAUQ with α = 0.2 (LM-Polygraph's default for base models; its instruction-tuned default is α = 0.5)."""

    name = "rauq"
    needs = frozenset({Need.GREEDY_TOKENS, Need.ATTENTION})
    computed_by = staticmethod(attention_statistics)  # named so the artifact key follows the pass's code

    def __init__(self, alpha: float = 0.2):
        self.alpha = alpha

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        def one(lp: np.ndarray, stats: np.ndarray) -> float:
            t, s = len(lp), stats.shape[-1]
            previous = stats[:, :, 0, s - t : s - 1]  # A[P + j − 1, P + j − 1] for j = 1 .. T − 1
            return rauq(lp, previous, self.alpha, middle_layers(stats.shape[0]))

        raw = _per_answer(bundle, one)
        return EstimatorResult(confidence=np.exp(-raw), raw=raw, higher_raw_means="uncertain")


@register_estimator
class AttentionScore:
    """Attention score at layer `layer` (default L // 2, as LM-Polygraph) over prompt + greedy answer;
    confidence 1 / (1 − score) (the score is ≤ 0 and unbounded: no underflow to ties)."""

    name = "attention_score"
    needs = frozenset({Need.GREEDY_TOKENS, Need.ATTENTION})
    computed_by = staticmethod(attention_statistics)

    def __init__(self, layer: int | None = None):
        self.layer = layer

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        def one(lp: np.ndarray, stats: np.ndarray) -> float:
            layer = stats.shape[0] // 2 if self.layer is None else self.layer
            return attention_score(stats[layer, :, 0])

        raw = _per_answer(bundle, one)
        return EstimatorResult(
            confidence=1.0 / (1.0 - np.minimum(raw, 0.0)), raw=raw, higher_raw_means="confident"
        )


CSL_PROMPT = """Read the following question with optional context and decide if the answer correctly answer the \
question. Focus on the answer, and reply Y or N.
Context: Luxor International Airport is a airport near Luxor in Egypt (EG). It is 353 km away from the nearest \
seaport (Duba). The offical IATA for this airport is LXR.
Question: Luxor international airport is in which country?
Answer: It is in the United States, and its IATA is LXR.
Decision: N. (The airport is in Egypt, not the United States.)

Context: Harry is a good witcher.
Question: How old is Harry?
Answer: Harry practices witchcraft.
Decision: N. (The answer does not mention Harry's age.)

Question: What is the capital of Kenya?
Answer: Nairobi is the capital of Kenya.
Decision: Y.

Question: Who has won the most Premier League titles since 2015?
Answer: Manchester City have win the most Premier League title after 2015.
Decision: Y. (Grammar errors are ignored.)

Question: {q}
Answer: """
CSL_SUFFIX = "\n\nDecision:"
"""LM-Polygraph 0.7.0's eliciting prompt (Lin et al. 2024's few-shot Y/N judgement), without the source file's
indentation of every line after the first; the greedy answer's token ids follow it, then CSL_SUFFIX."""


def csl(logprobs: np.ndarray, last_row: np.ndarray) -> float:
    """CSL (Lin, Trivedi & Sun 2024, "Contextualized Sequence Likelihood", EMNLP): Σ_t w_t ℓ_t with w the attention
    of the eliciting prompt's last token on the answer's tokens, averaged over layers and heads and normalised to
    sum 1 (LM-Polygraph's form: all heads, no head selection). last_row [L, H, T]."""
    w = np.asarray(last_row, dtype=np.float64).reshape(-1, last_row.shape[-1]).mean(0)
    return float(np.sum(np.asarray(logprobs, dtype=np.float64) * w / w.sum()))


@register_estimator
class CSL:
    """Attention-weighted log-likelihood of the greedy answer; confidence exp(CSL) (a weighted geometric-mean
    token probability)."""

    name = "csl"
    needs = frozenset({Need.GREEDY_TOKENS, Need.QUESTIONS, Need.ATTENTION})
    computed_by = staticmethod(attention_statistics)

    def __call__(self, bundle: Bundle) -> EstimatorResult:
        prompts = [bundle.wrap_prompt(CSL_PROMPT.format(q=q)) for q in bundle.questions]
        ids = [row[0] for row in bundle.greedy.token_ids]
        attention = bundle.attention(prompts, ids, CSL_SUFFIX)
        raw = np.array(
            [
                csl(lp, stats[:, :, 1, stats.shape[-1] - len(lp) :]) if len(lp) else np.nan
                for lp, stats in zip(bundle.greedy_logprobs, attention)
            ]
        )
        return EstimatorResult(
            confidence=np.clip(np.exp(raw), 0.0, 1.0), raw=raw, higher_raw_means="confident"
        )
