"""Pause-and-revise: after each answer append a revise cue to the same rows and keep decoding from their KV cache.

Pass 0 is ordinary decoding (a greedy answer plus K samples per prompt, exactly what `generate(...,
include_greedy=True)` returns). For each revise pass r = 1..R every row gets the cue appended after its own
answer and decodes again, continuing its cache: the history is never re-encoded. Each pass keeps its answers, token
statistics and token counts. A `gate` revises only some questions (adaptive compute): the rest keep their pass-0
answers and cost nothing more, and the revised rows continue exactly as they would have without the gate.

Row randomness depends only on (seed, prompt index, row, position), so the first k samples of a run with K >= k
samples are exactly the samples of a run with k, on every pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from calib.decode.continuation import DecodeSession, Sampling, collect
from calib.decode.generate import _validate, encode_prompts
from calib.decode.planning import bucket, cache_length, decode_plan, prompts_per_batch
from calib.decode.types import SAMPLE_FIELDS, Generations
from calib.devices import data_size, put_rows
from calib.errors import CalibError
from calib.models.lm import LanguageModel
from calib.progress import progress_bar

Style = Literal["chat", "completion"]
Gate = Callable[
    [Generations, int], np.ndarray
]  # (pass-0 answers of a batch, its first prompt index) -> revise?


@dataclass(frozen=True)
class Cue:
    """A revise cue. `chat` is a new user turn rendered by the tokenizer's chat template (chat_turn="user") or
    text appended inside the model's own turn after suppressing its end-of-turn token (chat_turn="assistant",
    s1 budget forcing); `completion` is text appended after the answer for base models (a newline goes first)."""

    name: str
    chat: str
    completion: str
    chat_turn: Literal["user", "assistant"] = "user"


CUES: dict[str, Cue] = {
    cue.name: cue
    for cue in (
        Cue(
            "wait",
            chat="Wait, let me check that again. Give the answer again, corrected if it was wrong: the answer only.",
            completion="Wait, let me check that again.\nA:",
        ),
        Cue(
            "self_check",
            chat="Is that correct? If not, give the correct answer. Reply with the answer only.",
            completion="Q: Is that correct? If not, give the correct answer.\nA:",
        ),
        Cue(
            "final_answer",
            chat="What is your final answer? Reply with the answer only.",
            completion="Final answer:",
        ),
        Cue(
            "budget_forcing",
            chat="Wait, the answer is",
            completion="Wait, the answer is",
            chat_turn="assistant",
        ),
    )
}


def get_cue(cue: str | Cue) -> Cue:
    if isinstance(cue, Cue):
        return cue
    if cue not in CUES:
        raise CalibError(f"unknown revise cue {cue!r}; built-in cues: {', '.join(CUES)} (or pass a Cue)")
    return CUES[cue]


def chat_turn_suffix(tokenizer, text: str) -> str:
    """What the chat template puts between an assistant answer and the next assistant answer when the user says
    `text`: for ChatML '<|im_end|>\\n<|im_start|>user\\n{text}<|im_end|>\\n<|im_start|>assistant\\n'."""
    marker = "\u2063calib-answer\u2063"
    messages = [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": marker},
        {"role": "user", "content": text},
    ]
    try:
        full = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as err:  # a tokenizer without a usable template
        raise CalibError(
            f"revise: the tokenizer's chat template failed ({err}); use style='completion'"
        ) from None
    if marker not in full or text not in full:
        raise CalibError(
            "revise: the chat template drops the assistant answer or the cue; use style='completion'"
        )
    return full[full.index(marker) + len(marker) :]


class CueTokens:
    """Token ids to feed after one row's answer: the answer's terminator (unless it is an end-of-turn token,
    which the cue replaces) and the cue, with a separator only where the history does not already end in one."""

    def __init__(self, lm: LanguageModel, cue: Cue, style: Style):
        if style not in ("chat", "completion"):
            raise CalibError(f"revise: unknown prompt style {style!r}; styles: chat, completion")
        self.lm, self.cue, self.style = lm, cue, style
        self.eos = set(lm.eos_ids)
        self._cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        if text not in self._cache:
            self._cache[text] = list(self.lm.tokenizer(text, add_special_tokens=False)["input_ids"])
        return self._cache[text]

    def text(self, previous: str) -> str:
        """The cue text given the text of the token just before it."""
        if self.style == "chat" and self.cue.chat_turn == "user":
            return chat_turn_suffix(self.lm.tokenizer, self.cue.chat)
        if self.style == "chat":
            return ("" if previous[-1:].isspace() else " ") + self.cue.chat
        return ("" if previous.endswith("\n") else "\n") + self.cue.completion

    def for_row(self, history: Sequence[int], pending: int | None) -> tuple[list[int], list[int]]:
        """(the terminator to feed, [] or [id]; the cue's ids) for a row with this history and pending token."""
        keep = [pending] if pending is not None and pending not in self.eos else []
        last = (keep or list(history[-1:]) or [None])[0]
        previous = "" if last is None else self.lm.tokenizer.decode([last], skip_special_tokens=False)
        return keep, self._ids(self.text(previous))

    def longest(self) -> int:
        return 1 + max(len(self._ids(self.text(p))) for p in ("", "a", "\n"))


@dataclass
class Revision:
    """R + 1 passes over N prompts; pass r holds [N][1 + K] answers, the greedy row first.

    Token counts are per pass, prompt and row: `decoded` counts sampled tokens (terminator included), `fed` the
    cue tokens appended before the pass (0 on pass 0). `histories[i][s]` is every token row s of prompt i ran
    through (prompt, answers, cues; an end-of-turn token the cue replaced is not there), and pass r's answer starts
    at `offsets[r, i, s]` in it. Questions the gate did not revise carry their previous answer forward and count
    0 tokens on later passes.
    """

    passes: list[Generations]
    revised: np.ndarray  # [N] bool
    decoded: np.ndarray  # [R+1, N, 1+K] int
    fed: np.ndarray  # [R+1, N, 1+K] int
    prompt_tokens: np.ndarray  # [N] int
    histories: list[list[list[int]]]  # [N][1+K] token ids
    offsets: np.ndarray  # [R+1, N, 1+K] int, -1 where a pass did not run
    cue: Cue
    style: str
    meta: dict = field(default_factory=dict)

    @property
    def num_passes(self) -> int:
        """R: the number of revise passes after pass 0."""
        return len(self.passes) - 1

    @property
    def num_samples(self) -> int:
        return self.decoded.shape[2] - 1

    def greedy(self, r: int = -1) -> Generations:
        """The greedy answers of pass r, [N][1]."""
        return self.passes[r].select(slice(0, 1))

    def samples(self, r: int = -1, k: int | None = None) -> Generations | None:
        """The first k samples of pass r, [N][k] (all K by default); None when k = 0."""
        k = self.num_samples if k is None else k
        if k > self.num_samples:
            raise CalibError(f"revise: asked for {k} samples but this run has {self.num_samples}")
        if k == 0:
            return None
        gens = self.passes[r].select(slice(1, 1 + k))
        gens.meta.update(num_samples=k, include_greedy=False)
        return gens

    def answers(self, k: int, r: int) -> list[Generations]:
        """Passes 0..r restricted to the greedy row and the first k samples (what revision estimators read)."""
        out = []
        for p in self.passes[: r + 1]:
            gens = p.select(slice(0, 1 + k))
            gens.meta.update(num_samples=k, include_greedy=k > 0)
            out.append(gens)
        return out

    def tokens(self, k: int | None = None, r: int | None = None) -> dict[str, np.ndarray]:
        """Per-question token counts of the greedy row + first k samples over passes 0..r: generated (sampled),
        cue (appended) and processed = prompt (prefilled once, shared by the rows) + cue + generated."""
        k = self.num_samples if k is None else k
        r = self.num_passes if r is None else r
        generated = self.decoded[: r + 1, :, : 1 + k].sum(axis=(0, 2))
        cue = self.fed[: r + 1, :, : 1 + k].sum(axis=(0, 2))
        return {"generated": generated, "cue": cue, "processed": self.prompt_tokens + cue + generated}


def keep_prompts(session: DecodeSession, keep: Sequence[int]) -> None:
    """Shrink a session to some of its prompts, keeping their caches, keys and positions (gathered rows); the
    kept count is padded to a power of two with copies of the last prompt so compiled shapes repeat."""
    rpp = session.rows_per_prompt
    n_dev = data_size(session.lm.mesh)
    size = max(bucket(len(keep), 1), n_dev)
    size += (-size) % n_dev
    padded = list(keep) + [keep[-1]] * (size - len(keep))
    rows = np.array([p * rpp + s for p in padded for s in range(rpp)])
    index = jnp.asarray(rows)
    session.state = put_rows(jax.tree.map(lambda x: x[index], session.state), session.mesh)
    session.history = [list(session.history[r]) for r in rows]
    session.pending = [session.pending[r] for r in rows]
    session.greedy = session.greedy[rows]
    session.positions = session.positions[rows]
    session.rows, session.num_prompts = len(rows), len(keep)


def _histories(session: DecodeSession, first: int, count: int) -> list[list[int]]:
    """Every token rows first..first+count-1 ran through or sampled (the pending last token included)."""
    rows = range(first, first + count)
    return [
        session.history[r] + ([session.pending[r]] if session.pending[r] is not None else []) for r in rows
    ]


def _concat(parts: Sequence[Generations], meta: dict) -> Generations:
    names = ("prompts", *SAMPLE_FIELDS, "hidden")
    return Generations(
        meta=dict(meta), **{n: [row for part in parts for row in getattr(part, n)] for n in names}
    )


def _carry(previous: Generations, new: Generations | None, kept: Sequence[int]) -> Generations:
    """Pass r of one batch: the new answers of the kept prompts, the previous pass's answers elsewhere."""
    names = (*SAMPLE_FIELDS, "hidden")
    fields = {n: list(getattr(previous, n)) for n in names}
    for j, p in enumerate(kept):
        for n in names:
            fields[n][p] = getattr(new, n)[j]
    return Generations(prompts=list(previous.prompts), meta={}, **fields)


def revise(
    lm: LanguageModel,
    prompts: Sequence[str],
    num_samples: int = 0,
    passes: int = 1,
    cue: str | Cue = "self_check",
    *,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    stop: Sequence[str] = ("\n",),
    seed: int = 0,
    prompt_index_offset: int = 0,
    style: Style | None = None,
    gate: Gate | None = None,
    top_logprobs: int = 5,
    memory_budget: int | None = None,
    max_rows: int | None = None,
    progress: bool = False,
) -> Revision:
    """Greedy answer + `num_samples` samples per prompt, then `passes` revise passes continuing every row's cache.

    With passes=0 this is generate(..., include_greedy=True) (greedy=True when num_samples=0), bit for bit.
    `style` picks the cue variant (default: the model's prompt style). `gate(pass0, start)` gets each batch's
    pass-0 answers and its first prompt index and returns which of its prompts to revise.
    """
    _validate(prompts, max(num_samples, 1), max_new_tokens, temperature, top_k, top_p, min_p)
    if num_samples < 0 or passes < 0:
        raise CalibError(f"revise: num_samples ({num_samples}) and passes ({passes}) must be >= 0")
    cue = get_cue(cue)
    style = style or lm.prompt_style
    cue_tokens = CueTokens(lm, cue, style)
    sampling = Sampling(max_new_tokens, temperature, top_p, top_k, min_p, tuple(stop or ()), top_logprobs)
    started = time.perf_counter()
    room = max_new_tokens if passes == 0 else (passes + 1) * max_new_tokens + passes * cue_tokens.longest()
    encoded = encode_prompts(lm, prompts, room)
    rpp = 1 + num_samples
    greedy_rows = [True] + [False] * num_samples
    n_dev = data_size(lm.mesh)
    per_batch = prompts_per_batch(
        lm.config,
        len(prompts),
        rpp,
        cache_length(max(map(len, encoded)), room),
        max_new_tokens,
        top_logprobs,
        jnp.dtype(lm.dtype).itemsize,
        memory_budget,
        max_rows or decode_plan().max_rows,
        n_dev,
    )
    n = len(prompts)
    decoded = np.zeros((passes + 1, n, rpp), np.int64)
    fed = np.zeros((passes + 1, n, rpp), np.int64)
    revised = np.zeros(n, bool)
    offsets = np.full((passes + 1, n, rpp), -1, np.int64)
    histories: list[list[list[int]]] = []
    parts: list[list[Generations]] = [[] for _ in range(passes + 1)]
    for start in progress_bar(range(0, n, per_batch), "revise", enabled=progress, unit="batch"):
        chunk = encoded[start : start + per_batch]
        names = list(prompts[start : start + len(chunk)])
        session = DecodeSession(
            lm, chunk, rpp, greedy_rows, room, seed, prompt_index_offset + start, batch_prompts=per_batch
        )
        record = session.decode(sampling)
        current = collect(lm, names, [(len(chunk), record)], rpp, sampling.stop)
        decoded[0, start : start + len(chunk)] = np.asarray(record.lengths[: len(chunk) * rpp]).reshape(
            -1, rpp
        )
        offsets[0, start : start + len(chunk)] = np.array([len(e) for e in chunk])[:, None]
        parts[0].append(current)
        kept = list(range(len(chunk)))
        if gate is not None and passes:
            mask = np.asarray(gate(current, start), bool)
            if mask.shape != (len(chunk),):
                raise CalibError(
                    f"revise: the gate returned shape {mask.shape} for a batch of {len(chunk)} prompts"
                )
            kept = [int(i) for i in np.flatnonzero(mask)]
        revised[[start + i for i in kept]] = True
        done_now = [i for i in range(len(chunk)) if not passes or i not in kept]  # no revise pass will follow
        finished = {i: _histories(session, i * rpp, rpp) for i in done_now}
        if passes and kept and len(kept) < session.num_prompts:
            keep_prompts(session, kept)
        for r in range(1, passes + 1):
            new = None
            if kept:
                pieces = [
                    cue_tokens.for_row(session.history[row], session.pending[row])
                    for row in range(session.rows)
                ]
                session.append([end + cue for end, cue in pieces], feed_pending=False)
                for j, i in enumerate(kept):
                    rows = range(j * rpp, (j + 1) * rpp)
                    offsets[r, start + i] = [len(session.history[row]) for row in rows]
                    fed[r, start + i] = [len(pieces[row][1]) for row in rows]
                record = session.decode(sampling)
                new = collect(lm, [names[i] for i in kept], [(len(kept), record)], rpp, sampling.stop)
                for j, i in enumerate(kept):
                    decoded[r, start + i] = np.asarray(record.lengths[j * rpp : (j + 1) * rpp])
            current = _carry(current, new, kept)
            parts[r].append(current)
        if passes:
            finished.update({i: _histories(session, j * rpp, rpp) for j, i in enumerate(kept)})
        histories += [finished[i] for i in range(len(chunk))]
    meta = dict(
        num_samples=num_samples,
        include_greedy=num_samples > 0,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        max_new_tokens=max_new_tokens,
        stop=list(sampling.stop),
        seed=seed,
        prompt_index_offset=prompt_index_offset,
        prompt_tokens=int(sum(map(len, encoded))),
    )
    out = [_concat(part, {**meta, "pass": r, "cue": cue.name}) for r, part in enumerate(parts)]
    return Revision(
        passes=out,
        revised=revised,
        decoded=decoded,
        fed=fed,
        prompt_tokens=np.array([len(e) for e in encoded]),
        histories=histories,
        offsets=offsets,
        cue=cue,
        style=style,
        meta={**meta, "passes": passes, "seconds": time.perf_counter() - started},
    )


def confidence_gate(estimator, threshold: float, examples: Sequence | None = None, **bundle_options) -> Gate:
    """A gate that revises question i when `estimator`'s confidence in its pass-0 answer is below `threshold`
    (a missing confidence counts as low). The estimator sees a Bundle of the batch's greedy answer and samples."""
    from calib.estimators import Bundle

    def gate(pass0: Generations, start: int) -> np.ndarray:
        k = pass0.num_samples - 1
        greedy = pass0.select(slice(0, 1))
        samples = pass0.select(slice(1, None)) if k > 0 else None
        batch = None if examples is None else list(examples[start : start + pass0.num_prompts])
        confidence = estimator(Bundle(greedy, samples, batch, **bundle_options)).confidence
        return ~(np.asarray(confidence) >= threshold)

    return gate
