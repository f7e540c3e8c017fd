"""The shared, typed inputs of every estimator: each statistic is computed once, on first use, and cached.

The runner builds one `Bundle` per run from the greedy `Generations` (num_samples = 1), the sampled `Generations`
(K samples of the same N prompts), the task examples (objects with `.question`), optional revise passes, a semantic
backend, and callables into the model. Model calls go through injected functions, so estimators run on any model and
tests run on fakes:

- ``score_fn(prompts, continuations) -> list[np.ndarray]``: teacher-forced per-token log-probs of each continuation;
- ``generate_fn(prompts, max_new_tokens) -> list[str]``: one greedy answer per prompt (stops at a newline);
- ``decode_fn(token_ids) -> str``: the tokenizer's decode;
- ``distribution_fn(prompts, token_ids) -> list[np.ndarray]``: [T, 5] whole-distribution statistics at each token of
  each answer, teacher-forced (calib.decode.score_distribution; columns calib.decode.sampling.DISTRIBUTION_COLUMNS);
- ``attention_fn(prompts, token_ids, suffix) -> list[np.ndarray]``: [L, H, 2, P + T] self-attention diagonal and last
  row of every layer and head over prompt + answer (+ suffix) (calib.estimators.attention.attention_statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from itertools import pairwise
from typing import Any

import numpy as np

from calib.decode.types import Generations
from calib.errors import CalibError
from calib.estimators.base import Need
from calib.progress import progress_bar
from calib.semantic.base import Comparison, ScoreFn, SemanticBackend
from calib.semantic.clustering import Method, cluster_batch, representatives
from calib.semantic.exact import ExactMatch

GenerateFn = Callable[[list[str], int], list[str]]
DecodeFn = Callable[[Sequence[int]], str]
DistributionFn = Callable[[list[str], list[np.ndarray]], list[np.ndarray]]

RELEVANCE_CHUNK = 4096  # (answer, answer without one token) pairs per similarity call: progress granularity
SHARED = ("comparisons", "clusters", "greedy_cluster", "greedy_token_relevance", "sample_token_relevance")
"""The expensive, deterministic statistics a store may keep between runs (calib.pipeline.semantic_stage)."""


class Bundle:
    """Typed, lazily computed statistics over N questions shared by all estimators of a run."""

    def __init__(
        self,
        greedy: Generations,
        samples: Generations | None = None,
        examples: Sequence[Any] | None = None,
        *,
        passes: Sequence[Generations] = (),
        semantic: SemanticBackend | None = None,
        clustering: Method = "greedy",
        score_fn: ScoreFn | None = None,
        generate_fn: GenerateFn | None = None,
        decode_fn: DecodeFn | None = None,
        wrap_prompt: Callable[[str], str] | None = None,
        progress: bool = False,
        distribution_fn: DistributionFn | None = None,
        attention_fn: Callable[[list[str], list[np.ndarray], str], list[np.ndarray]] | None = None,
        given_p_true: Sequence[float] | None = None,
    ):
        if greedy.num_prompts and greedy.num_samples != 1:
            raise CalibError(
                f"bundle: the greedy generations must have one answer per prompt, not {greedy.num_samples}"
            )
        n = greedy.num_prompts
        if samples is not None and samples.num_prompts != n:
            raise CalibError(
                f"bundle: {samples.num_prompts} sampled prompts but {n} greedy prompts; they must match"
            )
        if examples is not None and len(examples) != n:
            raise CalibError(
                f"bundle: {len(examples)} examples but {n} greedy prompts; pass one example per prompt"
            )
        for r, gens in enumerate(passes):
            if gens.num_prompts != n:
                raise CalibError(f"bundle: revise pass {r} has {gens.num_prompts} prompts, expected {n}")
        if clustering not in ("greedy", "components"):
            raise CalibError(f"bundle: clustering {clustering!r} is not 'greedy' or 'components'")
        self.greedy = greedy
        self.samples = samples
        self.examples = None if examples is None else list(examples)
        self.passes = tuple(passes)
        self.semantic = semantic if semantic is not None else ExactMatch()
        self.clustering = clustering
        self.score_fn = score_fn
        self.generate_fn = generate_fn
        self.decode_fn = decode_fn
        self.distribution_fn = distribution_fn
        self.attention_fn = attention_fn
        self.given_p_true = None if given_p_true is None else np.asarray(given_p_true, dtype=np.float64)
        if self.given_p_true is not None and (
            self.given_p_true.shape != (n,) or not np.all((self.given_p_true >= 0) & (self.given_p_true <= 1))
        ):
            raise CalibError(f"bundle: given_p_true must hold {n} probabilities in [0, 1], one per question")
        self.wrap_prompt = wrap_prompt or (lambda prompt: prompt)
        self.progress = progress  # bars (rate, ETA) over the long computations, e.g. SAR's token relevance
        self._score_cache: dict[tuple[str, str], np.ndarray] = {}
        self._generate_cache: dict[tuple[str, int], str] = {}
        self._attention_cache: dict[tuple[str, tuple[int, ...], str], np.ndarray] = {}

    @classmethod
    def from_model(
        cls,
        lm: Any,
        greedy: Generations,
        samples: Generations | None = None,
        examples: Sequence[Any] | None = None,
        **options: Any,
    ) -> Bundle:
        """A bundle whose model calls go to `lm` through calib.decode.score / generate (imported when first used)."""

        def score_fn(prompts: list[str], continuations: list[str]) -> list[np.ndarray]:
            from calib.decode import score

            return score(lm, prompts, continuations)

        def generate_fn(prompts: list[str], max_new_tokens: int) -> list[str]:
            from calib.decode import generate

            gens = generate(
                lm, prompts, num_samples=1, max_new_tokens=max_new_tokens, greedy=True, stop=("\n",)
            )
            return [row[0] for row in gens.texts]

        options.setdefault("score_fn", score_fn)
        options.setdefault("generate_fn", generate_fn)

        def distribution_fn(prompts: list[str], token_ids: list[np.ndarray]) -> list[np.ndarray]:
            from calib.decode.score import score_distribution

            return score_distribution(lm, prompts, [[int(t) for t in ids] for ids in token_ids])

        options.setdefault("decode_fn", lambda ids: lm.tokenizer.decode(list(ids)))

        def attention_fn(prompts: list[str], token_ids: list[np.ndarray], suffix: str) -> list[np.ndarray]:
            from calib.estimators.attention import attention_statistics

            return attention_statistics(lm, prompts, token_ids, suffix)

        options.setdefault("distribution_fn", distribution_fn)
        options.setdefault("attention_fn", attention_fn)
        return cls(greedy, samples, examples, **options)

    # ---- what this bundle can provide -------------------------------------------------------------------------
    @property
    def num_questions(self) -> int:
        return self.greedy.num_prompts

    @property
    def num_samples(self) -> int:
        return 0 if self.samples is None else self.samples.num_samples

    def available(self) -> frozenset[Need]:
        """Needs this bundle can satisfy, decided from its inputs without computing anything."""
        needs = {Need.GREEDY}
        if len(self.greedy.token_logprobs) == self.num_questions:
            needs.add(Need.GREEDY_TOKENS)
        if self.num_samples >= 2:
            needs |= {Need.SAMPLES, Need.SEMANTIC}
            if len(self.samples.token_logprobs) == self.num_questions:
                needs.add(Need.SAMPLE_TOKENS)
        if len(self.greedy.hidden) == self.num_questions and self.num_questions:
            needs.add(Need.HIDDEN)
        if self.examples is not None:
            needs.add(Need.QUESTIONS)
        for need, fn in (
            (Need.SCORE, self.score_fn),
            (Need.GENERATE, self.generate_fn),
            (Need.DECODE, self.decode_fn),
            (Need.DISTRIBUTION, self.distribution_fn),
            (Need.ATTENTION, self.attention_fn),
            (Need.P_TRUE, self.score_fn if self.given_p_true is None else True),
        ):
            if fn is not None:
                needs.add(need)
        if len(self.passes) >= 2:
            needs.add(Need.PASSES)
        return frozenset(needs)

    def require(self, need: Need) -> None:
        if need not in self.available():
            raise CalibError(f"bundle lacks {need.label} ({need.description}): {need.fix}")

    # ---- texts and token statistics ---------------------------------------------------------------------------
    @cached_property
    def questions(self) -> list[str]:
        self.require(Need.QUESTIONS)
        return [str(ex.question) for ex in self.examples]

    @property
    def contexts(self) -> list[str]:
        """What answers are about: the question texts when examples were given, else the prompts."""
        return self.questions if self.examples is not None else list(self.greedy.prompts)

    @cached_property
    def greedy_texts(self) -> list[str]:
        return [row[0] for row in self.greedy.texts]

    @cached_property
    def greedy_logprobs(self) -> list[np.ndarray]:
        self.require(Need.GREEDY_TOKENS)
        return [np.asarray(row[0], dtype=np.float64) for row in self.greedy.token_logprobs]

    @cached_property
    def greedy_entropies(self) -> list[np.ndarray]:
        self.require(Need.GREEDY_TOKENS)
        return [np.asarray(row[0], dtype=np.float64) for row in self.greedy.token_entropies]

    @cached_property
    def greedy_distribution(self) -> list[np.ndarray]:
        """[i] float64 [T, 5] whole-distribution statistics at each greedy-answer token (columns
        calib.decode.sampling.DISTRIBUTION_COLUMNS); an empty answer gives [0, 5]. One teacher-forced pass."""
        self.require(Need.DISTRIBUTION)
        return self._per_greedy_answer(self.distribution_fn, "distribution_fn", np.zeros((0, 5)))

    @property
    def greedy_attention(self) -> list[np.ndarray | None]:
        """[i] float64 [L, H, 2, P + T] attention diagonal and last row over prompt + greedy answer (None for an
        empty answer). One teacher-forced pass per answer, shared by every estimator that asks."""
        ids = [row[0] for row in self.greedy.token_ids]
        return self.attention(list(self.greedy.prompts), ids)

    def attention(
        self, prompts: Sequence[str], token_ids: Sequence[np.ndarray], suffix: str = ""
    ) -> list[np.ndarray | None]:
        """attention_fn over (prompt, answer ids, suffix), each distinct triple once; None for an empty answer."""
        self.require(Need.ATTENTION)
        keys = [(p, tuple(int(t) for t in ids), suffix) for p, ids in zip(prompts, token_ids)]
        missing = list(dict.fromkeys(k for k in keys if k not in self._attention_cache and k[1]))
        if missing:
            stats = self.attention_fn([k[0] for k in missing], [np.asarray(k[1]) for k in missing], suffix)
            if len(stats) != len(missing):
                raise CalibError(f"attention_fn returned {len(stats)} results for {len(missing)} answers")
            self._attention_cache.update(zip(missing, (np.asarray(s, dtype=np.float64) for s in stats)))
        return [self._attention_cache[k] if k[1] else None for k in keys]

    def _per_greedy_answer(self, fn: DistributionFn, name: str, empty: Any) -> list[Any]:
        """fn over the non-empty greedy answers (prompt, token ids), `empty` for the others."""
        ids = [np.asarray(row[0]) for row in self.greedy.token_ids]
        scored = [i for i, t in enumerate(ids) if len(t)]
        out = [empty] * len(ids)
        if scored:
            stats = fn([self.greedy.prompts[i] for i in scored], [ids[i] for i in scored])
            if len(stats) != len(scored):
                raise CalibError(f"{name} returned {len(stats)} results for {len(scored)} answers")
            for i, s in zip(scored, stats):
                out[i] = np.asarray(s, dtype=np.float64)
        return out

    @cached_property
    def sample_texts(self) -> list[list[str]]:
        self.require(Need.SAMPLES)
        return [list(row) for row in self.samples.texts]

    @cached_property
    def sample_logprobs(self) -> list[list[np.ndarray]]:
        self.require(Need.SAMPLE_TOKENS)
        return [[np.asarray(lp, dtype=np.float64) for lp in row] for row in self.samples.token_logprobs]

    # ---- semantic statistics (greedy answer at index 0, samples at 1..K) --------------------------------------
    @cached_property
    def comparisons(self) -> list[Comparison]:
        """Backend judgement over [greedy answer, sample 1, ..., sample K] per question, computed in one batch."""
        self.require(Need.SEMANTIC)
        groups = [[g, *s] for g, s in zip(self.greedy_texts, self.sample_texts)]
        comparisons = self.semantic.compare(self.contexts, groups)
        name = getattr(self.semantic, "name", type(self.semantic).__name__)
        if len(comparisons) != len(groups):
            raise CalibError(
                f"semantic backend {name!r} returned {len(comparisons)} comparisons for {len(groups)}"
            )
        for c, group in zip(comparisons, groups):
            m = len(group)
            sim = c.similarity
            if sim.shape != (m, m) or c.equivalent.shape != (m, m):
                raise CalibError(f"semantic backend {name!r} returned a {sim.shape} matrix for {m} answers")
            if not (
                np.all((sim >= 0) & (sim <= 1))
                and np.allclose(np.diag(sim), 1)
                and np.diag(c.equivalent).all()
            ):
                raise CalibError(
                    f"semantic backend {name!r} must return similarities in [0, 1] with a diagonal of 1 "
                    "(an answer is equivalent to itself)"
                )
        return comparisons

    @cached_property
    def answer_similarity(self) -> np.ndarray:
        """[N, K+1, K+1] directional similarity, greedy answer first."""
        return np.stack([c.similarity for c in self.comparisons]).astype(np.float64)

    @cached_property
    def answer_equivalent(self) -> np.ndarray:
        """[N, K+1, K+1] boolean equivalence, greedy answer first."""
        return np.stack([c.equivalent for c in self.comparisons])

    @property
    def sample_similarity(self) -> np.ndarray:
        """[N, K, K] directional similarity a(s_i, s_j) among the samples."""
        return self.answer_similarity[:, 1:, 1:]

    @property
    def sample_equivalent(self) -> np.ndarray:
        return self.answer_equivalent[:, 1:, 1:]

    @property
    def greedy_equivalent(self) -> np.ndarray:
        """[N, K]: is sample k equivalent to the greedy answer."""
        return self.answer_equivalent[:, 0, 1:]

    @cached_property
    def clusters(self) -> np.ndarray:
        """[N, K] semantic cluster id of each sample (0, 1, ... in order of first appearance)."""
        return cluster_batch(self.sample_equivalent, method=self.clustering)

    @cached_property
    def num_clusters(self) -> np.ndarray:
        return self.clusters.max(axis=1) + 1

    @cached_property
    def greedy_cluster(self) -> np.ndarray:
        """[N] the sample cluster the greedy answer belongs to, -1 if it matches none.

        Greedy clustering: the first cluster whose representative it is equivalent to (as if it were one more
        sample that may not open a cluster). Components: the cluster of any sample it is equivalent to.
        """
        out = np.full(self.num_questions, -1, dtype=np.int64)
        for i, labels in enumerate(self.clusters):
            members = representatives(labels) if self.clustering == "greedy" else np.arange(len(labels))
            hits = members[self.greedy_equivalent[i, members]]
            if hits.size:
                out[i] = labels[hits[0]]
        return out

    # ---- token relevance (SAR) ------------------------------------------------------------------------------
    @cached_property
    def greedy_token_relevance(self) -> list[np.ndarray]:
        """[i] relevance of each greedy-answer token, 1 - sim(context + answer, context + answer without it)."""
        self.require(Need.DECODE)
        return self._token_relevance([[row[0]] for row in self.greedy.token_ids])[:, 0].tolist()

    @cached_property
    def sample_token_relevance(self) -> list[list[np.ndarray]]:
        """[i][k] relevance of each token of each sample."""
        self.require(Need.SAMPLES)
        self.require(Need.DECODE)
        return self._token_relevance(self.samples.token_ids).tolist()

    def _token_relevance(self, token_ids: list[list[np.ndarray]]) -> np.ndarray:
        """Object array [N, K] of relevance vectors; each distinct (context, ids) is scored once, in chunks of
        about RELEVANCE_CHUNK pairs (whole answers) so long answers show progress."""
        plans: dict[tuple[str, tuple[int, ...]], tuple[int, int]] = {}
        first, second = [], []
        for context, row in zip(self.contexts, token_ids):
            for ids in row:
                key = (context, tuple(int(t) for t in ids))
                if key in plans:
                    continue
                plans[key] = (len(first), len(key[1]))
                full = f"{context} {self.decode_fn(key[1])}"
                for t in range(len(key[1])):
                    first.append(full)
                    second.append(f"{context} {self.decode_fn(key[1][:t] + key[1][t + 1 :])}")
        bounds = [0]
        for start, length in plans.values():  # chunk on answer boundaries: an answer's pairs share one text
            if start + length - bounds[-1] > RELEVANCE_CHUNK and start > bounds[-1]:
                bounds.append(start)
        bounds.append(len(first))
        chunks = list(pairwise(bounds))
        bar = progress_bar(
            chunks,
            f"token relevance ({len(first)} pairs)",
            enabled=self.progress and len(chunks) > 1,
            unit="chunk",
        )
        parts = [self.semantic.pair_similarity(first[a:b], second[a:b]) for a, b in bar if b > a]
        similarity = (
            np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]) if parts else np.zeros(0)
        )
        out = np.empty((len(token_ids), len(token_ids[0]) if token_ids else 0), dtype=object)
        for i, (context, row) in enumerate(zip(self.contexts, token_ids)):
            for k, ids in enumerate(row):
                start, length = plans[(context, tuple(int(t) for t in ids))]
                out[i, k] = 1.0 - np.asarray(similarity[start : start + length], dtype=np.float64)
        return out

    # ---- what a store keeps between runs ----------------------------------------------------------------------
    def shared_statistics(self) -> dict[str, Any]:
        """The SHARED statistics computed (or filled in) so far, by name."""
        return {name: self.__dict__[name] for name in SHARED if name in self.__dict__}

    def fill_shared_statistics(self, **values: Any) -> None:
        """Use stored statistics instead of computing them (the caller vouches they come from the same inputs)."""
        unknown = sorted(set(values) - set(SHARED))
        if unknown:
            raise CalibError(f"bundle: {unknown} are not shared statistics; use some of {list(SHARED)}")
        self.__dict__.update(values)

    def cached_calls(self) -> tuple[dict[tuple[str, str], np.ndarray], dict[tuple[str, int], str]]:
        """The model calls made (or filled in) so far: {(prompt, continuation): log-probs}, {(prompt, n): text}."""
        return dict(self._score_cache), dict(self._generate_cache)

    def fill_cached_calls(
        self,
        score: dict[tuple[str, str], np.ndarray] | None = None,
        generate: dict[tuple[str, int], str] | None = None,
    ) -> None:
        """Answer these calls from a store instead of the model (same model, dtype and code)."""
        self._score_cache.update({k: np.asarray(v, dtype=np.float64) for k, v in (score or {}).items()})
        self._generate_cache.update(generate or {})

    # ---- cached model calls -----------------------------------------------------------------------------------
    def score(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[np.ndarray]:
        """Per-token log-probs of each continuation; every (prompt, continuation) pair is scored at most once."""
        self.require(Need.SCORE)
        keys = list(zip(prompts, continuations))
        missing = list(dict.fromkeys(k for k in keys if k not in self._score_cache))
        if missing:
            scores = self.score_fn([p for p, _ in missing], [c for _, c in missing])
            if len(scores) != len(missing):
                raise CalibError(f"score_fn returned {len(scores)} results for {len(missing)} continuations")
            self._score_cache.update(zip(missing, (np.asarray(s, dtype=np.float64) for s in scores)))
        return [self._score_cache[k] for k in keys]

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        """One greedy continuation per prompt; every prompt is generated at most once."""
        self.require(Need.GENERATE)
        keys = [(p, max_new_tokens) for p in prompts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._generate_cache))
        if missing:
            texts = self.generate_fn([p for p, _ in missing], max_new_tokens)
            if len(texts) != len(missing):
                raise CalibError(f"generate_fn returned {len(texts)} texts for {len(missing)} prompts")
            self._generate_cache.update(zip(missing, texts))
        return [self._generate_cache[k] for k in keys]
