"""Static shapes and memory: bucket sizes, how many prompts fit in one compiled batch, and a decode plan per backend.

Every distinct static shape is one more compiled program (tens of seconds each for a cold XLA:GPU compile of a
32-layer model), so the plan keeps the shapes few: one record buffer for every max_new_tokens up to its length,
cache lengths from fixed buckets, and (on CPU only, where it measured faster) a small ladder of shrunken batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax

from calib.errors import CalibError
from calib.models.config import ModelConfig
from calib.models.transformer import cache_bytes


def bucket(n: int, minimum: int = 16) -> int:
    """Round up to a power of two (at least `minimum`) so a handful of compilations cover every length."""
    size = minimum
    while size < n:
        size *= 2
    return size


def bucket_length(n: int, minimum: int = 16) -> int:
    """A sequence length bucket: multiples of 16 up to 128, then multiples of 64.

    Padding costs prefill FLOPs and, on every decode step, attention over the padded cache: a 42-token P(True)
    prompt pads to 48 rather than 64, a 155-token few-shot prompt to 192 rather than 256, at the price of a few
    more compiled shapes (kept in the persistent compilation cache).
    """
    step = 16 if n <= 128 else 64
    return max(minimum, -(-n // step) * step)


CACHE_STEP = 64  # KV-cache lengths are multiples of this


def cache_length(longest_prompt: int, room: int) -> int:
    """KV-cache slots of a decode session: the prompt bucket plus the bucketed room to generate (and append) into,
    rounded up to a multiple of CACHE_STEP.

    Every cache length is one more decode, prefill and row-moving program per batch size: the main job's batches
    longest prompts need 112, 128 or 144 slots, now 128 or 192. Attention over the padding slots costs a few percent of a
    decode step for the built-in models (its share grows with the cache: 2·S·D against ~12·D² per token and layer).
    The memory planner and DecodeSession both use it, so the size planned for is the size allocated.
    """
    slots = bucket_length(longest_prompt) + bucket(room)
    return -(-slots // CACHE_STEP) * CACHE_STEP


@dataclass(frozen=True)
class DecodePlan:
    """How a backend decodes: batch caps, prefill groups, and whether stopped rows leave the batch.

    CPU: today's measured tuning. Answers end at different steps and one long answer keeps a whole batch of 176
    rows decoding, so once at most 1/`shrink_factor` of >= `min_shrink_rows` rows still run they move to a smaller
    batch (the next power of two >= 8 rows): on 2 cores a step's cost is proportional to its rows.
    GPU/TPU: a decode step is weight-bandwidth bound, so idle rows cost almost nothing while every shrunken size is
    another compiled program: no shrink step; rows and prefill groups come from the memory plan
    (`prompts_per_batch`, `prefill_group_size`), which counts prefill attention scores and scoring logits.
    """

    backend: str
    max_rows: int  # rows of one compiled decode batch at most (the memory plan may allow fewer)
    prefill_group: int  # prompts encoded together at most
    shrink: bool  # move the few rows still running to a smaller batch
    shrink_factor: int = 4
    min_shrink_rows: int = 32
    min_buffer: int = 16  # the record buffer: max_new_tokens rounded up to a power of two at least this

    def buffer(self, max_new_tokens: int) -> int:
        """Steps the compiled decode loop records: one program serves every max_new_tokens up to this."""
        return bucket(max_new_tokens, self.min_buffer)

    def stop_below(self, rows: int) -> int:
        """The loop hands over to a smaller batch once no more than this many rows run (0: never)."""
        return rows // self.shrink_factor if self.shrink and rows >= self.min_shrink_rows else 0

    def shrunk_rows(self, running: int, num_devices: int) -> int:
        """Rows of the smaller batch that goes on with `running` rows: 8, 16, 32, ... (a multiple of the devices)."""
        size = bucket(running, 8)
        return size + (-size % num_devices)


CPU_PLAN = DecodePlan("cpu", max_rows=256, prefill_group=16, shrink=True)


def decode_plan(backend: str | None = None) -> DecodePlan:
    """The plan for `backend` (default: jax.default_backend()); GPU and TPU share the accelerator plan."""
    backend = backend or jax.default_backend()
    if backend == "cpu":
        return CPU_PLAN
    return DecodePlan(backend, max_rows=1024, prefill_group=64, shrink=False)


def prefill_bytes(cfg: ModelConfig, prompts: int, length: int, itemsize: int) -> int:
    """Device bytes of one prefill call: attention scores and probabilities [B, K, G, P, P] in float32 for one
    layer at a time, the activations and MLP hidden of [B, P] tokens, and the group's own cache."""
    scores = 2 * prompts * cfg.num_heads * length * length * 4  # [B, K, G, P, P], K * G = heads
    activations = prompts * length * (4 * cfg.embed_dim + 2 * cfg.ffw_dim) * 4
    return scores + activations + cache_bytes(cfg, prompts, length) * itemsize // 4


def scoring_bytes(cfg: ModelConfig, rows: int, length: int, itemsize: int) -> int:
    """Device bytes of scoring `rows` continuations of `length` tokens: the [R, C, V] float32 logits and their
    log-softmax (the LM head runs over every row at once), plus the rows' cache."""
    return 2 * rows * length * cfg.vocab_size * 4 + cache_bytes(cfg, rows, length) * itemsize // 4


def prefill_group_size(plan: DecodePlan, cfg: ModelConfig, length: int, itemsize: int, budget: int) -> int:
    """Prompts encoded together: the plan's cap, halved until one prefill call fits the budget (a power of two)."""
    group = plan.prefill_group
    while group > 1 and prefill_bytes(cfg, group, length, itemsize) > budget:
        group //= 2
    return group


def prefill_group_for(plan: DecodePlan, cfg: ModelConfig, longest_prompt: int, itemsize: int) -> int:
    """Prompts a DecodeSession encodes together: the CPU plan's measured 16, or on an accelerator the largest group
    whose prefill temporaries fit a quarter of the free device memory (long prompts: smaller groups)."""
    if plan.backend == "cpu":
        return plan.prefill_group
    return prefill_group_size(plan, cfg, bucket_length(longest_prompt), itemsize, free_memory_bytes() // 4)


def free_memory_bytes() -> int:
    """Free memory of the first device (accelerator stats, else the host's available RAM)."""
    stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 8 << 30


def bytes_per_row(cfg: ModelConfig, cache_len: int, steps: int, top: int, itemsize: int) -> int:
    """Device bytes one decoding row needs: its KV cache, vocabulary-sized temporaries and the record buffers."""
    cache = cache_bytes(cfg, 1, cache_len) * itemsize // 4
    vocab_temps = 8 * cfg.vocab_size * 4
    record = steps * (16 + 8 * top) + cfg.embed_dim * 8
    return cache + vocab_temps + record


def prompts_per_batch(
    cfg: ModelConfig,
    num_prompts: int,
    rows_per_prompt: int,
    cache_len: int,
    steps: int,
    top: int,
    itemsize: int,
    budget_bytes: int | None,
    max_rows: int,
    num_devices: int,
    plan: DecodePlan | None = None,
    longest_prompt: int = 0,
) -> int:
    """Prompts per compiled batch, a multiple of the devices that fits the memory budget and the row cap.

    A power of two, except when every prompt fits in one batch of more than 16: then the count rounded up to a
    multiple of 16 (200 verbalized-confidence prompts run as 208 rows, not 256). On an accelerator the budget
    first sets aside one prefill call's temporaries (`prefill_bytes` of the plan's group at `longest_prompt`).
    """
    budget = budget_bytes if budget_bytes is not None else int(0.5 * free_memory_bytes())
    if plan is not None and plan.backend != "cpu" and longest_prompt:
        length = bucket_length(longest_prompt)
        group = prefill_group_size(plan, cfg, length, itemsize, budget // 2)
        budget -= prefill_bytes(cfg, group, length, itemsize)
    per_prompt = rows_per_prompt * bytes_per_row(cfg, cache_len, steps, top, itemsize)
    fit = min(budget // max(per_prompt, 1), max(max_rows // rows_per_prompt, 1))
    if fit < 1:
        raise CalibError(
            f"one prompt with {rows_per_prompt} samples needs {per_prompt / 2**20:.2f} MiB, over the memory budget of "
            f"{budget / 2**20:.2f} MiB: lower decoding.num_samples or decoding.max_new_tokens, or pass a larger "
            "memory_budget (bytes) to generate()"
        )
    power = 1
    while power * 2 <= fit:
        power *= 2
    b = min(bucket(num_prompts, 1), power)  # powers of two: few distinct compiled batch sizes
    if 16 < num_prompts <= fit:
        b = min(-(-num_prompts // 16) * 16, fit)
    return max(num_devices, b - b % num_devices)
