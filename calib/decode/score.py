"""Teacher-forced scoring of given continuations, and Full-ECE bin sums accumulated on device.

Full-ECE (Liu et al. 2024) puts every probability of every vocabulary entry at every scored position into M
equal-width bins; three running sums per bin (count, sum of p, hits) suffice, so [positions, V] never leaves the device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.cache import enable_compilation_cache
from calib.decode.planning import bucket
from calib.errors import CalibError
from calib.models.lm import LanguageModel


@dataclass
class FullECEStats:
    """Per-bin sums over all (position, vocabulary entry) pairs, and over the top-1 entry of each position."""

    count: np.ndarray  # [M]
    sum_prob: np.ndarray  # [M]
    sum_hit: np.ndarray  # [M]
    top1_count: np.ndarray  # [M]
    top1_sum_prob: np.ndarray  # [M]
    top1_sum_hit: np.ndarray  # [M]
    n_positions: int

    def __add__(self, other: FullECEStats) -> FullECEStats:
        return FullECEStats(
            self.count + other.count,
            self.sum_prob + other.sum_prob,
            self.sum_hit + other.sum_hit,
            self.top1_count + other.top1_count,
            self.top1_sum_prob + other.top1_sum_prob,
            self.top1_sum_hit + other.top1_sum_hit,
            self.n_positions + other.n_positions,
        )

    def full_ece(self) -> float:
        """(1/n) sum_m |sum_{(i,k) in m} (1[y_i = k] - p_ik)|."""
        return float(np.abs(self.sum_hit - self.sum_prob).sum() / max(self.n_positions, 1))

    def top1_ece(self) -> float:
        """The usual ECE of the top-1 token probability at every scored position."""
        return float(np.abs(self.top1_sum_hit - self.top1_sum_prob).sum() / max(self.n_positions, 1))


def _bin_sums(values: jax.Array, bins: jax.Array, n_bins: int) -> jax.Array:
    return jnp.zeros((n_bins,), jnp.float32).at[bins.reshape(-1)].add(values.reshape(-1).astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("graphdef", "n_bins"))
def _score_batch(graphdef, params, ids, where, targets, mask, *, n_bins: int):
    """Log-prob of each target [B, C] and Full-ECE sums. Only the C scored positions `where` of each row go through
    the LM head (a prompt of T tokens would otherwise cost T x V logits per row); one row's [C, V] at a time."""
    model = nnx.merge(graphdef, params)
    positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
    hidden, _ = model.hidden(ids, positions)
    hidden = jnp.take_along_axis(hidden, where[:, :, None], axis=1)  # [B, C, D]

    def row(args):
        h, tgt, m = args
        logprobs = jax.nn.log_softmax(model.project(h), axis=-1)  # [C, V]
        target_lp = jnp.take_along_axis(logprobs, tgt[:, None], axis=-1)[:, 0]
        if n_bins == 0:
            return target_lp, jnp.zeros((6, 1))
        probs = jnp.exp(logprobs)
        bins = jnp.clip(jnp.floor(probs * n_bins).astype(jnp.int32), 0, n_bins - 1)
        weight = jnp.broadcast_to(m[:, None], probs.shape).astype(jnp.float32)
        target_bin = jnp.take_along_axis(bins, tgt[:, None], axis=-1)[:, 0]
        top_p = probs.max(-1)
        top_bin = jnp.clip(jnp.floor(top_p * n_bins).astype(jnp.int32), 0, n_bins - 1)
        top_hit = (jnp.argmax(logprobs, -1) == tgt) & m
        sums = jnp.stack(
            [
                _bin_sums(weight, bins, n_bins),
                _bin_sums(probs * weight, bins, n_bins),
                _bin_sums(m, target_bin, n_bins),
                _bin_sums(m, top_bin, n_bins),
                _bin_sums(top_p * m, top_bin, n_bins),
                _bin_sums(top_hit, top_bin, n_bins),
            ]
        )
        return target_lp, sums

    target_lp, sums = jax.lax.map(row, (hidden, targets, mask))
    return jnp.where(mask, target_lp, 0.0), sums.sum(0)


def _tokenize_pairs(lm: LanguageModel, prompts, continuations) -> list[tuple[list[int], list[int]]]:
    if len(prompts) != len(continuations):
        raise CalibError(f"score() got {len(prompts)} prompts but {len(continuations)} continuations")
    if len(prompts) == 0:
        raise CalibError("score() needs at least one (prompt, continuation) pair")
    pairs = []
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        p_ids = lm.encode(p) if isinstance(p, str) else [int(t) for t in p]
        c_ids = (
            lm.tokenizer(c, add_special_tokens=False)["input_ids"]
            if isinstance(c, str)
            else [int(t) for t in c]
        )
        if not p_ids or not c_ids:
            raise CalibError(f"score() pair {i} has an empty prompt or continuation")
        if len(p_ids) + len(c_ids) > lm.config.max_context:
            raise CalibError(
                f"score() pair {i} has {len(p_ids) + len(c_ids)} tokens, over the context of {lm.config.max_context}"
            )
        pairs.append((p_ids, c_ids))
    return pairs


def score_with_stats(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    n_bins: int = 15,
    batch_size: int = 8,
) -> tuple[list[np.ndarray], FullECEStats | None]:
    """Per-token log-probs of each continuation given its prompt, plus Full-ECE sums over continuation tokens."""
    enable_compilation_cache()
    pairs = _tokenize_pairs(lm, prompts, continuations)
    graphdef, params = lm.graphdef_and_state
    out: list[np.ndarray] = []
    totals = np.zeros((6, max(n_bins, 1)), np.float64)
    n_positions = 0
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        length = bucket(max(len(pairs[i][0]) + len(pairs[i][1]) for i in idx))
        scored = bucket(max(len(pairs[i][1]) for i in idx), minimum=4)
        ids = np.full((batch_size, length), lm.config.pad_id, np.int32)
        where = np.zeros((batch_size, scored), np.int32)
        targets = np.zeros((batch_size, scored), np.int32)
        mask = np.zeros((batch_size, scored), bool)
        for j, i in enumerate(idx):
            p_ids, c_ids = pairs[i]
            seq = p_ids + c_ids
            ids[j, : len(seq)] = seq
            # the logits at position len(p_ids) - 1 + t predict continuation token t
            where[j, : len(c_ids)] = np.arange(len(c_ids)) + len(p_ids) - 1
            targets[j, : len(c_ids)] = c_ids
            mask[j, : len(c_ids)] = True
        lp, sums = _score_batch(
            graphdef,
            params,
            jnp.asarray(ids),
            jnp.asarray(where),
            jnp.asarray(targets),
            jnp.asarray(mask),
            n_bins=n_bins,
        )
        lp = np.asarray(lp)
        if n_bins:
            totals += np.asarray(sums, np.float64)
        n_positions += int(mask.sum())
        for j, i in enumerate(idx):
            results[i] = lp[j][mask[j]].astype(np.float32)
    out = [results[i] for i in range(len(pairs))]
    stats = FullECEStats(*totals, n_positions=n_positions) if n_bins else None
    return out, stats


def score(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    batch_size: int = 8,
) -> list[np.ndarray]:
    """Teacher-forced natural-log probabilities of each continuation token (strings or token ids)."""
    return score_with_stats(lm, prompts, continuations, n_bins=0, batch_size=batch_size)[0]
