"""The streamed GGUF conversion: the cache file the streaming writer makes reads back with the safetensors library
itself, equal to the all-in-memory dequantization; chunked dequantization equals gguf's whole-tensor one; a
bfloat16 first load places exactly the float32 values cast; the writer refuses tensors out of its plan."""

import gguf
import jax
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file
from test_gguf import _write_llama_gguf

from calib.models import gguf_weights, load_model, registry
from calib.models.gguf_weights import gguf_config, gguf_state_dict, open_gguf
from calib.models.safetensors_io import SafetensorsWriter
from calib.models.tokenizer import byte_tokenizer


def test_first_conversion_cache_equals_in_memory_dequantization(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "load_tokenizer", lambda *a, **k: byte_tokenizer())  # (its vocab is fake)
    path = tmp_path / "m.gguf"
    _write_llama_gguf(path)
    reader = open_gguf(str(path))
    expected = gguf_state_dict(reader, gguf_config(reader, str(path)), str(path))
    lm = load_model(f"gguf:{path}", dtype="bfloat16")
    cached = load_file(f"{lm.cache_dir}/model.safetensors")  # the safetensors library's own reader
    assert cached.keys() == expected.keys()
    for name, value in expected.items():
        assert cached[name].dtype == np.float32
        np.testing.assert_array_equal(cached[name], value)
    embedding = np.asarray(lm.model.embedding[...])
    assert embedding.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(embedding, expected["model.embed_tokens.weight"].astype(ml_dtypes.bfloat16))
    again = load_model(f"gguf:{path}", dtype="bfloat16")  # from the cache: the same weights
    same = jax.tree.map(
        lambda a, b: bool((np.asarray(a) == np.asarray(b)).all()), nnx_state(lm), nnx_state(again)
    )
    assert all(jax.tree.leaves(same))


def nnx_state(lm):
    return lm.graphdef_and_state[1]


@pytest.mark.parametrize("kind", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0])
def test_chunked_dequantization_equals_whole_tensor(kind, monkeypatch):
    rng = np.random.default_rng(0)
    rows, cols = 37, 64

    class Tensor:  # what gguf.GGUFReader gives: rows of quantized bytes
        name, tensor_type = "blk.0.ffn_up.weight", kind
        data = gguf.quants.quantize(rng.normal(size=(rows, cols)).astype(np.float32), kind)

    whole = gguf.quants.dequantize(Tensor.data, kind)
    monkeypatch.setattr(gguf_weights, "DEQUANT_CHUNK_BYTES", 5 * cols * 4)  # 5 rows a chunk, 8 chunks
    chunked = gguf_weights._dequantize(Tensor, (rows, cols), "x.gguf")
    assert chunked.dtype == np.float32 and chunked.shape == (rows, cols)
    np.testing.assert_array_equal(chunked, whole)


def test_writer_refuses_tensors_out_of_plan(tmp_path):
    specs = [("a", np.dtype(np.float32), (2, 3)), ("b", np.dtype(np.float32), (4,))]
    with pytest.raises(ValueError, match="not the next"), SafetensorsWriter(tmp_path / "x", specs) as writer:
        writer.write("b", np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="never written"), SafetensorsWriter(tmp_path / "y", specs) as writer:
        writer.write("a", np.ones((2, 3), np.float32))
    with SafetensorsWriter(tmp_path / "z.safetensors", specs) as writer:
        writer.write("a", np.arange(6, dtype=np.float32).reshape(2, 3))
        writer.write("b", np.full(4, 0.5, np.float32))
    back = load_file(tmp_path / "z.safetensors")
    np.testing.assert_array_equal(back["a"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(back["b"], np.full(4, 0.5))
