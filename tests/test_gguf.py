"""GGUF reading on small files written by the test with gguf.GGUFWriter: config, fix-ups, corrupt files, cache."""

import os

import gguf
import numpy as np
import pytest

from calib.errors import CalibError
from calib.models import load_model
from calib.models.gguf_weights import gguf_config, gguf_state_dict, open_gguf


def _write_llama_gguf(path, arch="llama", drop=None):
    rng = np.random.default_rng(0)
    d, heads, kv, ffw, layers, vocab = 32, 4, 2, 48, 2, 40
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(128)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffw)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    tensors = {"token_embd.weight": rng.normal(size=(vocab, d)), "output_norm.weight": rng.normal(size=(d,))}
    for i in range(layers):
        tensors |= {
            f"blk.{i}.attn_q.weight": rng.normal(size=(d, d)),
            f"blk.{i}.attn_k.weight": rng.normal(size=(kv * 8, d)),
            f"blk.{i}.attn_v.weight": rng.normal(size=(kv * 8, d)),
            f"blk.{i}.attn_output.weight": rng.normal(size=(d, d)),
            f"blk.{i}.ffn_gate.weight": rng.normal(size=(ffw, d)),
            f"blk.{i}.ffn_up.weight": rng.normal(size=(ffw, d)),
            f"blk.{i}.ffn_down.weight": rng.normal(size=(d, ffw)),
            f"blk.{i}.attn_norm.weight": rng.normal(size=(d,)),
            f"blk.{i}.ffn_norm.weight": rng.normal(size=(d,)),
        }
    for name, value in tensors.items():
        if name != drop:
            w.add_tensor(name, value.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def test_config_and_llama_permutation_roundtrip(tmp_path):
    path = tmp_path / "m.gguf"
    tensors = _write_llama_gguf(path)
    reader = open_gguf(str(path))
    cfg = gguf_config(reader, str(path))
    assert (cfg.arch, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (
        "llama",
        2,
        4,
        2,
        8,
        40,
    )
    assert cfg.tie_embeddings
    sd = gguf_state_dict(reader, cfg, str(path))
    q = tensors["blk.0.attn_q.weight"]
    # llama.cpp's permutation (as its converter applies it) must map our result back to the file's tensor
    permute = lambda w, h: w.reshape(h, 2, w.shape[0] // h // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)  # noqa: E731
    np.testing.assert_allclose(permute(sd["model.layers.0.self_attn.q_proj.weight"], 4), q, rtol=1e-6)
    np.testing.assert_allclose(
        sd["model.layers.0.mlp.down_proj.weight"], tensors["blk.0.ffn_down.weight"], rtol=1e-6
    )


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    good = tmp_path / "good.gguf"
    _write_llama_gguf(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(os.urandom(4096))
    for bad in (truncated, garbage):
        with pytest.raises(CalibError, match=bad.name):
            open_gguf(str(bad))


def test_unsupported_architecture_and_missing_tensor(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIB_CACHE_DIR", str(tmp_path / "cache"))
    gpt2 = tmp_path / "gpt2.gguf"
    _write_llama_gguf(gpt2, arch="gpt2")
    with pytest.raises(CalibError, match="unsupported architecture 'gpt2'"):
        load_model(f"gguf:{gpt2}")
    partial = tmp_path / "partial.gguf"
    _write_llama_gguf(partial, drop="blk.1.ffn_up.weight")
    with pytest.raises(CalibError, match="lacks"):
        load_model(f"gguf:{partial}")


def test_failed_conversion_leaves_nothing_half_written(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CALIB_CACHE_DIR", str(cache))
    good = tmp_path / "good.gguf"
    _write_llama_gguf(good)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CalibError):
        load_model(f"gguf:{truncated}")
    models = cache / "models"
    assert not models.exists() or not any(models.iterdir())
