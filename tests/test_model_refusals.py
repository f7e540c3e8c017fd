"""Loaders refuse what they do not implement: RoPE types, soft-capping, experts, attention sinks, unknown tensors and
metadata are each a one-line CalibError naming the key or tensor, never a silent skip."""

import json

import gguf
import numpy as np
import pytest
from family_files import build_hf, load_gguf, write_gguf
from loader_files import HF_CONFIG, write_hf_folder
from loader_files import write_gguf as write_small_gguf
from safetensors.numpy import load_file, save_file

from calib.errors import CalibError
from calib.models import load_model
from calib.models.hf_weights import hf_config


def _one_line(call, match):
    with pytest.raises(CalibError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}, "RoPE scaling 'yarn'"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "RoPE scaling 'dynamic'"),
        ({"final_logit_softcapping": 30.0}, "soft-capping.*final_logit_softcapping"),
        ({"attn_logit_softcapping": 50.0}, "soft-capping.*attn_logit_softcapping"),
        ({"num_local_experts": 8}, "mixture of experts"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "MLP biases"),
        ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        ({"layer_types": ["chunked_attention"], "sliding_window": 4}, "layer type 'chunked_attention'"),
        ({"model_type": "smollm3", "no_rope_layers": [1]}, "smollm3"),
        ({"model_type": "gemma3_text", "hidden_activation": "gelu"}, "hidden_activation"),
    ],
)
def test_hf_config_refusals(tmp_path, changes, match):
    write_hf_folder(tmp_path, HF_CONFIG | changes)
    _one_line(lambda: hf_config(str(tmp_path)), match)


def test_hf_unknown_tensor_is_refused(tmp_path):
    build_hf(tmp_path, "llama2")
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.self_attn.sinks"] = np.zeros(4, np.float32)  # gpt-oss style attention sinks
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _one_line(lambda: load_model(f"hf:{tmp_path}"), r"model\.layers\.0\.self_attn\.sinks.*not implemented")


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"llama__rope__scaling__type": "yarn"}, "RoPE scaling 'yarn'"),
        ({"llama__rope__scaling__type": "longrope"}, "RoPE scaling 'longrope'"),
        ({"llama__attn_logit_softcapping": 50.0}, "soft-capping key llama.attn_logit_softcapping"),
        ({"llama__final_logit_softcapping": 30.0}, "soft-capping key llama.final_logit_softcapping"),
        ({"llama__expert_count": 8}, "experts key llama.expert_count"),
        ({"llama__attention__key_length": 4, "llama__rope__dimension_count": 2}, "partial RoPE"),
        ({"llama__embedding_scale": 2.0}, "metadata key llama.embedding_scale"),
    ],
)
def test_gguf_metadata_refusals(tmp_path, meta, match):
    from calib.models.gguf_weights import gguf_config, open_gguf

    path = write_small_gguf(tmp_path / "m.gguf", **meta)
    _one_line(lambda: gguf_config(open_gguf(str(path)), str(path)), match)


@pytest.mark.parametrize(
    "family, tensors, match",
    [
        ("llama2", {"blk.0.attn_sinks.weight": np.zeros(4, np.float32)}, r"blk\.0\.attn_sinks\.weight"),
        ("llama2", {"blk.0.ffn_gate_inp.weight": np.zeros((4, 64), np.float32)}, r"blk\.0\.ffn_gate_inp"),
        ("gemma3", {"rope_freqs.weight": np.ones(16, np.float32)}, "rope_freqs.weight is not implemented"),
        ("llama2", {"rope_freqs.weight": np.ones(3, np.float32)}, "rope_freqs.weight holds 3 values"),
    ],
)
def test_gguf_tensor_refusals(tmp_path, family, tensors, match):
    ref = build_hf(tmp_path / "hf", family)
    path = write_gguf(tmp_path / "m.gguf", family, ref, extra_tensors=tensors)
    _one_line(lambda: load_gguf(path), match)


def test_gguf_qwen_sliding_window_is_refused(tmp_path):
    ref = build_hf(tmp_path / "hf", "qwen2")
    meta = {"qwen2.attention.sliding_window": (16, gguf.GGUFValueType.UINT32)}
    path = write_gguf(tmp_path / "m.gguf", "qwen2", ref, extra_meta=meta)
    _one_line(lambda: load_gguf(path), "qwen2.attention.sliding_window is not implemented")


def test_hf_config_json_of_a_refused_model_names_the_file(tmp_path):
    write_hf_folder(tmp_path, HF_CONFIG | {"rope_scaling": {"rope_type": "su"}})
    with pytest.raises(CalibError) as err:
        hf_config(str(tmp_path))
    assert str(tmp_path / "config.json") in str(err.value)
    json.loads((tmp_path / "config.json").read_text())  # the file itself was fine JSON
