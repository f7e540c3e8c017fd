"""load_model(spec): built-in names, gguf:PATH, hf:PATH and tiny random configs, with a conversion cache."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from calib.cache import atomic_dir, cache_root, file_digest
from calib.devices import data_mesh, param_shardings, param_spec
from calib.errors import CalibError
from calib.models.builtin import BUILTIN_GGUF
from calib.models.config import ModelConfig, tiny_gemma3, tiny_llama
from calib.models.lm import LanguageModel
from calib.models.params import build_model
from calib.models.quant import check_weights, quantize_model
from calib.models.tokenizer import byte_tokenizer, load_tokenizer
from calib.models.transformer import Transformer, stack_runs

TINY = {"tiny-llama": tiny_llama, "tiny-gemma3": tiny_gemma3}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16, "float64": jnp.float64}
DTYPE_CHOICES = ("auto", *DTYPES)
CONVERSION_MODULES = (
    "calib.models.gguf_weights",
    "calib.models.gguf_file",
    "calib.models.config",
)  # the GGUF fix-ups and the config layout


def list_models() -> list[str]:
    return [*BUILTIN_GGUF, *TINY]


def resolve_dtype(dtype: str) -> str:
    """The weights' dtype name: "auto" is bfloat16 on GPU/TPU and float32 on CPU (jax.default_backend() now).
    float64 needs x64 enabled by the caller: calib never flips jax_enable_x64 itself (a global switch that changes
    every other array in the process), and a scoped jax.enable_x64 would have to wrap every later forward pass."""
    if dtype not in DTYPE_CHOICES:
        raise CalibError(f"unknown dtype {dtype!r}: choose one of {list(DTYPE_CHOICES)}")
    if dtype == "auto":
        return "float32" if jax.default_backend() == "cpu" else "bfloat16"
    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise CalibError(
            "dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1 in the environment (or call "
            "jax.config.update('jax_enable_x64', True) before loading)"
        )
    return dtype


def load_model(
    spec: str,
    dtype: str = "float32",
    mesh: jax.sharding.Mesh | None = None,
    seed: int = 0,
    weights: str = "full",
) -> LanguageModel:
    """A ready LanguageModel. spec: a built-in name, "gguf:PATH", "hf:PATH" or "tiny-llama"/"tiny-gemma3".
    dtype: auto | float32 | bfloat16 | float16 | float64 (see resolve_dtype); lm.dtype_name is the resolved one.
    weights: full (every tensor in dtype) | int8 (layer matrices and head as int8 with per-channel scales, computed
    in dtype; see quant.py). The digest differs per weights mode, so artifacts never mix them."""
    dt = DTYPES[resolve_dtype(dtype)]
    check_weights(weights)
    mesh = mesh if mesh is not None else data_mesh()
    if spec in TINY:
        lm = _tiny(spec, dt, mesh, seed, weights)
    elif spec in BUILTIN_GGUF:
        lm = _from_gguf(BUILTIN_GGUF[spec](), spec, dt, mesh, weights)
    elif spec.startswith("gguf:"):
        path = os.path.expanduser(spec[5:])
        lm = _from_gguf(path, Path(path).stem, dt, mesh, weights)
    elif spec.startswith("hf:"):
        lm = _from_hf(os.path.expanduser(spec[3:]), dt, mesh, weights)
    else:
        raise CalibError(f"unknown model {spec!r}: use one of {list_models()}, gguf:PATH or hf:PATH")
    if weights != "full":
        lm.digest = weights_digest(lm.digest, weights)
    lm.weights = weights
    return lm


def weights_digest(digest: str, weights: str) -> str:
    """The digest of a model loaded as `weights`: the file's digest, the mode and the quantisation code."""
    from calib.fingerprint import module_fingerprint

    return hashlib.sha256(
        f"{digest}|{weights}|{module_fingerprint('calib.models.quant')}".encode()
    ).hexdigest()


def _tiny(spec: str, dtype, mesh, seed: int, weights: str) -> LanguageModel:
    cfg = TINY[spec]()
    model = Transformer(cfg, dtype=dtype, rngs=nnx.Rngs(seed))
    if weights == "int8":
        stack_runs(quantize_model(model))
    _place(model, mesh, cfg, weights)
    digest = hashlib.sha256(f"{spec}|{seed}|{cfg}".encode()).hexdigest()
    return LanguageModel(spec, cfg, model, byte_tokenizer, digest, "chat", mesh=mesh)


def _place(model: nnx.Module, mesh, cfg: ModelConfig, weights: str = "full") -> None:
    state = nnx.state(model)
    if (
        weights != "full"
    ):  # int8 runs are stacked under a leading layer axis the rules do not know: replicated
        shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), state)
    else:
        shardings = param_shardings(state, mesh, cfg)
    nnx.update(model, jax.device_put(state, shardings))


def placement(mesh, cfg: ModelConfig, weights: str = "full"):
    """(parameter path, shape) -> its NamedSharding on `mesh` (calib.devices.PARAM_RULES), for build_model.
    int8 weights are replicated: their stacked runs carry a leading layer axis the rules do not split (yet)."""
    if weights != "full":
        return NamedSharding(mesh, PartitionSpec())
    return lambda path, shape: NamedSharding(mesh, param_spec(path, tuple(shape), mesh, cfg))


def _prompt_style(folder: str) -> str:
    """ "chat" when the saved tokenizer has a chat template (instruct models), else "completion" (base models)."""
    path = Path(folder)
    if (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file():
        return "chat"
    file = path / "tokenizer_config.json"
    if not file.is_file():
        return "completion"
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as err:  # ValueError: bad JSON or bytes that are not UTF-8
        raise CalibError(
            f"cannot read {file}: {type(err).__name__}: {err} (tokenizer_config.json must be UTF-8 JSON; re-save "
            "the tokenizer with save_pretrained)"
        ) from None
    if not isinstance(settings, dict):
        raise CalibError(
            f"{file} holds a JSON {type(settings).__name__}, expected an object of tokenizer settings"
        )
    return "chat" if settings.get("chat_template") else "completion"


def _from_hf(folder: str, dtype, mesh, weights: str) -> LanguageModel:
    from calib.models.hf_weights import hf_config, hf_tensors

    if not os.path.isdir(folder):
        raise CalibError(f"HF model folder not found: {folder}")
    cfg = hf_config(folder)
    model = build_model(cfg, hf_tensors(folder), folder, dtype, placement(mesh, cfg, weights), weights)
    digest = hashlib.sha256(
        "|".join(file_digest(p) for p in sorted(Path(folder).glob("*.safetensors"))).encode()
    ).hexdigest()
    tokenizer = functools.partial(load_tokenizer, folder)
    return LanguageModel(
        Path(folder).name, cfg, model, tokenizer, digest, _prompt_style(folder), folder, mesh
    )


def _from_gguf(path: str, name: str, dtype, mesh, weights: str) -> LanguageModel:
    """First load converts the GGUF into safetensors + tokenizer files under the cache; later loads read those."""
    from calib.models.safetensors_io import read_safetensors

    if not os.path.isfile(path):
        raise CalibError(
            f"GGUF file not found: {path} (check the path; built-in models install with `make setup`)"
        )
    digest = file_digest(path)
    folder = cache_root() / "models" / f"{digest[:24]}-{conversion_code()}"
    if (folder / "calib_config.json").is_file():
        try:
            cfg_dict = json.loads((folder / "calib_config.json").read_text(encoding="utf-8"))
            cfg = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg_dict.items()})
            tensors = read_safetensors([str(folder / "model.safetensors")])
        except (
            Exception
        ) as err:  # a damaged cache entry (json, safetensors or field errors): name it and the fix
            raise CalibError(
                f"the converted copy of {path} in {folder} is damaged ({type(err).__name__}: {err}); delete that "
                "folder and calib converts the GGUF file again"
            ) from None
        model = build_model(cfg, tensors, path, dtype, placement(mesh, cfg, weights), weights)
    else:
        cfg, model = _convert_gguf(path, folder, dtype, mesh, weights)
    tokenizer = functools.partial(load_tokenizer, str(folder))
    return LanguageModel(name, cfg, model, tokenizer, digest, _prompt_style(str(folder)), str(folder), mesh)


def conversion_code() -> str:
    """Fingerprint of the code that converts a GGUF file: an edited converter writes a new cache folder instead of
    reading one it would no longer produce."""
    from calib.fingerprint import module_fingerprint, object_fingerprint

    parts = [module_fingerprint(m) for m in CONVERSION_MODULES] + [object_fingerprint(_convert_gguf)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _convert_gguf(path: str, folder: Path, dtype, mesh, weights: str) -> tuple[ModelConfig, Transformer]:
    """Dequantize one tensor at a time: append it (float32, exact, so any dtype loads from the cache alike) to the
    cache file and place it on the device in the target dtype, before the next is read. Host memory peaks near the
    largest float32 tensor plus the target-dtype model. The folder is published atomically (all of it or nothing)."""
    from calib.models.gguf_weights import gguf_config, gguf_plan, gguf_tensors, open_gguf
    from calib.models.safetensors_io import SafetensorsWriter

    reader = open_gguf(path)
    cfg = gguf_config(reader, path)
    plan = gguf_plan(reader, cfg, path)
    specs = [(name, np.dtype(np.float32), shape) for _, name, shape in plan]
    with atomic_dir(folder) as tmp, SafetensorsWriter(tmp / "model.safetensors", specs) as writer:

        def written(stream):
            for name, array in stream:
                writer.write(name, array)
                yield name, array
                del array

        model = build_model(
            cfg,
            written(gguf_tensors(reader, cfg, path, plan)),
            path,
            dtype,
            placement(mesh, cfg, weights),
            weights,
        )
        del (
            plan,
            reader,
        )  # the reader's parsed metadata (a 262k-token vocabulary: ~0.7 GB) before the tokenizer's
        tokenizer = load_tokenizer(os.path.dirname(path) or ".", gguf_file=os.path.basename(path))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "calib_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    return cfg, model
