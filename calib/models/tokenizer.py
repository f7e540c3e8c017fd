"""Tokenizers: always a transformers tokenizer; a byte-level one for the tiny random test models."""

from __future__ import annotations

import json
import os

from calib.errors import CalibError

CHATML_TEMPLATE = (
    "{% for message in messages %}<|bos|>{{ message['role'] }}\n{{ message['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def byte_tokenizer():
    """256 byte-level tokens (ids 0..255) + <|pad|> 256, <|bos|> 257, <|eos|> 258, <|unk|> 259: no files, no network."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: i for i, char in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        unk_token="<|unk|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def named_tokenizer_class(folder: str):
    """The `tokenizers`-backed transformers class a folder's tokenizer_config.json names, or None (then AutoTokenizer
    decides: a missing, unknown or Python-backed class).

    Loading that class directly gives the tokenizer AutoTokenizer would build, without AutoTokenizer's detour through
    the model config, whose module imports torch (1.9 s more per load on the built-ins)."""
    import transformers

    try:
        with open(os.path.join(folder, "tokenizer_config.json")) as f:
            name = json.load(f).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None
    cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    # the `tokenizers`-backed base, which AutoTokenizer prefers (absent before transformers 5: then AutoTokenizer)
    fast = getattr(transformers, "TokenizersBackend", None)
    return cls if fast is not None and isinstance(cls, type) and issubclass(cls, fast) else None


def load_tokenizer(folder: str, gguf_file: str | None = None):
    """The tokenizer of a folder (tokenizer.json etc.) or of a GGUF file's vocabulary; never remote code."""
    try:
        named = None if gguf_file is not None else named_tokenizer_class(folder)
        if named is not None:  # a transformers class: no remote code to trust
            return named.from_pretrained(folder, local_files_only=True)
        from transformers import AutoTokenizer  # (imports torch through the model config)

        if gguf_file is not None:
            return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=False)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except Exception as err:
        where = os.path.join(folder, gguf_file) if gguf_file else folder
        raise CalibError(
            f"cannot load a tokenizer from {where}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from None
