"""load_tokenizer builds the class tokenizer_config.json names directly: the same tokenizer AutoTokenizer builds."""

import json
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from calib.errors import CalibError
from calib.models.registry import load_model
from calib.models.tokenizer import byte_tokenizer, load_tokenizer, named_tokenizer_class

TEXTS = [
    "Q: What is the capital of France?\nA: Paris",
    "héllo wörld 😀  multiple   spaces\n\n\ttabs",
    "<|im_start|>user\nhi<|im_end|><bos><start_of_turn>model\n",
    "",
]
CHAT = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]


def assert_same_tokenizer(fast, auto) -> None:
    assert type(fast) is type(auto)
    for text in TEXTS:
        assert fast(text)["input_ids"] == auto(text)["input_ids"], text
        assert fast.encode(text, add_special_tokens=False) == auto.encode(text, add_special_tokens=False)
    ids = auto.encode(TEXTS[1])
    assert fast.decode(ids) == auto.decode(ids)
    assert fast.all_special_tokens == auto.all_special_tokens and len(fast) == len(auto)
    assert (fast.bos_token_id, fast.eos_token_id, fast.pad_token_id) == (
        auto.bos_token_id,
        auto.eos_token_id,
        auto.pad_token_id,
    )
    assert fast.chat_template == auto.chat_template
    if auto.chat_template:
        assert fast.apply_chat_template(CHAT, tokenize=False) == auto.apply_chat_template(
            CHAT, tokenize=False
        )


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_builtin_tokenizers_equal_autotokenizer(name):
    folder = load_model(name).cache_dir
    # the converted folder names its class: the direct path is the one compared
    assert named_tokenizer_class(folder) is not None
    auto = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert_same_tokenizer(load_tokenizer(folder), auto)


def test_a_folder_without_a_named_class_falls_back_to_autotokenizer(tmp_path):
    byte_tokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    # missing, unknown, not a name, not a tokenizer, a tokenizer not backed by `tokenizers`
    for bad in (None, "NoSuchTokenizer", "os.system", "AutoConfig", "PythonBackend"):
        if bad is None:
            config.pop("tokenizer_class", None)
        else:
            config["tokenizer_class"] = bad
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
        assert named_tokenizer_class(str(tmp_path)) is None
        try:
            auto = AutoTokenizer.from_pretrained(tmp_path)
        except Exception:  # AutoTokenizer cannot tell either (no config.json): one clear error, as before
            with pytest.raises(CalibError, match="cannot load a tokenizer"):
                load_tokenizer(str(tmp_path))
        else:
            assert_same_tokenizer(load_tokenizer(str(tmp_path)), auto)
    assert named_tokenizer_class(str(tmp_path / "missing")) is None


def test_the_fast_path_does_not_import_torch():
    """Checked in a fresh interpreter: torch is what AutoTokenizer's config detour costs."""
    folder = load_model("smollm2-135m-instruct").cache_dir
    code = (
        "import sys; from calib.models.tokenizer import load_tokenizer; "
        f"load_tokenizer({folder!r}); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
