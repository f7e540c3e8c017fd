"""Loader fuzzing (issue 17): random bytes and mutated valid GGUF, config.json, safetensors and JSONL files end in a
result or a one-line CalibError naming the file, never in another exception. Each example parses one tiny file
(milliseconds); the example counts come from the hypothesis profile in conftest.py (300, or 10,000 under
CALIB_FUZZ=1)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from loader_files import GGUF_META, HF_CONFIG, llama_tensors, write_gguf, write_hf_folder

from calib.errors import CalibError
from calib.models.gguf_weights import gguf_config, gguf_state_dict, open_gguf
from calib.models.hf_weights import hf_config, hf_state_dict
from calib.tasks.jsonl import load_file

pytestmark = pytest.mark.fuzz

# 8-byte and 4-byte values that are edge cases for GGUF/safetensors length and count fields
EDGES = [0, 1, 2, 3, 7, 255, 2**16, 2**31 - 1, 2**32 - 1, 2**32, 2**40, 2**63 - 1, 2**64 - 1]
JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """Valid originals (bytes) and a scratch folder the examples overwrite."""
    root = tmp_path_factory.mktemp("fuzz")
    gguf = write_gguf(root / "valid.gguf").read_bytes()
    hf = write_hf_folder(root / "valid_hf")
    return {
        "root": root,
        "gguf": gguf,
        "safetensors": (hf / "model.safetensors").read_bytes(),
        "header_end": _gguf_header_end(gguf),
    }


def _gguf_header_end(data: bytes) -> int:
    """Where the tensor data of the valid file starts (mutations aim at the header before it)."""
    tensor_bytes = sum(v.nbytes for v in llama_tensors().values())
    return len(data) - tensor_bytes


def _ends_well(path: Path, call) -> object:
    """The property: call() returns, or raises a one-line CalibError that names the file."""
    try:
        result = call()
    except CalibError as err:
        message = str(err)
        assert "\n" not in message and str(path) in message, message
        event("CalibError")  # --hypothesis-show-statistics reports how often each outcome was reached
        return None
    event("loaded")
    return result


def _mutate(
    data: bytes, edits: list[tuple[int, int]], words: list[tuple[int, int, int]], cut: int | None
) -> bytes:
    out = bytearray(data)
    for pos, byte in edits:
        out[pos % len(out)] = byte
    for pos, size, value in words:
        pos %= max(1, len(out) - size)
        out[pos : pos + size] = (value % 2 ** (8 * size)).to_bytes(size, "little")
    return bytes(out[:cut] if cut is not None else out)


EDITS = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6)
WORDS = st.lists(
    st.tuples(st.integers(0, 2**16), st.sampled_from([4, 8]), st.sampled_from(EDGES)), max_size=3
)


def _load_gguf(path: Path):
    reader = open_gguf(str(path))
    cfg = gguf_config(reader, str(path))
    return cfg, gguf_state_dict(reader, cfg, str(path))


# ---- GGUF -------------------------------------------------------------------------------------------------------
@given(data=st.binary(max_size=2048) | st.binary(max_size=64).map(lambda b: b"GGUF\x03\x00\x00\x00" + b))
def test_gguf_random_bytes(files, data):
    path = files["root"] / "random.gguf"
    path.write_bytes(data)
    _ends_well(path, lambda: _load_gguf(path))


@given(edits=EDITS, words=WORDS, cut=st.none() | st.integers(0, 4096))
def test_gguf_mutated_header(files, edits, words, cut):
    end = files["header_end"]
    edits = [(p % end, b) for p, b in edits]
    words = [(p % end, s, v) for p, s, v in words]
    path = files["root"] / "mutated.gguf"
    path.write_bytes(_mutate(files["gguf"], edits, words, cut))
    _ends_well(path, lambda: _load_gguf(path))


@given(
    key=st.sampled_from([*GGUF_META, "llama.attention.key_length", "llama.vocab_size"]),
    value=st.none() | st.booleans() | st.integers(0, 2**32 - 1) | st.floats(width=32) | st.text(max_size=8),
)
def test_gguf_metadata_values(files, key, value):
    path = files["root"] / "meta.gguf"
    write_gguf(path, **{key.replace(".", "__"): value})
    result = _ends_well(path, lambda: _load_gguf(path))
    if result is not None:
        cfg, _ = result
        assert cfg.num_heads % cfg.num_kv_heads == 0 and cfg.head_dim >= 1 and cfg.norm_eps > 0


HF_EXTRA_KEYS = [
    "head_dim",
    "text_config",
    "rope_scaling",
    "rope_parameters",
    "layer_types",
    "sliding_window",
    "sliding_window_pattern",
    "query_pre_attn_scalar",
    "pad_token_id",
    "attention_bias",
    "hidden_act",
]


# ---- HF config.json and safetensors -----------------------------------------------------------------------------
@given(
    kind=st.sampled_from(["llama", "qwen2", "gemma3_text", "gemma3"]),
    changes=st.dictionaries(st.sampled_from([*HF_CONFIG, *HF_EXTRA_KEYS]), JSON),
    drop=st.sets(st.sampled_from(list(HF_CONFIG))),
)
def test_hf_config_mutated_fields(files, kind, changes, drop):
    folder = files["root"] / "hf_fields"
    folder.mkdir(exist_ok=True)
    config = {k: v for k, v in (HF_CONFIG | {"model_type": kind} | changes).items() if k not in drop}
    (folder / "config.json").write_text(json.dumps(config))
    cfg = _ends_well(folder, lambda: hf_config(str(folder)))
    if cfg is not None:
        assert (
            min(cfg.vocab_size, cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.head_dim, cfg.ffw_dim) >= 1
        )


@given(data=st.binary(max_size=512) | JSON.map(lambda v: json.dumps(v).encode()))
def test_hf_config_random_bytes_and_json(files, data):
    folder = files["root"] / "hf_bytes"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_bytes(data)
    _ends_well(folder, lambda: hf_config(str(folder)))


@given(
    data=st.binary(max_size=256)
    | st.builds(lambda n, b: struct.pack("<Q", n) + b, st.sampled_from(EDGES), st.binary())
)
def test_safetensors_random_bytes(files, data):
    folder = files["root"] / "st_random"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(data)
    _ends_well(folder, lambda: hf_state_dict(str(folder)))


@given(edits=EDITS, words=WORDS, cut=st.none() | st.integers(0, 1024))
def test_safetensors_mutated(files, edits, words, cut):
    folder = files["root"] / "st_mutated"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(_mutate(files["safetensors"], edits, words, cut))
    _ends_well(folder, lambda: hf_state_dict(str(folder)))


# ---- JSONL question files ---------------------------------------------------------------------------------------
TEXTISH = (
    st.text(max_size=12) | JSON
)  # mostly plausible values, so rows often load and the id rules are reached
ROW = st.fixed_dictionaries(
    {"question": TEXTISH, "answers": st.lists(st.text(max_size=6), max_size=3) | JSON},
    optional={
        "id": st.sampled_from(["a", "b", 1, 2]) | TEXTISH,
        "category": TEXTISH,
        "context": TEXTISH,
        "open": JSON,
    },
).map(lambda r: json.dumps(r).encode())
NOISE = st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass"))
LINE = st.one_of(ROW, ROW, ROW, NOISE)  # mostly rows, so some files load through to the id checks


@given(
    lines=st.lists(LINE, max_size=6),
    encoding=st.just("utf-8")
    | st.sampled_from(["latin-1", "utf-16", "utf-8-sig", "no-such-codec", "base64"]),
    columns=st.sampled_from([{}, {"id": "id"}, {"context": "context", "category": "category"}]),
)
def test_jsonl_lines(files, lines, encoding, columns):
    path = files["root"] / "questions.jsonl"
    path.write_bytes(b"\n".join(lines))
    task = _ends_well(path, lambda: load_file(path, encoding=encoding, open_ended="open", **columns))
    if task is not None:
        assert len(set(task.ids)) == len(task) >= 1
        for ex in task:
            (ex.id + ex.question + ex.category + ex.context + "".join(ex.answers)).encode("utf-8")
