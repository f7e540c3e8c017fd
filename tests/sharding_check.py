"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/test_sharding.py starts it in a subprocess):
the same tiny model on one device and on meshes (4, 1), (2, 2), (1, 4); prints one JSON line of what each produced.
"""

from __future__ import annotations

import importlib
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from calib.decode import generate, session
from calib.decode.revise import revise
from calib.devices import make_mesh, path_name, put_rows
from calib.models import load_model

PROMPTS = ["hello", "abc", "what is two plus two", "x y z", "the capital of France is", "q"]
score_mod = importlib.import_module("calib.decode.score")  # the package exports a function of that name
MESHES = [(1, 1), (4, 1), (2, 2), (1, 4)]


def _specs(lm) -> dict[str, list]:
    state = nnx.state(lm.model)
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        out[path_name(path)] = [list(a) if isinstance(a, tuple) else a for a in leaf.sharding.spec] + [
            None
        ] * (leaf.ndim - len(leaf.sharding.spec))
    return out


def _cache_specs(lm) -> list:
    """The layout of every 4-D leaf (a KV cache [B, K, S, H]) of a prefilled session's state."""
    from calib.decode.continuation import DecodeSession

    sess = DecodeSession(lm, [lm.encode(p) for p in PROMPTS[:4]], 2, [True, False], room=8)
    leaves = [x for x in jax.tree.leaves(sess.state) if x.ndim == 4]
    specs = [tuple(getattr(x.sharding, "spec", ())) for x in leaves]
    return [[str(a) for a in spec] + ["None"] * (4 - len(spec)) for spec in specs]


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def _prefill_flops(lm, mesh) -> float:
    """Compiled per-device FLOPs of one prefill of 8 prompts x 4 rows, 64 tokens each."""
    graphdef, params = lm.graphdef_and_state
    m = mesh if mesh.devices.size > 1 else None
    keys = session.row_keys(0, jnp.arange(8), 4)
    state = session.empty_state(lm.config, 32, 128, lm.dtype, keys)
    state = put_rows(state, m)
    ids, lengths = put_rows((jnp.zeros((8, 64), jnp.int32), jnp.full((8,), 64, jnp.int32)), m)
    lowered = session.prefill_into.lower(
        graphdef, params, state, ids, lengths, jnp.arange(8, dtype=jnp.int32), repeats=4, mesh=m
    )
    return _flops(lowered.compile())


def _score_flops(lm, mesh, n_bins: int) -> float:
    """Compiled per-device FLOPs of scoring 16 prompts of 64 tokens x 2 continuations of 16 tokens."""
    graphdef, params = lm.graphdef_and_state
    m = mesh if mesh.devices.size > 1 else None
    rows = put_rows(
        (
            jnp.zeros((16, 64), jnp.int32),
            jnp.full((16,), 64, jnp.int32),
            jnp.zeros((32, 16), jnp.int32),
            jnp.ones((32, 16), bool),
        ),
        m,
    )
    lowered = score_mod._score_batch.lower(
        graphdef, params, jnp.zeros((1, 0), jnp.int32), jnp.int32(0), *rows, repeats=2, n_bins=n_bins, mesh=m
    )
    return _flops(lowered.compile())


def run_one(shape: tuple[int, int]) -> dict:
    data, model = shape
    mesh = make_mesh(data, model, jax.devices()[: data * model])
    lm = load_model("tiny-llama", mesh=mesh)
    gens = generate(lm, PROMPTS, num_samples=3, include_greedy=True, max_new_tokens=10, stop=(), seed=5)
    conts = [t for row in gens.texts for t in row[:2]]
    prompts = [p for p in PROMPTS for _ in range(2)]
    scored = score_mod.score(lm, prompts, [c or "x" for c in conts])
    _, stats = score_mod.score_with_stats(lm, prompts, [c or "x" for c in conts])
    ids = np.array([lm.encode(p)[:3] for p in PROMPTS[:3]])
    logits = lm.logits(ids)
    full = lm.encode(PROMPTS[2])
    tf_logits = lm.logits(np.array([full]))[0]
    tf_score = score_mod.score(lm, [full[:3]], [full[3:]])[0]
    rev = revise(lm, PROMPTS[:4], num_samples=2, passes=1, max_new_tokens=6, stop=(), seed=2)
    return {
        "devices": int(mesh.devices.size),
        "tokens": [[t.tolist() for t in row] for row in gens.token_ids],
        "logprobs": [[t.tolist() for t in row] for row in gens.token_logprobs],
        "score": [s.tolist() for s in scored],
        "full_ece": stats.full_ece(),
        "logits": logits.tolist(),
        "revise_tokens": [[[t.tolist() for t in row] for row in p.token_ids] for p in rev.passes],
        "revise_logprobs": [[[t.tolist() for t in row] for row in p.token_logprobs] for p in rev.passes],
        "specs": _specs(lm),
        "tf_ids": full,
        "tf_logits": tf_logits.tolist(),
        "tf_score": tf_score.tolist(),
        "cache_specs": _cache_specs(lm),
        "prefill_flops": _prefill_flops(lm, mesh),
        "score_flops": _score_flops(lm, mesh, 0),
        "score_ece_flops": _score_flops(lm, mesh, 15),
    }


if __name__ == "__main__":
    shapes = [tuple(map(int, s.split("x"))) for s in sys.argv[1:]] or MESHES
    print(json.dumps({f"{d}x{m}": run_one((d, m)) for d, m in shapes}))
