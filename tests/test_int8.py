"""int8 weights (model.weights=int8): the quantiser against numpy, the int8 model against a float32 model holding
the dequantized weights (scan, head chunks, embedding rows), and parity with float32 on the built-in models."""

import numpy as np
import pytest
from flax import nnx

from calib.errors import CalibError
from calib.models import load_model
from calib.models.quant import QArray, contracted_axis, dequantize, quantize

RNG = np.random.default_rng(0)


def _numpy_dequant(q, scale, offset, axis):
    shape = list(q.shape)
    groups = scale.shape[axis]
    grouped = q.astype(np.float64).reshape(*shape[:axis], groups, shape[axis] // groups, *shape[axis + 1 :])
    return (grouped * scale + offset).reshape(shape)


@pytest.mark.parametrize("shape,axis", [((64, 48), 0), ((4, 64, 40), 1), ((96, 3, 8), 0), ((40, 64), 1)])
def test_quantize_round_trip_matches_numpy(shape, axis):
    w = RNG.standard_normal(shape).astype(np.float32) * 0.05
    q, scale, offset = quantize(w, axis, group=32)
    assert q.dtype == np.int8 and q.shape == w.shape
    ref = _numpy_dequant(q, scale, offset, axis)
    got = np.asarray(dequantize(q, scale, offset, axis, np.float32))
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8)
    # every entry within half a grid step of its group, and never worse than the symmetric max|w|/127 grid
    groups = w.reshape(*shape[:axis], shape[axis] // 32, 32, *shape[axis + 1 :])
    bound = np.abs(groups).max(axis=axis + 1, keepdims=True) / 127 / 2
    err = np.abs(ref - w).reshape(groups.shape)
    assert (err <= bound * (1 + 1e-5) + 1e-9).all()
    assert np.abs(ref - w).max() > 0  # random floats are not on any int8 grid


def test_quantize_holds_gguf_style_blocks_exactly():
    """Q4_1-like blocks (d * k + m, k in 0..15) and Q6_K-like 16-entry blocks (d_j * k, k in -32..31) come back
    exactly: the grid's step is the blocks' own level spacing."""
    rows, cols = 8, 128
    d = RNG.uniform(0.001, 0.01, (rows, cols // 32, 1))
    m = RNG.uniform(-0.05, 0.0, (rows, cols // 32, 1))
    q4 = (RNG.integers(0, 16, (rows, cols // 32, 32)) * d + m).reshape(rows, cols).astype(np.float32)
    d6 = RNG.uniform(0.001, 0.01, (rows, cols // 16, 1))
    q6 = (RNG.integers(-32, 32, (rows, cols // 16, 16)) * d6).reshape(rows, cols).astype(np.float32)
    for w in (q4, q6):
        q, scale, offset = quantize(w, 1)
        np.testing.assert_allclose(
            _numpy_dequant(q, scale, offset, 1), w, atol=2e-6 * np.abs(w).max()
        )  # float32 rounding; off-grid errors are ~1e-3


def test_quantize_refuses_non_finite():
    with pytest.raises(CalibError, match=r"blocks\.0\.mlp\.up has inf or nan"):
        quantize(np.array([[1.0, np.nan]] * 32, np.float32), 0, name="blocks.0.mlp.up")
    with pytest.raises(CalibError, match="unknown model weights 'int4'"):
        load_model("tiny-llama", weights="int4")


@pytest.mark.parametrize("spec", ["tiny-llama", "tiny-gemma3"])
def test_int8_model_equals_float32_model_with_dequantized_weights(spec):
    """The compiled int8 path (stacked layers under scan, chunked head, per-row embedding) computes the same
    function as the float32 model given the dequantized weights, computed independently in numpy."""
    full, int8 = load_model(spec), load_model(spec, weights="int8")
    assert int8.digest != full.digest and int8.weights == "int8" and int8.dtype_name == "float32"
    dequantized = load_model(spec)
    params = {
        ".".join(map(str, p)): v for p, v in nnx.iter_graph(dequantized.model) if isinstance(v, nnx.Param)
    }
    n_quantized = 0
    for path, var in params.items():
        axis = contracted_axis(
            path
        )  # which matrices are quantised (and along which axis) is the loader's table
        if axis is not None:
            q, scale, offset = quantize(np.asarray(var[...]), axis)
            var.set_value(_numpy_dequant(q, scale, offset, axis).astype(np.float32))
            n_quantized += 1
    assert n_quantized >= 7 * full.config.num_layers + 1
    stacked = [b for b in int8.model.blocks if not hasattr(b, "attn")]
    assert stacked, "consecutive blocks of one kind run as stacked layers"
    assert isinstance(int8.model.embedding.get_value(), QArray)
    ids = RNG.integers(0, full.config.vocab_size, (2, 40))
    got, want, orig = int8.logits(ids), dequantized.logits(ids), full.logits(ids)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)
    assert np.abs(got - orig).max() > 1e-5  # random weights are not on an int8 grid: int8 really is in use


@pytest.mark.weights
@pytest.mark.parametrize(
    "name",
    [
        pytest.param("smollm2-135m-instruct", marks=pytest.mark.xdist_group("smollm2")),
        pytest.param("gemma3-270m", marks=pytest.mark.xdist_group("gemma3")),
    ],
)
def test_builtin_int8_matches_float32(name):
    """Both built-in GGUF files are 4/5/6/8-bit block formats, which the int8 grids hold exactly: int8 must stay
    within 0.05 (acceptance) of float32 in log-softmax on the parity prompts, and give the same greedy answers."""
    from test_models_parity import COUNTRIES, LONG_TOKENS, PROMPTS, TWO_SHOT, _log_softmax

    from calib.decode import generate

    full, int8 = load_model(name), load_model(name, weights="int8")
    for prompt in PROMPTS:
        ids = [full.encode(prompt)[:LONG_TOKENS]]
        diff = np.abs(_log_softmax(int8.logits(ids)[0]) - _log_softmax(full.logits(ids)[0])).max()
        print(f"{name}: {len(ids[0])} tokens, int8 vs float32 max |log-softmax diff| = {diff:.2e}")
        assert diff < 0.05
    prompts = [TWO_SHOT.format(country=c) for c in COUNTRIES[:10]]  # all 30: benchmarks/bench_int8_parity.py
    answers = [
        generate(lm, prompts, greedy=True, max_new_tokens=8, stop=("\n",)).texts for lm in (full, int8)
    ]
    assert answers[0] == answers[1]


@pytest.mark.parametrize("shape,axis", [((640, 4, 256), 0), ((9, 64, 576), 1), ((4096, 96), 1)])
def test_quantize_in_slices_equals_whole_tensor(shape, axis, monkeypatch):
    """Large tensors are quantised a slice of output channels at a time (bounded host memory): same result."""
    from calib.models import quant

    w = RNG.standard_normal(shape).astype(np.float32)
    whole = quantize(w, axis, group=32)
    monkeypatch.setattr(quant, "CHUNK_ELEMENTS", 1 << 14)
    sliced = quantize(w, axis)
    for a, b in zip(whole, sliced, strict=True):
        np.testing.assert_array_equal(a, b)
