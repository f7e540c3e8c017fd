"""model.dtype: auto resolves from the backend, bfloat16 / float16 / float64 weights against PyTorch in the same
dtype, float64 refused without x64, the streamed safetensors reader, and a bfloat16 pipeline run end to end."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
from family_files import build_hf

from calib.errors import CalibError
from calib.models import load_model
from calib.models.hf_weights import hf_tensors
from calib.models.registry import resolve_dtype
from calib.pipeline import RunConfig, run
from calib.pipeline.config import compose, validate

PROMPT = "The quick brown fox jumps over the lazy dog; then it runs around the old barn twice and sleeps."
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _err(ours, reference) -> float:
    return float(np.abs(_log_softmax(np.asarray(ours, np.float64)) - _log_softmax(reference)).max())


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama3")
    ref = build_hf(folder, "llama3")
    ids = load_model(f"hf:{folder}").encode(PROMPT)
    with torch.no_grad():
        ref64 = ref.double()(torch.tensor([ids])).logits[0].numpy()
        ref16 = ref.to(torch.bfloat16)(torch.tensor([ids])).logits[0].double().numpy()
    return folder, ids, ref64, ref16


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch):
    assert jax.default_backend() == "cpu"
    assert resolve_dtype("auto") == "float32"
    assert load_model("tiny-llama", dtype="auto").dtype_name == "float32"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert resolve_dtype("auto") == "bfloat16"


def test_schema_default_is_auto_and_every_dtype_validates():
    assert RunConfig().model.dtype == "auto" == compose().model.dtype
    for dtype in ("auto", "float32", "bfloat16", "float16", "float64"):
        validate(compose([f"model.dtype={dtype}"]))
    with pytest.raises(CalibError, match=r"model\.dtype"):
        validate(compose(["model.dtype=int8"]))


def test_float64_without_x64_is_one_line_refusal():
    assert not jax.config.jax_enable_x64  # the library never turns it on
    with pytest.raises(CalibError, match="JAX_ENABLE_X64=1") as err:
        load_model("tiny-llama", dtype="float64")
    assert "\n" not in str(err.value)
    assert not jax.config.jax_enable_x64


def test_bfloat16_weights_match_pytorch_bfloat16(llama):
    """Our bf16 model is as close to the exact (float64) logits as PyTorch's own bf16 forward is."""
    folder, ids, ref64, ref16 = llama
    lm32, lm16 = load_model(f"hf:{folder}", dtype="float32"), load_model(f"hf:{folder}", dtype="bfloat16")
    assert lm16.dtype_name == "bfloat16"
    assert {v.dtype.name for v in jax.tree.leaves(lm16.graphdef_and_state[1])} == {"bfloat16"}
    err16, err32, torch16 = (
        _err(lm16.logits([ids])[0], ref64),
        _err(lm32.logits([ids])[0], ref64),
        _err(ref16, ref64),
    )
    print(
        f"max |log-softmax - float64 reference|: bf16 {err16:.3g}, torch bf16 {torch16:.3g}, f32 {err32:.3g}"
    )
    assert err32 < err16 <= 2 * torch16
    assert (lm16.logits([ids])[0].argmax(-1) == ref16.argmax(-1)).mean() >= 0.9


def test_float16_weights_and_overflow_refusal(llama, tmp_path):
    folder, ids, ref64, _ = llama
    lm = load_model(f"hf:{folder}", dtype="float16")
    assert lm.dtype_name == "float16"
    with torch.no_grad():
        ref = (
            build_hf(tmp_path / "copy", "llama3")
            .to(torch.float16)(torch.tensor([ids]))
            .logits[0]
            .double()
            .numpy()
        )
    err, torch_err = _err(lm.logits([ids])[0], ref64), _err(ref, ref64)
    print(f"max |log-softmax - float64 reference|: f16 {err:.3g}, torch f16 {torch_err:.3g}")
    assert err <= 2 * torch_err

    from safetensors.numpy import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 0 + 1e6
    save_file(tensors, tmp_path / "copy" / "model.safetensors")
    with pytest.raises(CalibError, match="beyond float16's range"):
        load_model(f"hf:{tmp_path / 'copy'}", dtype="float16")


def _float64_reference(ref, ids) -> np.ndarray:
    """PyTorch in float64 throughout: transformers computes RoPE and RMSNorm in float32 whatever the model dtype,
    so those are replaced by the same formulas in float64 (default RoPE: Llama 2 layout)."""
    rotary, cfg = ref.model.rotary_emb, ref.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    inv_freq = 1.0 / cfg.rope_parameters["rope_theta"] ** (
        torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim
    )

    def forward(x, position_ids):
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    def norm(module):
        return lambda x: (
            module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))
        )

    rotary.forward = forward
    for module in ref.modules():
        if type(module).__name__ == "LlamaRMSNorm":  # transformers' computes in float32 too
            module.forward = norm(module)
    ref.config._attn_implementation = "sdpa"  # eager attention's softmax is float32
    with torch.no_grad():
        return ref.double()(torch.tensor([ids])).logits[0].numpy()


def test_float64_is_closer_to_the_float64_reference_than_float32(tmp_path):
    """Under JAX_ENABLE_X64=1 (a fresh process: the flag is global), float64 weights beat float32 against PyTorch
    in float64, and greedy decoding runs."""
    ref = build_hf(tmp_path, "llama2")
    ids = load_model(f"hf:{tmp_path}").encode(PROMPT)
    ref64 = _float64_reference(ref, ids)
    probe = textwrap.dedent(f"""
        import numpy as np
        from calib.decode import generate
        from calib.models import load_model
        for dtype in ("float32", "float64"):
            lm = load_model("hf:{tmp_path}", dtype=dtype)
            assert lm.dtype_name == dtype
            np.save("{tmp_path}/" + dtype + ".npy", lm.logits([{ids!r}])[0])
        generate(lm, ["hello"], greedy=True, max_new_tokens=3, stop=())
        """)
    env = os.environ | {"JAX_ENABLE_X64": "1", "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ours64, ours32 = np.load(tmp_path / "float64.npy"), np.load(tmp_path / "float32.npy")
    assert (ours64.dtype.name, ours32.dtype.name) == ("float64", "float32")
    err64, err32 = _err(ours64, ref64), _err(ours32, ref64)
    print(f"max |log-softmax - float64 reference|: f64 {err64:.3g}, f32 {err32:.3g}")
    assert err64 < err32 * np.finfo(np.float32).eps  # f32's error is ~eps32-sized; f64's ~eps64


def test_streamed_reader_keeps_bfloat16_and_reads_largest_first(tmp_path):
    ref = build_hf(tmp_path, "llama2").to(torch.bfloat16)
    ref.save_pretrained(tmp_path)
    expected = {k: v.float().numpy() for k, v in ref.state_dict().items()}
    stream = list(hf_tensors(str(tmp_path)))
    assert [v.size for _, v in stream] == sorted((v.size for _, v in stream), reverse=True)
    for name, value in stream:
        assert value.dtype.name == "bfloat16", name
        np.testing.assert_array_equal(value.astype(np.float32), expected[name])


def test_bfloat16_pipeline_end_to_end_and_keys_use_the_resolved_dtype(tmp_path):
    """`calib model.dtype=bfloat16 experiment=smoke` on tiny settings; auto and float32 share a generation key."""
    keys = {}
    for dtype in ("bfloat16", "auto", "float32"):
        cfg = compose(["experiment=smoke", f"model.dtype={dtype}"])
        cfg.task.limit, cfg.decoding.num_samples, cfg.decoding.max_new_tokens = 3, 2, 4
        cfg.estimators.names, cfg.estimators.semantic = ["msp", "mean_token_entropy"], "exact"
        cfg.report.formats, cfg.artifacts_dir, cfg.progress = [], str(tmp_path / "artifacts"), False
        result = run(cfg, tmp_path / dtype, print_summary=False)
        assert len(result.metrics) > 0
        keys[dtype] = result.manifest["stages"]["generate"]["key"]
    assert keys["auto"] == keys["float32"] != keys["bfloat16"]
