"""DecodeSession: rows that keep their KV cache between decode calls, so a cue can be appended and decoding resumed.

Pause-and-revise builds on this: decode an answer, append "Wait, ..." after it, decode again, without re-encoding
the history. A session holds one compiled batch of rows (prompt x sample); `generate` runs one session per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np

from calib.decode import session
from calib.decode.planning import (
    DecodePlan,
    bucket,
    bucket_length,
    cache_length,
    decode_plan,
    prefill_group_for,
)
from calib.decode.stops import eos_token_mask, stop_token_mask, truncate_at_stop
from calib.decode.types import SAMPLE_FIELDS, Generations, Sampling
from calib.devices import data_size, put_rows
from calib.errors import CalibError
from calib.models.lm import LanguageModel

REASON_NAMES = {session.REASON_STOP: "stop", session.REASON_EOS: "eos", session.REASON_LENGTH: "length"}


def prefill_groups(lengths: np.ndarray, multiple: int = 1, group: int = 16) -> list[np.ndarray]:
    """Prompt slots in groups of `group` by length, so each group pads only to its own length bucket.

    Group sizes are multiples of `multiple` (the devices) and there are few distinct ones: a handful of compiles.
    (16 on CPU: enough rows for full-speed matmuls, little padding; DecodePlan.prefill_group.)
    """
    order = np.argsort(lengths, kind="stable")
    size = max(multiple, group - group % multiple)
    return [order[start : start + size] for start in range(0, len(order), size)]


class DecodeSession:
    """A batch of rows (each prompt repeated `rows_per_prompt` times) with a shared, growing KV cache.

    Row r belongs to prompt r // rows_per_prompt. `greedy_rows` marks rows decoded by argmax. The cache has room
    for the prompt plus `room` more tokens over all passes and cues.
    """

    def __init__(
        self,
        lm: LanguageModel,
        prompt_ids: Sequence[Sequence[int]],
        rows_per_prompt: int,
        greedy_rows: Sequence[bool],
        room: int,
        seed: int = 0,
        prompt_index_offset: int = 0,
        batch_prompts: int | None = None,
        prompt_indices: Sequence[int] | None = None,
        plan: DecodePlan | None = None,
    ):
        self.lm, self.rows_per_prompt = lm, rows_per_prompt
        self.plan = plan or decode_plan()
        self.num_prompts = len(prompt_ids)
        batch = batch_prompts or self.num_prompts
        if batch < self.num_prompts:
            raise CalibError(f"batch_prompts={batch} is smaller than the {self.num_prompts} prompts given")
        cfg = lm.config
        self.cache_len = cache_length(max(len(p) for p in prompt_ids), room)
        self.rows = batch * rows_per_prompt
        self.history = [
            list(prompt_ids[r // rows_per_prompt]) if r // rows_per_prompt < self.num_prompts else []
            for r in range(self.rows)
        ]  # every token in each row's cache, for checks and revise
        self.pending: list[int | None] = [None] * self.rows  # last sampled token not yet fed to the cache
        self.greedy = np.tile(np.asarray(greedy_rows, bool), batch)
        if prompt_indices is None:
            prompt_indices = range(prompt_index_offset, prompt_index_offset + self.num_prompts)
        if len(prompt_indices) != self.num_prompts:
            raise CalibError(f"{len(prompt_indices)} prompt indices for {self.num_prompts} prompts")
        padding = range(max(prompt_indices) + 1, max(prompt_indices) + 1 + batch - self.num_prompts)
        keys = session.row_keys(seed, np.asarray([*prompt_indices, *padding]), rows_per_prompt)
        self.n_dev = data_size(lm.mesh)  # batch sizes are multiples of the "data" axis
        self.mesh = lm.mesh if lm.mesh is not None and lm.mesh.devices.size > 1 else None
        graphdef, params = lm.graphdef_and_state
        # rows on "data", cache kv-heads on "model" from the start: each device prefills only its prompts
        self.state = put_rows(session.empty_state(cfg, self.rows, self.cache_len, lm.dtype, keys), self.mesh)
        lengths = np.ones(batch, np.int32)
        lengths[: self.num_prompts] = [len(p) for p in prompt_ids]
        group = prefill_group_for(self.plan, cfg, int(lengths.max()), jnp.dtype(lm.dtype).itemsize)
        for slots in prefill_groups(lengths, self.n_dev, group):
            ids = np.full((len(slots), bucket_length(int(lengths[slots].max()))), cfg.pad_id, np.int32)
            for j, slot in enumerate(slots):
                if slot < self.num_prompts:
                    ids[j, : lengths[slot]] = prompt_ids[slot]
            self.state = session.prefill_into(  # numpy inputs: jnp.asarray would build a program per shape
                graphdef,
                params,
                self.state,
                *self._put((ids, lengths[slots])),
                slots.astype(np.int32),
                repeats=rows_per_prompt,
                mesh=self.mesh,
            )
        self.positions = np.repeat(lengths, rows_per_prompt)

    def _put(self, x):
        """Host arrays -> device arrays split by rows over "data"; unchanged on one device (numpy in, no program)."""
        return put_rows(x, self.mesh)

    def decode(self, sampling: Sampling) -> session.Record:
        """Sample up to max_new_tokens per row; returns the raw device record (see `to_generations`).

        Tokens that ended the previous pass are fed first, so decode() after decode() simply continues.
        """
        if any(p is not None for p in self.pending):
            self.append([[] for _ in range(self.rows)])
        steps = sampling.max_new_tokens
        if int(self.positions.max()) + steps > self.cache_len:
            raise CalibError(
                f"decoding {steps} more tokens would overflow this session's cache of {self.cache_len} "
                "tokens: create the session with more room"
            )
        cfg, lm = self.lm.config, self.lm
        spec = session.SamplingSpec.of(sampling, self.plan.buffer(steps))
        rows = session.RowSampling.of(sampling, self.greedy)
        stops = session.StopCriteria(
            steps=np.int32(steps),
            stop_mask=stop_token_mask(lm.tokenizer, tuple(sampling.stop), cfg.vocab_size),
            eos_mask=eos_token_mask(lm.eos_ids, cfg.vocab_size),
            pad_id=np.int32(cfg.pad_id),
        )
        padding = np.arange(self.rows) >= self.num_prompts * self.rows_per_prompt
        # a fresh pass: every real row runs (the last pass left all done); batch padding never samples
        self.state = replace(self.state, done=self._put(padding))
        self.state, record = self._decode_rows(self.state, rows, stops, padding, 0, spec)
        for r in range(self.rows):
            n = int(record.lengths[r])
            self.history[r].extend(
                int(t) for t in record.tokens[r, : n - 1]
            )  # all but the last token were fed
            self.pending[r] = int(record.tokens[r, n - 1]) if n else None
        self.positions = self.positions + np.maximum(record.lengths - 1, 0)
        return record

    def _decode_rows(self, state, rows, stops, done, start, spec, resume=False):
        """Decode from step `start`; on CPU, once few rows are still running, go on with just them in a smaller batch.

        Answers end at different steps: most have stopped after a few tokens while one long answer would keep
        the whole batch decoding. When at most a quarter of a batch of 32 rows or more runs, those rows move to a
        batch of the next power of two (their cache rows gathered, then written back). Each row's randomness depends
        only on its key and position, so samples stay the same up to float rounding (a matmul over fewer rows may
        round differently: log-probs agree to ~1e-5). `resume`: each row's last sampled token is fed first.
        """
        n_rows = len(done)
        graphdef, params = self.lm.graphdef_and_state
        state, record, end = session.decode(
            graphdef,
            params,
            state,
            self._put(rows),
            stops,
            np.int32(start),
            np.int32(self.plan.stop_below(n_rows)),
            np.bool_(resume),
            spec=spec,
            mesh=self.mesh,
        )
        record = jax.tree.map(np.array, jax.device_get(record))
        end = int(end)
        running = np.flatnonzero(~done & (record.reasons == session.REASON_RUNNING))
        if end >= int(stops.steps) or running.size == 0:
            return state, record
        size = self.plan.shrunk_rows(running.size, self.n_dev)
        idle = np.setdiff1d(np.arange(n_rows), running)[: size - running.size]
        take = np.concatenate([running, idle])
        part = session.take_rows(state, self._put(take))  # running rows keep done=False, idle ones True
        part, rest = self._decode_rows(
            part,
            jax.tree.map(lambda x: x[take], rows),
            stops,
            np.arange(size) >= running.size,
            end,
            spec,
            resume=True,
        )
        n = running.size
        back = np.where(np.arange(size) < n, take, n_rows).astype(
            np.int32
        )  # idle rows: out of range, skipped
        state = session.put_rows(state, back, part)
        for name in session.STEP_FIELDS:
            getattr(record, name)[running, end:] = getattr(rest, name)[:n, end:]
        record.lengths[running] += rest.lengths[:n]
        record.reasons[running] = rest.reasons[:n]
        record.answer_hidden[running] = rest.answer_hidden[:n]
        return state, record

    def append(self, tokens: Sequence[Sequence[int]], feed_pending: bool = True) -> None:
        """Feed tokens [row][...] after each row's history (by default first the token that ended its last pass)."""
        if len(tokens) not in (self.rows, self.num_prompts * self.rows_per_prompt):
            raise CalibError(f"append() needs one token list per row ({self.rows}), got {len(tokens)}")
        rows = [
            ([self.pending[r]] if feed_pending and self.pending[r] is not None else []) + list(tokens[r])
            if r < len(tokens)
            else []
            for r in range(self.rows)
        ]
        width = bucket(max(max(map(len, rows)), 1), 8)
        if int((self.positions + np.array([len(x) for x in rows])).max()) > self.cache_len:
            raise CalibError(f"appending would overflow this session's cache of {self.cache_len} tokens")
        ids = np.full((self.rows, width), self.lm.config.pad_id, np.int32)
        lengths = np.array([len(x) for x in rows], np.int32)
        for r, x in enumerate(rows):
            ids[r, : len(x)] = x
            self.history[r].extend(x)
            self.pending[r] = None
        graphdef, params = self.lm.graphdef_and_state
        self.state = session.append(graphdef, params, self.state, *self._put((ids, lengths)), mesh=self.mesh)
        self.positions = self.positions + lengths

    def to_generations(
        self, prompts: Sequence[str], record: session.Record, stop: tuple[str, ...]
    ) -> Generations:
        """Host side: cut each row at its terminator or stop string; regroup as [prompt][sample]."""
        return collect(self.lm, prompts, [(self.num_prompts, record)], self.rows_per_prompt, stop)


def collect(lm: LanguageModel, prompts, records, rows_per_prompt: int, stop: tuple[str, ...]) -> Generations:
    """Turn device records of several batches into one Generations."""
    names = SAMPLE_FIELDS
    fields: dict[str, list] = {name: [] for name in names}
    hidden = []
    for n_prompts, rec in records:
        for p in range(n_prompts):
            per_sample: dict[str, list] = {name: [] for name in names}
            for s in range(rows_per_prompt):
                r = p * rows_per_prompt + s
                n, reason = int(rec.lengths[r]), int(rec.reasons[r])
                if reason == session.REASON_EOS:
                    n -= 1
                text, kept, found = truncate_at_stop(lm.tokenizer, rec.tokens[r, :n], stop)
                per_sample["texts"].append(text.strip())
                per_sample["stop_reasons"].append(
                    "stop" if found or reason == session.REASON_STOP else REASON_NAMES.get(reason, "length")
                )
                for name, source in (
                    ("token_ids", rec.tokens),
                    ("token_logprobs", rec.logprobs),
                    ("sample_logprobs", rec.sample_logprobs),
                    ("token_entropies", rec.entropies),
                    ("top_ids", rec.top_ids),
                    ("top_logprobs", rec.top_logprobs),
                ):
                    per_sample[name].append(np.asarray(source[r, :kept]))
            for name in names:
                fields[name].append(per_sample[name])
            hidden.append(
                np.asarray(rec.answer_hidden[p * rows_per_prompt : (p + 1) * rows_per_prompt], np.float32)
            )
    return Generations(prompts=list(prompts), hidden=hidden, **fields)
