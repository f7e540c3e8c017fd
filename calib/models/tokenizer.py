"""Tokenizers: always a transformers tokenizer; a byte-level one for the tiny random test models."""

from __future__ import annotations

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


def load_tokenizer(folder: str, gguf_file: str | None = None):
    """AutoTokenizer from a folder (tokenizer.json etc.) or from a GGUF file's vocabulary; never remote code."""
    from transformers import AutoTokenizer

    try:
        if gguf_file is not None:
            return AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, trust_remote_code=False)
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except Exception as err:
        where = os.path.join(folder, gguf_file) if gguf_file else folder
        raise CalibError(
            f"cannot load a tokenizer from {where}: {type(err).__name__}: {str(err).splitlines()[0]}"
        ) from None
