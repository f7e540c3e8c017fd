"""Issue 17: malformed model and question files are one-line CalibErrors naming the file and what to fix, the user's
file is left as it was, and the CLI shows one `calib: error:` line (exit 2) instead of a traceback."""

from __future__ import annotations

import json
import os
import struct

import pytest
from loader_files import HF_CONFIG, sha256, write_gguf, write_hf_folder, write_jsonl

from calib.cli import main
from calib.errors import CalibError
from calib.models.gguf_weights import gguf_config, gguf_state_dict, open_gguf
from calib.models.hf_weights import hf_config, hf_state_dict
from calib.tasks import load_task


def _refused(path, call, *expected) -> str:
    """call() raises a one-line CalibError naming path and every expected text; path's bytes are unchanged."""
    before = sha256(path)
    with pytest.raises(CalibError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for text in expected:
        assert text in message, (text, message)
    assert sha256(path) == before
    return message


def _cli(tmp_path, capsys, *overrides) -> str:
    with pytest.raises(SystemExit) as info:
        main(
            [
                *overrides,
                f"artifacts_dir={tmp_path / 'artifacts'}",
                f"hydra.run.dir={tmp_path / 'run'}",
                "hydra/job_logging=none",
                "hydra/hydra_logging=none",
            ]
        )
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert info.value.code == 2 and len(lines) == 1 and lines[0].startswith("calib: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


# ---- case 1: HF config.json and safetensors ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ([HF_CONFIG], ["JSON list", "expected an object"]),
        ({k: v for k, v in HF_CONFIG.items() if k != "num_attention_heads"}, ["lacks num_attention_heads"]),
        (HF_CONFIG | {"num_attention_heads": 0}, ["num_attention_heads is 0", "positive integer"]),
        (HF_CONFIG | {"num_attention_heads": "4"}, ["num_attention_heads is '4'", "positive integer"]),
        (HF_CONFIG | {"hidden_size": 8.0}, ["hidden_size is 8.0"]),
        (HF_CONFIG | {"num_key_value_heads": 3}, ["not a multiple of num_key_value_heads (3)"]),
        (HF_CONFIG | {"rope_theta": "big"}, ["rope_theta is 'big'", "positive number"]),
        (HF_CONFIG | {"eos_token_id": [2, -1]}, ["eos_token_id is -1"]),
        (HF_CONFIG | {"text_config": [1]}, ["text_config is [1]"]),
        (
            json.dumps(HF_CONFIG | {"name": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"),
            ["not UTF-8", "byte offset"],
        ),
        (b'{"model_type": "llama",', ["not valid JSON", "line 1"]),
    ],
)
def test_malformed_hf_config_names_file_and_field(tmp_path, config, expected):
    folder = write_hf_folder(tmp_path / "m", config)
    _refused(folder / "config.json", lambda: hf_config(str(folder)), *expected)


def test_valid_hf_config_still_reads(tmp_path):
    cfg = hf_config(str(write_hf_folder(tmp_path / "m")))
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.eos_ids, cfg.pad_id) == (2, 1, 4, (2,), 2)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header_length", "offsets"])
def test_damaged_safetensors_names_the_file(tmp_path, damage):
    folder = write_hf_folder(tmp_path / "m")
    file = folder / "model.safetensors"
    data = file.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    if damage == "garbage":
        data = os.urandom(len(data))
    elif damage == "truncated":
        data = data[: n + 8 + 10]
    elif damage == "header_length":
        data = struct.pack("<Q", len(data) * 2) + data[8:]
    else:
        data = data.replace(b'"data_offsets":[0,', b'"data_offsets":[4,', 1)
    file.write_bytes(data)
    _refused(file, lambda: hf_state_dict(str(folder)), "not a valid safetensors file")


def test_cli_hf_config_error_is_one_line(tmp_path, capsys):
    folder = write_hf_folder(tmp_path / "m", HF_CONFIG | {"num_attention_heads": 0})
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Q?", "answers": ["a"]}])
    line = _cli(tmp_path, capsys, f"model.name=hf:{folder}", "task=jsonl", f"task.options.path={questions}")
    assert "num_attention_heads is 0" in line and str(folder / "config.json") in line


# ---- case 2: GGUF -----------------------------------------------------------------------------------------------
def test_damaged_gguf_headers_name_the_file(tmp_path):
    good = write_gguf(tmp_path / "good.gguf")
    data = good.read_bytes()
    key = data.find(b"tokenizer.ggml.tokens") + len("tokenizer.ggml.tokens") + 4  # item type, then the count
    huge = bytearray(data)
    struct.pack_into(
        "<IQ", huge, key, 0, 1 << 40
    )  # a uint8 array of 2**40 items: gguf.GGUFReader loops on it
    cases = {
        "random.gguf": os.urandom(2048),
        "truncated.gguf": data[: len(data) // 3],
        "short.gguf": data[:10],
        "magic.gguf": b"GGUX" + data[4:],
        "huge_array.gguf": bytes(huge),
        "bad_key.gguf": data.replace(b"llama.block_count", b"llama.bl\xffck_count", 1),
    }
    for name, raw in cases.items():
        path = tmp_path / name
        path.write_bytes(raw)
        _refused(path, lambda path=path: open_gguf(str(path)), "GGUF file")


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"llama__attention__head_count": "four"}, "llama.attention.head_count is 'four'"),
        ({"llama__attention__head_count": 0}, "llama.attention.head_count is 0"),
        ({"llama__attention__head_count_kv": 3}, "not a multiple of llama.attention.head_count_kv (3)"),
        ({"llama__block_count": None}, "lacks metadata key llama.block_count"),
        ({"llama__attention__layer_norm_rms_epsilon": True}, "layer_norm_rms_epsilon is True"),
        ({"llama__embedding_length": 7}, "embedding_length (7) is not a multiple"),
    ],
)
def test_bad_gguf_metadata_names_the_key(tmp_path, meta, expected):
    path = write_gguf(tmp_path / "m.gguf", **meta)
    _refused(path, lambda: gguf_config(open_gguf(str(path)), str(path)), expected)


def test_valid_tiny_gguf_reads(tmp_path):
    path = str(write_gguf(tmp_path / "m.gguf"))
    reader = open_gguf(path)
    cfg = gguf_config(reader, path)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.vocab_size) == (2, 1, 4, 12)
    assert gguf_state_dict(reader, cfg, path)["model.layers.0.self_attn.q_proj.weight"].shape == (8, 8)


def test_cli_gguf_error_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CALIB_CACHE_DIR", str(tmp_path / "cache"))
    path = write_gguf(tmp_path / "m.gguf", llama__attention__head_count="four")
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question": "Q?", "answers": ["a"]}])
    line = _cli(tmp_path, capsys, f"model.name=gguf:{path}", "task=jsonl", f"task.options.path={questions}")
    assert "llama.attention.head_count is 'four'" in line and str(path) in line


# ---- case 3: JSONL decoding -------------------------------------------------------------------------------------
def test_latin1_byte_names_line_offset_and_the_encoding_option(tmp_path):
    path = tmp_path / "quiz.jsonl"
    first = b'{"question": "Q1?", "answers": ["a"]}\n'
    path.write_bytes(first + b'{"question": "Caf\xe9?", "answers": ["b"]}\n')
    offset = len(first) + len(b'{"question": "Caf')
    _refused(
        path,
        lambda: load_task("jsonl", path=str(path)),
        "line 2",
        f"byte offset {offset}",
        "0xe9",
        "task.options.encoding",
    )
    assert load_task("jsonl", path=str(path), encoding="latin-1", shuffle=False)[1].question == "Café?"


def test_bad_byte_offset_counts_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    first = b'\xef\xbb\xbf{"question": "Q1?", "answers": ["a"]}\n'
    path.write_bytes(first + b'{"question": "\xff?", "answers": ["b"]}\n')
    offset = len(first) + len(b'{"question": "')
    for encoding in ("utf-8", "utf-8-sig"):  # utf-8-sig reports positions after its BOM; the message must not
        message = _refused(
            path, lambda encoding=encoding: load_task("jsonl", path=str(path), encoding=encoding)
        )
        assert f"line 2: byte 0xff at byte offset {offset} is not valid {encoding}" in message


def test_lone_surrogate_is_refused_with_line(tmp_path):
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [{"question": "Fine?", "answers": ["a"]}, '{"question": "Odd?", "answers": ["x\\ud800"]}'],
    )
    _refused(path, lambda: load_task("jsonl", path=str(path)), "line 2", "column 'answers'", "lone surrogate")


def test_cli_bad_byte_is_one_line_and_encoding_option_reaches_the_loader(tmp_path, capsys):
    path = tmp_path / "quiz.jsonl"
    path.write_bytes(b'{"question": "Caf\xe9?", "answers": ["b"]}\n')
    line = _cli(tmp_path, capsys, "task=jsonl", f"task.options.path={path}")
    assert "line 1" in line and "task.options.encoding" in line
    # with the encoding set the questions load, and the run stops later, at the (broken) model
    folder = write_hf_folder(tmp_path / "m", [1])
    overrides = ["task=jsonl", f"task.options.path={path}", "task.options.encoding=latin-1"]
    line = _cli(tmp_path, capsys, *overrides, f"model.name=hf:{folder}")
    assert "config.json" in line and "JSON list" in line


# ---- case 4: JSONL ids ------------------------------------------------------------------------------------------
def _rows(*ids):
    return [{"id": i, "question": f"Question {i}?", "answers": ["a"]} for i in ids]


def test_id_column_is_used_by_default_and_survives_an_inserted_line(tmp_path):
    before = load_task(
        "jsonl", path=str(write_jsonl(tmp_path / "a.jsonl", _rows("q1", "q2", "q3"))), shuffle=False
    )
    after = load_task(
        "jsonl", path=str(write_jsonl(tmp_path / "a.jsonl", _rows("q0", "q1", "q2", "q3"))), shuffle=False
    )
    assert before.ids == ["q1", "q2", "q3"] and after.ids == ["q0", "q1", "q2", "q3"]
    assert {ex.id: ex.question for ex in before}.items() <= {ex.id: ex.question for ex in after}.items()
    no_ids = [{"question": "A?", "answers": ["a"]}, {"question": "B?", "answers": ["b"]}]
    assert load_task("jsonl", path=str(write_jsonl(tmp_path / "p.jsonl", no_ids)), shuffle=False).ids == [
        "p/0",
        "p/1",
    ]
    assert load_task(
        "jsonl", path=str(write_jsonl(tmp_path / "n.jsonl", _rows(7, 8))), shuffle=False
    ).ids == [
        "7",
        "8",
    ]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (_rows("q1", "q2", "q1"), ["line 3", "duplicate id 'q1'", "first at line 1"]),
        ([*_rows("q1"), {"question": "B?", "answers": ["b"]}], ["line 2", "no id column 'id'"]),
        ([{"question": "B?", "answers": ["b"]}, *_rows("q1")], ["line 2", "rows before it have none"]),
        (_rows("q1", ""), ["line 2", "holds ''"]),
        (_rows("q1", ["x"]), ["line 2", "holds ['x']"]),
    ],
)
def test_bad_ids_name_the_lines(tmp_path, rows, expected):
    path = write_jsonl(tmp_path / "ids.jsonl", rows)
    _refused(path, lambda: load_task("jsonl", path=str(path)), *expected)


def test_named_id_column_must_be_in_every_row(tmp_path):
    rows = [{"qid": "x", "question": "A?", "answers": ["a"]}, {"question": "B?", "answers": ["b"]}]
    path = write_jsonl(tmp_path / "named.jsonl", rows)
    _refused(path, lambda: load_task("jsonl", path=str(path), id="qid"), "line 2", "no id column 'qid'")


def test_cli_duplicate_ids_are_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "ids.jsonl", _rows("q1", "q2", "q2"))
    line = _cli(tmp_path, capsys, "task=jsonl", f"task.options.path={path}")
    assert "line 3: duplicate id 'q2' (first at line 2)" in line
