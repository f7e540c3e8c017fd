"""Artifact store: keys, atomic writes, Generations round-trips, and sharded generation equal to one call."""

import json

import numpy as np
import pytest

from calib.decode.types import Generations
from calib.pipeline import generation
from calib.pipeline.store import ArtifactStore, artifact_key, canonical_json, read_arrays, write_arrays


def test_key_is_stable_and_changes_with_every_input():
    inputs = {"model": "abc", "decoding": {"num_samples": 10, "temperature": 1.0}, "prompts": "h1"}
    key = artifact_key("generate", "code1", inputs)
    assert key == artifact_key(
        "generate", "code1", json.loads(json.dumps(inputs))
    )  # same values, fresh objects
    assert key == artifact_key(
        "generate", "code1", dict(reversed(list(inputs.items())))
    )  # key order is irrelevant
    assert len(key) == 20 and int(key, 16) >= 0
    changed = [
        artifact_key("generate", "code2", inputs),  # code fingerprint
        artifact_key("grade", "code1", inputs),  # stage
        artifact_key("generate", "code1", {**inputs, "model": "abd"}),
        artifact_key("generate", "code1", {**inputs, "decoding": {"num_samples": 11, "temperature": 1.0}}),
        artifact_key("generate", "code1", {**inputs, "decoding": {"num_samples": 10, "temperature": 0.7}}),
    ]
    assert len({key, *changed}) == 1 + len(changed)


def test_canonical_json_rejects_unhashable_objects():
    assert canonical_json({"b": np.int64(2), "a": (1, 2)}) == '{"a":[1,2],"b":2}'
    with pytest.raises(TypeError, match="artifact key"):
        canonical_json({"x": object()})


def test_put_is_all_or_nothing(tmp_path):
    store = ArtifactStore(tmp_path)

    def broken(folder):
        (folder / "half.txt").write_text("partial")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        store.put("estimate", "k1", broken, {})
    assert not store.has("estimate", "k1")
    assert list((tmp_path / "estimate").iterdir()) == []  # the temporary folder is gone too
    store.put("estimate", "k1", lambda f: write_arrays(f / "a.safetensors", {"x": np.arange(3.0)}), {"n": 3})
    assert store.has("estimate", "k1") and store.keys("estimate") == ["k1"]
    assert store.meta("estimate", "k1")["n"] == 3
    np.testing.assert_array_equal(
        read_arrays(store.path("estimate", "k1") / "a.safetensors")["x"], np.arange(3.0)
    )


def _fake_generations(n: int, k: int, seed: int) -> Generations:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 5, size=(n, k))  # includes empty answers
    ragged = lambda dtype, *tail: [  # noqa: E731
        [rng.normal(size=(int(t), *tail)).astype(dtype) for t in row] for row in lengths
    ]
    return Generations(
        prompts=[f"p{i}" for i in range(n)],
        texts=[[f"answer {i}.{s} ü" for s in range(k)] for i in range(n)],
        token_ids=[[rng.integers(0, 100, int(t)).astype(np.int32) for t in row] for row in lengths],
        token_logprobs=ragged(np.float32),
        sample_logprobs=ragged(np.float32),
        token_entropies=ragged(np.float32),
        top_ids=[[rng.integers(0, 100, (int(t), 5)).astype(np.int32) for t in row] for row in lengths],
        top_logprobs=ragged(np.float32, 5),
        stop_reasons=[[("stop", "eos", "length")[s % 3] for s in range(k)] for _ in range(n)],
        hidden=[rng.normal(size=(k, 4)).astype(np.float32) for _ in range(n)],
        meta={"seconds": 1.5, "prompt_tokens": 10, "include_greedy": True},
    )


def _assert_same(a: Generations, b: Generations, exact: bool = True) -> None:
    """Texts, tokens and stop reasons identical; float statistics bit-identical (exact) or to float32 rounding."""
    assert a.prompts == b.prompts and a.texts == b.texts and a.stop_reasons == b.stop_reasons
    for name in generation.RAGGED:
        for row_a, row_b in zip(getattr(a, name), getattr(b, name)):
            for x, y in zip(row_a, row_b):
                assert x.dtype == y.dtype and x.shape == y.shape
                if exact or x.dtype.kind == "i":
                    np.testing.assert_array_equal(x, y)
                else:
                    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
    for x, y in zip(a.hidden, b.hidden):
        np.testing.assert_allclose(x, y, rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5)


def test_generations_round_trip_and_concat(tmp_path):
    parts = [_fake_generations(3, 4, seed=0), _fake_generations(2, 4, seed=1)]
    for i, part in enumerate(parts):
        (tmp_path / str(i)).mkdir()
        generation.save_generations(part, tmp_path / str(i))
    loaded = [generation.load_generations(tmp_path / str(i)) for i in range(2)]
    for a, b in zip(parts, loaded):
        _assert_same(a, b)
    joined = generation.concat_generations(loaded)
    assert joined.num_prompts == 5 and joined.meta["seconds"] == 3.0 and joined.meta["prompt_tokens"] == 20
    assert joined.texts[3] == parts[1].texts[0]
    np.testing.assert_array_equal(joined.top_logprobs[4][1], parts[1].top_logprobs[1][1])


def test_shard_plan_covers_every_prompt_once():
    plan = generation.shard_plan(70, 32)
    assert plan == [(0, 32), (32, 64), (64, 70)]
    assert generation.shard_plan(3, 32) == [(0, 3)]


def test_sharded_generation_matches_one_call_and_resumes_bit_identically(tmp_path, tiny_llama):
    """The resume guarantee: shards are generated with their prompt offsets, so the samples are those of one call,
    and a shard regenerated after a crash is bit-identical to the lost one (same prompts, same shapes)."""
    import shutil

    from calib.decode import generate
    from calib.decode.types import Sampling

    prompts = [f"Question {i}: what is {i} + {i}?" for i in range(5)]
    spec = generation.DecodingSpec(Sampling(max_new_tokens=6, stop=("\n",)), num_samples=2, seed=3)
    store = ArtifactStore(tmp_path)
    (sharded,), record = generation.run_generate(
        store, "k", {"x": 1}, tiny_llama, prompts, spec, 2, progress=False
    )
    assert record == {"cached": False, "generated_shards": 3, "reused_shards": 0}
    whole = generate(tiny_llama, prompts, num_samples=2, max_new_tokens=6, include_greedy=True, seed=3)
    # Same sampled tokens; log-probs from differently shaped batches may differ in the last float32 bit.
    _assert_same(whole, sharded, exact=False)

    (again,), record = generation.run_generate(
        store, "k", {"x": 1}, tiny_llama, prompts, spec, 2, progress=False
    )
    assert record["cached"] and record["generated_shards"] == 0
    _assert_same(sharded, again)

    # A run killed after two shards: the third shard and the completion marker are missing.
    folder = store.path("generate", "k")
    (folder / "meta.json").unlink()
    shutil.rmtree(generation.shard_folder(folder, 2, 4))
    assert not store.has("generate", "k")
    (resumed,), record = generation.run_generate(
        store, "k", {"x": 1}, tiny_llama, prompts, spec, 2, progress=False
    )
    assert record == {"cached": False, "generated_shards": 1, "reused_shards": 2}
    _assert_same(sharded, resumed)
    greedy, samples, passes = generation.split_passes([resumed], 2)
    assert greedy.num_samples == 1 and samples.num_samples == 2 and passes == []
