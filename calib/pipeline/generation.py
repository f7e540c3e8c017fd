"""The generate stage: greedy + K samples per question (and R revise passes), written in fixed-size shards so a
killed run loses nothing.

Each shard of `shard_size` prompts is one `generate` call (or one `revise` call when revise passes are asked for)
with `prompt_index_offset` = the shard's first prompt, so its samples are those of one big call (up to float
rounding: batch composition changes matmul rounding by ~1e-6, which is why shard_size is part of the key), and the
fixed shard size keeps compiled shapes repeating. A shard holds one folder per pass (pass0 = the answers, pass1..R =
the revised ones), written whole under a temporary name and renamed (safetensors for the ragged token arrays, JSON
for texts; with revise passes also `revision.safetensors`, the token counts and revised flags of
calib.decode.revise.Revision that the scaling study reads); the artifact's meta.json is written after the last
shard, which marks it complete. A rerun after `kill -9` skips every shard already on disk and produces
bit-identical generations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from calib.cache import atomic_dir
from calib.decode.types import Generations, Sampling
from calib.pipeline.store import ArtifactStore, publish, read_arrays, read_json, write_arrays, write_json
from calib.progress import progress_bar

log = logging.getLogger("calib")

STAGE = "generate"
# What a stored generation depends on besides its inputs: the models, the decoding code, prompt building and the
# shard layout written here (code fingerprint, calib.fingerprint).
CODE_MODULES = ("calib.models", "calib.decode", "calib.tasks.prompts", "calib.pipeline.generation")
RAGGED = ("token_ids", "token_logprobs", "sample_logprobs", "token_entropies", "top_ids", "top_logprobs")


@dataclass(frozen=True)
class DecodingSpec:
    """The decoding settings that determine the generated text (shard_size, also in the key, is passed apart): the
    sampling settings as the one type the decode API has for them (calib.decode.types.Sampling, whose fields are
    generate()'s and revise()'s keyword arguments), and how many answers, from which seed, revised how often."""

    sampling: Sampling
    num_samples: int
    seed: int
    revise_passes: int = 0  # R: times each answer is revised after a cue, continuing its KV cache
    cue: str = "self_check"  # calib.decode.revise.CUES
    style: str | None = None  # prompt style the cue is rendered in (chat / completion)
    include_greedy: bool = True  # False: the K sampled rows only (one sample per T of a temperature sweep)

    @classmethod
    def of(cls, settings: dict, style: str | None) -> DecodingSpec:
        """From a dict of DecodingConfig's fields (plus EXTRA_SETTINGS; shard_size is ignored)."""
        names = {f.name for f in fields(Sampling)}
        sampling = Sampling(
            **{k: v for k, v in settings.items() if k in names and k != "stop"}, stop=tuple(settings["stop"])
        )
        rest = {k: v for k, v in settings.items() if k not in names and k != "shard_size"}
        return cls(sampling, style=style, **rest)


EXTRA_SETTINGS = {"include_greedy": True, "top_logprobs": 5}  # settings that DecodingConfig lacks
COUNTS = "revision.safetensors"  # a revise shard's token counts: decoded, fed, offsets [R+1, n, 1+K], ...


def generate_key(
    lm, dtype: str, style: str, prompts: Sequence[str], settings: dict
) -> tuple[str, dict, DecodingSpec]:
    """(key, inputs, spec) of the generate artifact for these decoding settings (a dict of DecodingConfig's fields,
    e.g. stages.decoding_inputs(cfg.decoding), plus any EXTRA_SETTINGS). Extra settings at their default are left
    out of the key, so a study's artifact is the one a run with the same decoding config stores and reuses."""
    from calib.pipeline.store import artifact_key, content_hash

    settings = {k: v for k, v in settings.items() if not (k in EXTRA_SETTINGS and v == EXTRA_SETTINGS[k])}
    settings["stop"] = list(settings["stop"])
    inputs = {
        "model_digest": lm.digest,
        "dtype": dtype,
        "style": style,
        "prompts": content_hash(list(prompts)),
        "questions": len(prompts),
        "decoding": settings,
    }
    spec = DecodingSpec.of(settings, style)
    return artifact_key(STAGE, code_fingerprint(), inputs), inputs, spec


def code_fingerprint() -> str:
    """The generate stage's code: models, decoding, prompt building and this file's shard layout."""
    from calib.fingerprint import stage_fingerprint

    return stage_fingerprint(modules=CODE_MODULES)


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


def _is_complete(shard: Path) -> bool:
    return (shard / "pass0" / "texts.json").is_file()


def completed_shards(store: ArtifactStore, key: str) -> list[str]:
    """Names of the shards on disk for a generation artifact (complete or not)."""
    shards = store.path(STAGE, key) / "shards"
    if not shards.is_dir():
        return []
    return sorted(p.name for p in shards.iterdir() if not p.name.startswith(".") and _is_complete(p))


def load_shard(folder: Path) -> list[Generations]:
    passes = sorted((p for p in folder.glob("pass*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    if len(passes) > 1 and not (folder / COUNTS).is_file():
        raise ValueError(f"no {COUNTS} (a revise shard stored before token counts were kept)")
    return [load_generations(p) for p in passes]


def save_shard(folder: Path, passes: Sequence[Generations], counts: dict[str, np.ndarray] | None) -> None:
    for r, gens in enumerate(passes):
        (folder / f"pass{r}").mkdir()
        save_generations(gens, folder / f"pass{r}")
    if counts is not None:
        write_arrays(folder / COUNTS, counts)


def revision_counts(store: ArtifactStore, key: str, n: int, shard_size: int) -> dict[str, np.ndarray]:
    """The token counts of a stored revise artifact over every prompt, as in calib.decode.revise.Revision: decoded,
    fed, offsets [R+1, N, 1+K], prompt_tokens and revised [N]."""
    shards = [
        read_arrays(shard_folder(store.path(STAGE, key), a, b) / COUNTS) for a, b in shard_plan(n, shard_size)
    ]
    return {
        name: np.concatenate([s[name] for s in shards], axis=1 if shards[0][name].ndim == 3 else 0)
        for name in shards[0]
    }


def generate_shard(
    lm, prompts: Sequence[str], spec: DecodingSpec, offset: int
) -> tuple[list[Generations], dict[str, np.ndarray] | None]:
    """Passes 0..R for one shard; pass r holds [greedy, sample 1..K] per prompt (greedy only when K = 0, samples
    only when include_greedy is off), and with revise passes the Revision's token counts."""
    options = dict(**asdict(spec.sampling), seed=spec.seed, prompt_index_offset=offset, progress=False)
    if spec.revise_passes == 0:
        from calib.decode import generate

        k, greedy_row = spec.num_samples, spec.num_samples > 0 and spec.include_greedy
        return [
            generate(
                lm, list(prompts), num_samples=max(k, 1), greedy=k == 0, include_greedy=greedy_row, **options
            )
        ], None
    from calib.decode.revise import revise

    revision = revise(
        lm,
        list(prompts),
        num_samples=spec.num_samples,
        passes=spec.revise_passes,
        cue=spec.cue,
        style=spec.style,
        **options,
    )
    counts = {
        name: getattr(revision, name) for name in ("decoded", "fed", "offsets", "prompt_tokens", "revised")
    }
    return list(revision.passes), counts


def run_generate(
    store: ArtifactStore,
    key: str,
    inputs: dict,
    lm,
    prompts: Sequence[str],
    spec: DecodingSpec,
    shard_size: int,
    progress: bool = True,
    process=None,
) -> tuple[list[Generations], dict]:
    """Passes 0..R of generations for every prompt (greedy answer first when K >= 1), from the store or by
    generating the missing shards. Returns (passes, record) where record says what was reused and generated.
    With several processes (calib.distributed.Process) each first generates its share of the shards and waits for
    the others; then every shard is in the store."""
    folder = store.path(STAGE, key)
    cached = store.has(STAGE, key)
    plan = stored_plan(store, key) if cached else None  # readable without the prompts (load_run, tests)
    if plan is None:
        cached, plan = False, shard_plan(len(prompts), shard_size)
    started = time.perf_counter()
    parts, generated = [], 0
    if process is not None and process.count > 1 and not cached:
        for start, stop in process.share(plan):
            target = shard_folder(folder, start, stop)
            if _load_stored_shard(store, target, f"{STAGE}/{key}/shards/{target.name}") is None:
                _make_shard(lm, prompts, spec, start, stop, target)
                generated += 1
        process.barrier(f"generate/{key}")
    bar = progress_bar(
        plan, f"generate ({len(prompts)} questions)", enabled=progress and not cached, unit="shard"
    )
    for start, stop in bar:
        target = shard_folder(folder, start, stop)
        passes = _load_stored_shard(store, target, f"{STAGE}/{key}/shards/{target.name}")
        if passes is None:
            passes = _make_shard(lm, prompts, spec, start, stop, target)
            generated += 1
        parts.append(passes)
    if cached and not generated:
        return _join(parts), {"cached": True, "generated_shards": 0, "reused_shards": len(parts)}
    result = _join(parts)
    seconds = time.perf_counter() - started
    write_json(
        folder / "meta.json",
        {
            "stage": STAGE,
            "key": key,
            "shards": [shard_folder(folder, a, b).name for a, b in plan],
            "questions": len(prompts),
            "passes": len(result),
            "generated_tokens": sum(p.num_generated_tokens() for p in result),
            "seconds_last_run": seconds,
            **inputs,
        },
    )
    record = {"cached": False, "generated_shards": generated, "reused_shards": len(plan) - generated}
    if generated < len(plan):
        log.info("resumed generation: %d of %d shards were already on disk", len(plan) - generated, len(plan))
    return result, record


def _make_shard(lm, prompts: Sequence[str], spec: DecodingSpec, start: int, stop: int, target: Path):
    passes, counts = generate_shard(lm, prompts[start:stop], spec, start)
    with atomic_dir(target) as tmp:
        save_shard(tmp, passes, counts)
        publish(tmp)
    return passes


def stored_plan(store: ArtifactStore, key: str) -> list[tuple[int, int]] | None:
    """The (start, stop) of every shard a finished generation artifact lists; None if its meta.json is unreadable."""
    try:
        names = store.meta(STAGE, key)["shards"]
        return [(int(a), int(b)) for a, b in (name.split("-") for name in names)]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _load_stored_shard(store: ArtifactStore, shard: Path, label: str) -> list[Generations] | None:
    """A finished shard's passes, or None when it is missing or damaged (then set aside, to be generated again)."""
    if not _is_complete(shard):
        return None
    try:
        return load_shard(shard)
    except Exception as err:  # an empty or cut-short file left by a crash or a full disk
        store.set_aside(shard, label, err)
        return None


def _join(parts: list[list[Generations]]) -> list[Generations]:
    """Shards [s][r] -> passes [r], each over every prompt."""
    return [concat_generations([shard[r] for shard in parts]) for r in range(len(parts[0]))]


def split_passes(
    passes: list[Generations], num_samples: int
) -> tuple[Generations, Generations | None, list[Generations]]:
    """(graded greedy answers [N, 1], samples [N, K] or None, passes for the revision estimators).

    With revise passes the graded answer and the samples are the final pass's; the bundle gets every pass
    (greedy answer first in each). Without them there are no passes to compare."""
    final = passes[-1]
    greedy = final.select(slice(0, 1))
    samples = final.select(slice(1, None)) if num_samples > 0 else None
    return greedy, samples, list(passes) if len(passes) > 1 else []
