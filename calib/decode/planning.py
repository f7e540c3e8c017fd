"""Static shapes and memory: bucket sizes, and how many prompts fit in one compiled batch."""

from __future__ import annotations

import os

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


def cache_length(longest_prompt: int, room: int) -> int:
    """KV-cache slots of a decode session: the prompt bucket plus the bucketed room to generate (and append) into.

    The memory planner and DecodeSession both use it, so the size planned for is the size allocated.
    """
    return bucket_length(longest_prompt) + bucket(room)


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
) -> int:
    """Prompts per compiled batch, a multiple of the devices that fits the memory budget and the row cap.

    A power of two, except when every prompt fits in one batch of more than 16: then the count rounded up to a
    multiple of 16 (200 verbalized-confidence prompts run as 208 rows, not 256).
    """
    budget = budget_bytes if budget_bytes is not None else int(0.5 * free_memory_bytes())
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
