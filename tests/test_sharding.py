"""Tensor- and data-parallel meshes under 4 emulated CPU devices give one device's tokens and log-probs.

JAX reads XLA_FLAGS once, when it initialises, so the meshes run in a subprocess (tests/sharding_check.py): one
device (1, 1), and (data, model) = (4, 1), (2, 2), (1, 4). Each runs generate, score, Full-ECE scoring, lm.logits
and revise on tiny-llama (vocabulary 260, 4 heads, 2 kv-heads, MLP 128), reports every parameter's PartitionSpec
and the compiled per-device FLOPs (XLA's cost analysis) of a prefill and a scoring batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calib.devices import make_mesh, param_spec
from calib.errors import CalibError
from calib.models.config import tiny_llama

MESHES = ["4x1", "2x2", "1x4"]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs() -> dict:
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", CALIB_NO_COMPILATION_CACHE="1"
    )
    script = Path(__file__).with_name("sharding_check.py")
    out = subprocess.run(
        [sys.executable, str(script), "1x1", *MESHES],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _max_diff(a, b) -> float:
    flat = lambda x: np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in x]) if x else np.zeros(0)  # noqa: E731
    return float(np.abs(flat(a) - flat(b)).max(initial=0.0))


def _rows(nested) -> list:
    return [row for group in nested for row in group]


@pytest.mark.parametrize("mesh", MESHES)
def test_every_stage_matches_one_device(runs, mesh):
    one, many = runs["1x1"], runs[mesh]
    assert (one["devices"], many["devices"]) == (1, 4)
    assert many["tokens"] == one["tokens"]
    assert _max_diff(_rows(many["logprobs"]), _rows(one["logprobs"])) < 1e-5
    assert _max_diff(many["score"], one["score"]) < 1e-5
    assert abs(many["full_ece"] - one["full_ece"]) < 1e-5
    assert np.abs(np.asarray(many["logits"]) - np.asarray(one["logits"])).max() < 1e-5
    assert many["revise_tokens"] == one["revise_tokens"]
    assert _max_diff(_rows(_rows(many["revise_logprobs"])), _rows(_rows(one["revise_logprobs"]))) < 1e-5


@pytest.mark.parametrize("mesh", ["1x1", *MESHES])
def test_scores_are_the_numpy_log_softmax_of_the_logits(runs, mesh):
    """Independent check on every mesh: score() of a prompt's last tokens = numpy log-softmax of lm.logits."""
    run = runs[mesh]
    ids, logits = run["tf_ids"], np.asarray(run["tf_logits"], np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = logp[np.arange(2, len(ids) - 1), ids[3:]]
    np.testing.assert_allclose(run["tf_score"], expected, atol=1e-5)


def _expected_spec(name: str, model: int) -> list:
    """Megatron layout for tiny-llama by hand: an axis is split only when `model` divides it."""
    cfg = tiny_llama()
    m = lambda size: "model" if model > 1 and size % model == 0 else None  # noqa: E731
    leaf = name.split(".")[-1] if not name.endswith("scale") else "norm"
    return {
        "embedding": [m(cfg.vocab_size), None],
        "q": [None, m(cfg.num_heads), None],
        "k": [None, m(cfg.num_kv_heads), None],
        "v": [None, m(cfg.num_kv_heads), None],
        "o": [m(cfg.num_heads), None, None],
        "gate": [None, m(cfg.ffw_dim)],
        "up": [None, m(cfg.ffw_dim)],
        "down": [m(cfg.ffw_dim), None],
        "norm": [None],
    }[leaf]


@pytest.mark.parametrize("mesh", ["1x1", *MESHES])
def test_parameters_and_cache_are_split_as_declared(runs, mesh):
    model = int(mesh.split("x")[1])
    specs = runs[mesh]["specs"]
    assert len(specs) == 2 * 9 + 2  # 2 blocks of 9 tensors, embedding, final norm
    for name, spec in specs.items():
        assert spec == _expected_spec(name, model), name
    if model == 4:  # 2 kv-heads do not split 4 ways: k, v and the cache's heads stay whole
        assert specs["blocks.0.attn.k"] == [None, None, None] and specs["blocks.0.attn.q"][1] == "model"
    rows = "data" if int(mesh.split("x")[0]) > 1 else "None"
    heads = "model" if model == 2 else "None"  # 2 kv-heads split 2 ways, not 4
    assert len(runs[mesh]["cache_specs"]) == 2 * tiny_llama().num_layers  # keys and values per layer
    for spec in runs[mesh]["cache_specs"]:
        assert spec == [rows, heads, "None", "None"]


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("program", ["prefill_flops", "score_flops", "score_ece_flops"])
def test_no_device_computes_the_whole_batch(runs, mesh, program):
    data = int(mesh.split("x")[0])
    one, per_device = runs["1x1"][program], runs[mesh][program]
    assert per_device <= one / data * 1.10, (per_device, one)


def test_companion_tensors_follow_their_matrix_and_bad_meshes_are_one_line_errors():
    """Rules are by path: an int8 per-channel scale stored beside a matrix gets the matrix's split."""
    import jax
    from jax.sharding import AbstractMesh

    cfg = tiny_llama()
    mesh = AbstractMesh((1, 2), ("data", "model"))  # the rules read only the axis sizes
    assert tuple(param_spec("blocks.0.mlp.gate.scale", (cfg.ffw_dim,), mesh, cfg)) == ("model",)
    assert tuple(param_spec("blocks.0.mlp.down.scale", (1, cfg.embed_dim), mesh, cfg)) == (None, None)
    assert tuple(param_spec("blocks.0.attn.q.scale", (cfg.num_heads, cfg.head_dim), mesh, cfg)) == (
        "model",
        None,
    )
    assert tuple(param_spec("blocks.0.attn.q_norm.scale", (cfg.head_dim,), mesh, cfg)) == ()
    with pytest.raises(CalibError, match=r"devices\.data x devices\.model"):
        make_mesh(2, 2, jax.devices()[:1])
    with pytest.raises(CalibError, match=r"devices\.model"):
        make_mesh(None, 0)
