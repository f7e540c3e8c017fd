"""Stop handling: which vocabulary entries end an answer (checked on device), and exact truncation on the host."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=32)
def _token_texts(tokenizer) -> tuple[str, ...]:
    return tuple(tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False))


def stop_token_mask(tokenizer, stop: tuple[str, ...], vocab_size: int) -> np.ndarray:
    """[V] bool: tokens whose text contains a stop string (the device stops a row when it samples one).

    Stop strings longer than one token are still cut exactly by `truncate_at_stop` on the host; they just do not
    end the row early.
    """
    mask = np.zeros(vocab_size, bool)
    if stop:
        texts = _token_texts(tokenizer)
        for i, text in enumerate(texts[:vocab_size]):
            mask[i] = any(s in text for s in stop)
    return mask


def eos_token_mask(eos_ids: tuple[int, ...], vocab_size: int) -> np.ndarray:
    mask = np.zeros(vocab_size, bool)
    mask[[i for i in eos_ids if i < vocab_size]] = True
    return mask


def truncate_at_stop(tokenizer, ids: np.ndarray, stop: tuple[str, ...]) -> tuple[str, int, bool]:
    """Decode ids, cut the text at the first stop string. Returns (text, tokens kept, whether a stop was found).

    Tokens kept are those that end before the stop string starts; the token containing it is dropped.
    """
    text = tokenizer.decode(ids.tolist(), skip_special_tokens=True)
    cuts = [text.find(s) for s in stop if s and s in text]
    if not cuts:
        return text, len(ids), False
    cut = min(cuts)
    kept = len(ids)
    while kept > 0 and len(tokenizer.decode(ids[:kept].tolist(), skip_special_tokens=True)) > cut:
        kept -= 1
    return text[:cut], kept, True
