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

from calib.decode.planning import bucket, bucket_length
from calib.decode.sampling import distribution_statistics
from calib.devices import constrain, constrain_state, data_size, put_rows
from calib.errors import CalibError
from calib.models.lm import LanguageModel
from calib.models.transformer import init_cache

MAX_SHARED = 8  # continuations sharing one encoded prompt in a batch (their rows repeat its KV cache)
MIN_SHARED_PREFIX = 16  # a prefix common to all prompts of a call is encoded once when at least this long


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


@functools.partial(jax.jit, static_argnames=("graphdef", "n_bins", "repeats", "distribution", "mesh"))
def _score_batch(
    graphdef,
    params,
    prefix_ids,
    prefix_len,
    prompt_ids,
    prompt_lengths,
    cont_ids,
    mask,
    *,
    repeats: int,
    n_bins: int,
    distribution: tuple[tuple[str, float], ...] | None = None,
    mesh=None,
):
    """Log-prob of each continuation token [B * repeats, C] and Full-ECE sums over them.

    Three levels of sharing, each encoded once: a token prefix common to every prompt of the call [1, S] (the chat
    template and instructions of P(True) prompts; its first `prefix_len` tokens are real), each prompt's own rest
    [B, P], and its `repeats` continuations (P(True) scores " (A)" and " (B)" after the same prompt) reading the
    cache of both. Only continuation positions go through the LM head, one row's [C, V] at a time. With a `mesh`,
    rows are split over "data" (the shared prefix, one row, is encoded on every device) and so are the outputs.
    """
    model = nnx.merge(graphdef, params)
    b, p = prompt_ids.shape
    c, shared = cont_ids.shape[1], prefix_ids.shape[1]
    cache = init_cache(model.cfg, 1 if shared else b, shared + p + c, model.embedding[...].dtype)
    if shared:
        _, cache = model.hidden(prefix_ids, jnp.arange(shared)[None, :], cache)
        cache = jax.tree.map(lambda x: jnp.repeat(x, b, axis=0), cache)
    cache = constrain_state(cache, mesh)
    h, cache = model.hidden(prompt_ids, prefix_len + jnp.broadcast_to(jnp.arange(p), (b, p)), cache)
    h, cache = constrain(h, mesh, "data"), constrain_state(cache, mesh)
    rep = lambda x: jnp.repeat(x, repeats, axis=0)  # noqa: E731
    last = rep(h[jnp.arange(b), prompt_lengths - 1])  # [R, D]: predicts each continuation's first token
    positions = rep(prefix_len + prompt_lengths)[:, None] + jnp.arange(c)[None, :]
    h_cont, _ = model.hidden(cont_ids, positions, jax.tree.map(rep, cache))
    predicting = constrain(
        jnp.concatenate([last[:, None], h_cont[:, :-1]], axis=1), mesh, "data"
    )  # [R, C, D]

    if n_bins == 0:  # one LM-head matmul for every row: the head's weights are read once, not once per row
        logits = model.project(predicting)  # [R, C, V]
        target = jnp.take_along_axis(logits, cont_ids[..., None], axis=-1)[..., 0]
        target_lp = target - jax.nn.logsumexp(logits, axis=-1)
        target_lp = constrain(jnp.where(mask, target_lp, 0.0), mesh, "data")
        if distribution is not None:  # [R, C, 5] whole-distribution scalars per token (sampling.py)
            stats = distribution_statistics(logits, cont_ids, **dict(distribution))
            return target_lp, constrain(stats, mesh, "data")
        return target_lp, jnp.zeros((6, 1))

    def row(args):
        h, tgt, m = args
        logprobs = jax.nn.log_softmax(model.project(h), axis=-1)  # [C, V]
        target_lp = jnp.take_along_axis(logprobs, tgt[:, None], axis=-1)[:, 0]
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

    # one row per device at a time: rows [R] -> [R / d, d] with d = the "data" size, mapped over the first axis, so
    # the loop runs over each device's own rows instead of over the split axis (which would gather every row)
    d = data_size(mesh)
    split = lambda x: jnp.swapaxes(constrain(x.reshape(d, -1, *x.shape[1:]), mesh, "data"), 0, 1)  # noqa: E731
    target_lp, sums = jax.lax.map(jax.vmap(row), (split(predicting), split(cont_ids), split(mask)))
    target_lp = constrain(jnp.swapaxes(target_lp, 0, 1).reshape(mask.shape), mesh, "data")
    return jnp.where(mask, target_lp, 0.0), sums.sum((0, 1))


def _shared_prefix(pairs: list[tuple[list[int], list[int]]]) -> int:
    """Length of the token prefix common to every prompt, leaving each prompt at least one token of its own."""
    first = np.asarray(pairs[0][0])
    n = min(len(p_ids) for p_ids, _ in pairs) - 1
    for p_ids, _ in pairs[1:]:
        if n <= 0:
            break
        differ = np.flatnonzero(first[:n] != np.asarray(p_ids[:n]))
        n = int(differ[0]) if differ.size else n
    return max(n, 0)


def _group_by_prompt(pairs: list[tuple[list[int], list[int]]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, indices of its pairs), at most MAX_SHARED continuations per group, shortest prompts first."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p_ids, _) in enumerate(pairs):
        groups.setdefault(tuple(p_ids), []).append(i)
    out = [
        (list(key), members[k : k + MAX_SHARED])
        for key, members in groups.items()
        for k in range(0, len(members), MAX_SHARED)
    ]
    return sorted(out, key=lambda g: (len(g[0]), len(g[1])))


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
    batch_size: int = 16,
    distribution: dict[str, float] | None = None,
) -> tuple[list[np.ndarray], FullECEStats | list[np.ndarray] | None]:
    """Per-token log-probs of each continuation given its prompt, plus Full-ECE sums over continuation tokens
    (or, with `distribution` options and n_bins = 0, each continuation's [T, 5] `distribution_statistics`)."""
    if distribution is not None and n_bins:
        raise CalibError("score_with_stats: distribution statistics need n_bins=0 (use score_distribution)")
    pairs = _tokenize_pairs(lm, prompts, continuations)
    graphdef, params = lm.graphdef_and_state
    totals = np.zeros((6, max(n_bins, 1)), np.float64)
    n_positions = 0
    results: dict[int, np.ndarray] = {}
    dists: dict[int, np.ndarray] = {}
    options = None if distribution is None else tuple(sorted(distribution.items()))
    groups = _group_by_prompt(pairs)
    n_shared = _shared_prefix(pairs)
    if n_shared < MIN_SHARED_PREFIX:
        n_shared = 0
    prefix_ids = np.full((1, bucket_length(n_shared) if n_shared else 0), lm.config.pad_id, np.int32)
    prefix_ids[0, :n_shared] = pairs[0][0][:n_shared]
    batch_size = min(batch_size, bucket(len(groups), 1))  # a small call pads to a small batch
    d = data_size(lm.mesh)
    batch_size += -batch_size % d  # rows split evenly over the "data" axis
    mesh = lm.mesh if lm.mesh is not None and lm.mesh.devices.size > 1 else None
    for start in range(0, len(groups), batch_size):
        batch = [(p_ids[n_shared:], members) for p_ids, members in groups[start : start + batch_size]]
        repeats = bucket(max(len(members) for _, members in batch), minimum=1)
        length = bucket_length(max(len(p_ids) for p_ids, _ in batch))
        scored = bucket(max(len(pairs[i][1]) for _, members in batch for i in members), minimum=4)
        prompt_ids = np.full((batch_size, length), lm.config.pad_id, np.int32)
        prompt_lengths = np.ones((batch_size,), np.int32)
        cont_ids = np.full((batch_size * repeats, scored), lm.config.pad_id, np.int32)
        mask = np.zeros((batch_size * repeats, scored), bool)
        rows: dict[int, int] = {}
        for g, (p_ids, members) in enumerate(batch):
            prompt_ids[g, : len(p_ids)] = p_ids
            prompt_lengths[g] = len(p_ids)
            for j, i in enumerate(members):
                c_ids = pairs[i][1]
                rows[i] = g * repeats + j
                cont_ids[rows[i], : len(c_ids)] = c_ids
                mask[rows[i], : len(c_ids)] = True
        lp, sums = _score_batch(  # numpy inputs: an eager jnp.asarray would build a program per shape
            graphdef,
            params,
            prefix_ids,
            np.int32(n_shared),
            *put_rows((prompt_ids, prompt_lengths, cont_ids, mask), mesh),
            repeats=repeats,
            n_bins=n_bins,
            distribution=options,
            mesh=mesh,
        )
        lp = np.asarray(lp)
        if options is not None:
            sums = np.asarray(sums)
        if n_bins:
            totals += np.asarray(sums, np.float64)
        n_positions += int(mask.sum())
        for i, r in rows.items():
            results[i] = lp[r][mask[r]].astype(np.float32)
            if options is not None:
                dists[i] = sums[r][mask[r]]
    out = [results[i] for i in range(len(pairs))]
    if options is not None:
        return out, [dists[i] for i in range(len(pairs))]
    stats = FullECEStats(*totals, n_positions=n_positions) if n_bins else None
    return out, stats


def score(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Teacher-forced natural-log probabilities of each continuation token (strings or token ids)."""
    return score_with_stats(lm, prompts, continuations, n_bins=0, batch_size=batch_size)[0]


def score_distribution(
    lm: LanguageModel,
    prompts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    batch_size: int = 16,
    **options: float,
) -> list[np.ndarray]:
    """[T, 5] whole-distribution statistics at each continuation token, teacher-forced (columns and options:
    calib.decode.sampling.distribution_statistics). Scoring the generated tokens gives the decode loop's numbers."""
    return score_with_stats(
        lm, prompts, continuations, n_bins=0, batch_size=batch_size, distribution=options
    )[1]
