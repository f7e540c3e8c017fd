"""The temperature sweep table: accuracy, ECE, Brier, AUROC and Full-ECE at each T, with bootstrap intervals.

A decoding temperature changes what the model says, so accuracy moves with calibration; a post-hoc temperature
only re-tempers stored log-probs, so accuracy stays fixed. `temperature_sweep` takes one SweepPoint per T from
either mode (the experiment preset produces them) and lays both sides of the trade out in one table and plot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from calib.errors import CalibError
from calib.recalibrate import _checks

METRICS = ("accuracy", "ece", "brier", "auroc")


@dataclass
class SweepPoint:
    """What one temperature produced: a confidence and a 0/1 grade per question, plus optional token-level stats."""

    confidence: Any
    correct: Any
    full_ece: float | None = (
        None  # token-level Full-ECE at this T (e.g. full_ece_by_temperature or FullECEStats)
    )
    generated_tokens: int | None = None  # compute spent (decoding mode)


@dataclass
class SweepRow:
    """One T: each metric as (point, low, high)."""

    temperature: float
    n: int
    accuracy: tuple[float, float, float]
    ece: tuple[float, float, float]
    brier: tuple[float, float, float]
    auroc: tuple[float, float, float]
    full_ece: float | None
    generated_tokens: int | None


def _accuracy(confidence: Any, correct: Any) -> Any:
    """Share of correct answers (confidence unused); jnp so bootstrap_ci can vmap it."""
    return jnp.mean(jnp.asarray(correct, jnp.float32))


def _fmt(v: tuple[float, float, float], digits: int) -> str:
    p, lo, hi = v
    if math.isnan(p):
        return "n/a"
    return f"{p:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


@dataclass
class SweepTable:
    """Rows sorted by temperature; `mode` is "decoding" (re-generated) or "posthoc" (re-tempered log-probs)."""

    rows: list[SweepRow]
    mode: str
    alpha: float
    n_bins: int

    def to_records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]

    def to_markdown(self, digits: int = 3) -> str:
        level = round(100 * (1 - self.alpha))
        head = f"| T | n | accuracy | ECE ({self.n_bins} bins) | Brier | AUROC | Full-ECE |"
        lines = [f"{self.mode} temperature; [{level}% bootstrap interval]", "", head, "|---" * 7 + "|"]
        for r in self.rows:
            fe = "n/a" if r.full_ece is None else f"{r.full_ece:.{digits}f}"
            cells = [_fmt(getattr(r, m), digits) for m in METRICS]
            lines.append(f"| {r.temperature:g} | {r.n} | " + " | ".join(cells) + f" | {fe} |")
        return "\n".join(lines)

    def best(self, metric: str = "ece") -> SweepRow:
        """The row with the lowest ECE/Brier/Full-ECE or the highest accuracy/AUROC."""
        if metric not in (*METRICS, "full_ece"):
            raise CalibError(f"metric: got {metric!r}; choose one of {', '.join((*METRICS, 'full_ece'))}")

        def key(r: SweepRow) -> float:
            v = r.full_ece if metric == "full_ece" else getattr(r, metric)[0]
            return math.nan if v is None else v

        finite = [r for r in self.rows if not math.isnan(key(r))]
        if not finite:
            raise CalibError(f"no temperature has a finite {metric}")
        return (max if metric in ("accuracy", "auroc") else min)(finite, key=key)

    def plot(self, path: str | None = None):
        """Accuracy and ECE against T with their intervals (left), Brier/AUROC (right); saved when path is given."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        t = np.array([r.temperature for r in self.rows])
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, names in zip(axes, (("accuracy", "ece"), ("brier", "auroc"))):
            for name in names:
                v = np.array([getattr(r, name) for r in self.rows], dtype=float)
                ax.plot(t, v[:, 0], marker="o", label=name)
                ax.fill_between(t, v[:, 1], v[:, 2], alpha=0.2)
            ax.set_xlabel(f"{self.mode} temperature T")
            ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig


def temperature_sweep(
    results: Mapping[float, SweepPoint],
    mode: str = "decoding",
    n_bins: int = 15,
    n_resamples: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> SweepTable:
    """One row per temperature; every interval resamples the same questions (same seed) at each T."""
    from calib.metrics import auroc, bootstrap_ci, brier, ece

    if mode not in ("decoding", "posthoc"):
        raise CalibError(f"mode: got {mode!r}; choose 'decoding' or 'posthoc'")
    if not results:
        raise CalibError("temperature_sweep got no results; pass {temperature: SweepPoint(...)} for each T")
    metric_fns: dict[str, Callable] = {
        "accuracy": _accuracy,
        "ece": lambda c, y: ece(c, y, n_bins=n_bins),
        "brier": brier,
        "auroc": auroc,
    }
    rows = []
    for t in sorted(results):
        point = results[t]
        c, y = _checks.pair(point.confidence, point.correct, what=f"sweep point at T={t}")
        values = {}
        for name, fn in metric_fns.items():
            if name == "auroc" and y.min() == y.max():
                values[name] = (math.nan, math.nan, math.nan)  # one class only: AUROC undefined
                continue
            values[name] = tuple(bootstrap_ci(fn, c, y, n_resamples=n_resamples, alpha=alpha, seed=seed))
        fe = point.full_ece
        fe = fe.full_ece() if hasattr(fe, "full_ece") else (None if fe is None else float(fe))
        rows.append(
            SweepRow(
                float(_checks.temperature(t)),
                int(c.size),
                **values,
                full_ece=fe,
                generated_tokens=point.generated_tokens,
            )
        )
    return SweepTable(rows, mode, alpha, n_bins)


def posthoc_points(
    gens: Any,
    correct: Any,
    temperatures: Sequence[float],
    vocab_size: int,
    confidence_fn: Callable[[np.ndarray], float] | None = None,
    tail: str = "uniform",
) -> dict[float, SweepPoint]:
    """SweepPoints from one set of greedy generations re-tempered at each T (answers, hence grades, fixed).

    `confidence_fn` maps an answer's token log-probs to a confidence (default: MSP, exp of their sum); each
    question's first sample is the graded answer.
    """
    from calib.estimators.token_level import sequence_probability
    from calib.recalibrate.retemper import temper_generations

    fn = confidence_fn or sequence_probability
    y = _checks.labels(correct)
    if len(y) != gens.num_prompts:
        raise CalibError(f"correct has {len(y)} grades but the generations have {gens.num_prompts} questions")
    points = {}
    for t in temperatures:
        tempered = temper_generations(gens, t, vocab_size, tail)
        conf = np.array([fn(row[0]) if len(row[0]) else np.nan for row in tempered.token_logprobs])
        keep = np.isfinite(conf)  # an empty answer has no confidence; it is left out, not guessed
        points[float(t)] = SweepPoint(np.clip(conf[keep], 0, 1), y[keep])
    return points
