"""The generate stage: greedy + K samples per question, written in fixed-size shards so a killed run loses nothing.

Each shard of `shard_size` prompts is one `generate` call with `prompt_index_offset` = the shard's first prompt, so
its samples are exactly those of one big call, and the fixed shard size keeps compiled shapes repeating. A shard is
written whole under a temporary name and renamed (safetensors for the ragged token arrays, JSON for texts); the
artifact's meta.json is written after the last shard, which marks it complete. A rerun after `kill -9` skips every
shard already on disk and produces bit-identical generations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calib.cache import atomic_dir
from calib.decode.types import Generations
from calib.pipeline.store import ArtifactStore, publish, read_arrays, read_json, write_arrays, write_json
from calib.progress import progress_bar

log = logging.getLogger("calib")

STAGE = "generate"
VERSION = 1  # bump when the stored layout or what a shard contains changes
RAGGED = ("token_ids", "token_logprobs", "sample_logprobs", "token_entropies", "top_ids", "top_logprobs")


@dataclass(frozen=True)
class DecodingSpec:
    """The decoding settings that determine the generated text (shard_size does not: sharding is exact)."""

    num_samples: int
    max_new_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    min_p: float | None
    stop: tuple[str, ...]
    seed: int


# ---- (de)serialisation of Generations ---------------------------------------------------------------------------
def save_generations(gens: Generations, folder: Path) -> None:
    """Ragged per-token arrays concatenated in (prompt, sample) order with a [N, K] length table."""
    lengths = np.array(gens.lengths, dtype=np.int64).reshape(gens.num_prompts, gens.num_samples)
    arrays = {"lengths": lengths}
    for name in RAGGED:
        pieces = [np.asarray(a) for row in getattr(gens, name) for a in row]
        arrays[name] = np.concatenate(pieces, axis=0)
    if gens.hidden:
        arrays["hidden"] = np.stack([np.asarray(h, dtype=np.float32) for h in gens.hidden])
    write_arrays(folder / "arrays.safetensors", arrays)
    write_json(
        folder / "texts.json",
        {"prompts": gens.prompts, "texts": gens.texts, "stop_reasons": gens.stop_reasons, "meta": gens.meta},
    )


def load_generations(folder: Path) -> Generations:
    arrays = read_arrays(folder / "arrays.safetensors")
    texts = read_json(folder / "texts.json")
    lengths = arrays["lengths"]
    bounds = np.concatenate([[0], np.cumsum(lengths.reshape(-1))])
    n, k = lengths.shape
    fields = {}
    for name in RAGGED:
        flat = arrays[name]
        fields[name] = [[flat[bounds[i * k + s] : bounds[i * k + s + 1]] for s in range(k)] for i in range(n)]
    hidden = list(arrays["hidden"]) if "hidden" in arrays else []
    return Generations(
        prompts=texts["prompts"],
        texts=texts["texts"],
        stop_reasons=texts["stop_reasons"],
        hidden=hidden,
        meta=texts["meta"],
        **fields,
    )


def concat_generations(parts: Sequence[Generations]) -> Generations:
    """One Generations from consecutive shards; meta keeps the settings, sums seconds and token counts."""
    first = parts[0]
    joined = {
        name: [row for part in parts for row in getattr(part, name)]
        for name in ("prompts", "texts", "stop_reasons", "hidden", *RAGGED)
    }
    meta = dict(first.meta)
    for counter in ("seconds", "prompt_tokens"):
        if all(counter in p.meta for p in parts):
            meta[counter] = sum(p.meta[counter] for p in parts)
    return Generations(meta=meta, **joined)


# ---- the stage --------------------------------------------------------------------------------------------------
def shard_plan(n: int, shard_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + shard_size, n)) for start in range(0, n, shard_size)]


def shard_folder(folder: Path, start: int, stop: int) -> Path:
    return folder / "shards" / f"{start:06d}-{stop:06d}"


def completed_shards(store: ArtifactStore, key: str) -> list[str]:
    """Names of the shards on disk for a generation artifact (complete or not)."""
    shards = store.path(STAGE, key) / "shards"
    if not shards.is_dir():
        return []
    return sorted(
        p.name for p in shards.iterdir() if not p.name.startswith(".") and (p / "texts.json").is_file()
    )


def run_generate(
    store: ArtifactStore,
    key: str,
    inputs: dict,
    lm,
    prompts: Sequence[str],
    spec: DecodingSpec,
    shard_size: int,
    progress: bool = True,
) -> tuple[Generations, dict]:
    """Generations for every prompt (greedy answer first when K >= 1), from the store or by generating the
    missing shards. Returns (generations, record) where record says what was reused and what was generated."""
    from calib.decode import generate

    folder = store.path(STAGE, key)
    if store.has(STAGE, key):
        meta = store.meta(STAGE, key)
        parts = [load_generations(folder / "shards" / name) for name in meta["shards"]]
        return concat_generations(parts), {"cached": True, "generated_shards": 0, "reused_shards": len(parts)}
    plan = shard_plan(len(prompts), shard_size)
    started = time.perf_counter()
    parts, generated = [], 0
    bar = progress_bar(plan, f"generate ({len(prompts)} questions)", enabled=progress, unit="shard")
    for start, stop in bar:
        target = shard_folder(folder, start, stop)
        if (target / "texts.json").is_file():
            parts.append(load_generations(target))
            continue
        gens = generate(
            lm,
            list(prompts[start:stop]),
            num_samples=max(spec.num_samples, 1),
            max_new_tokens=spec.max_new_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            top_k=spec.top_k,
            min_p=spec.min_p,
            greedy=spec.num_samples == 0,
            include_greedy=spec.num_samples > 0,
            stop=spec.stop,
            seed=spec.seed,
            prompt_index_offset=start,
            progress=False,
        )
        with atomic_dir(target) as tmp:
            save_generations(gens, tmp)
            publish(tmp)
        parts.append(gens)
        generated += 1
    result = concat_generations(parts)
    seconds = time.perf_counter() - started
    write_json(
        folder / "meta.json",
        {
            "stage": STAGE,
            "key": key,
            "shards": [shard_folder(folder, a, b).name for a, b in plan],
            "questions": len(prompts),
            "generated_tokens": result.num_generated_tokens(),
            "seconds_last_run": seconds,
            **inputs,
        },
    )
    record = {"cached": False, "generated_shards": generated, "reused_shards": len(plan) - generated}
    if generated < len(plan):
        log.info("resumed generation: %d of %d shards were already on disk", len(plan) - generated, len(plan))
    return result, record


def split_greedy(gens: Generations, num_samples: int) -> tuple[Generations, Generations | None]:
    """(greedy answers [N, 1], samples [N, K] or None when the run is greedy-only)."""
    if num_samples == 0:
        return gens, None
    return gens.split_greedy()
