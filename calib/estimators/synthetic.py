"""Build `Generations` from plain texts and log-probs: for tests, docs examples, benchmarks, and answers that come
from outside calib's sampler (e.g. an API) but should still go through the estimators."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calib.decode.types import Generations


def _as_float(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1)


def generations_from(
    texts: Sequence[Sequence[str]],
    logprobs: Sequence[Sequence[Sequence[float]]] | None = None,
    entropies: Sequence[Sequence[Sequence[float]]] | None = None,
    token_ids: Sequence[Sequence[Sequence[int]]] | None = None,
    prompts: Sequence[str] | None = None,
) -> Generations:
    """Generations for texts[i][k]; token arrays default to one token per whitespace word with log-prob 0."""
    n = len(texts)
    if token_ids is None:
        token_ids = [[list(range(len(t.split()))) for t in row] for row in texts]
    if logprobs is None:
        logprobs = [[[0.0] * len(ids) for ids in row] for row in token_ids]
    if entropies is None:
        entropies = [[[0.0] * len(lp) for lp in row] for row in logprobs]
    lp = [[_as_float(x) for x in row] for row in logprobs]
    ids = [[np.asarray(x, dtype=np.int32).reshape(-1) for x in row] for row in token_ids]
    return Generations(
        prompts=list(prompts) if prompts is not None else [f"prompt {i}" for i in range(n)],
        texts=[list(row) for row in texts],
        token_ids=ids,
        token_logprobs=lp,
        sample_logprobs=[[x.copy() for x in row] for row in lp],
        token_entropies=[[_as_float(x) for x in row] for row in entropies],
        top_ids=[[x[:, None] for x in row] for row in ids],
        top_logprobs=[[x[:, None] for x in row] for row in lp],
        stop_reasons=[["stop"] * len(row) for row in texts],
    )
