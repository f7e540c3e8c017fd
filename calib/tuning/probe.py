"""Probes: logistic and small-MLP classifiers from an answer's hidden state to P(answer is correct).

Trained with optax AdamW (weight decay) on standardised features, full batch, with early stopping on a validation
split: the parameters of the epoch with the lowest validation loss are kept. `fit_probe_search` trains one probe per
(layer, token) candidate and keeps the one with the lowest validation loss, which is how the default layer and token
are chosen. A probe is saved as safetensors (weights, feature mean and scale) plus JSON (kind, layer, token, model);
nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from calib.errors import CalibError

KINDS = ("logistic", "mlp")
TOKENS = ("mean", "last")  # index 0 / 1 of forward.answer_states' third axis


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    kind: str = "logistic"
    hidden: int = 64  # MLP width
    learning_rate: float = 1e-2
    weight_decay: float = 1e-2
    max_epochs: int = 500
    patience: int = 30  # epochs without a better validation loss before stopping
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CalibError(f"probe.kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise CalibError(f"probe.val_fraction must lie in (0, 1), got {self.val_fraction!r}")


@dataclasses.dataclass
class Probe:
    """A fitted probe: params plus the standardisation it was trained with."""

    kind: str
    params: dict[str, np.ndarray]
    mean: np.ndarray
    scale: np.ndarray
    info: dict

    def logits(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float32) - self.mean) / self.scale
        return np.asarray(
            _logits(self.kind, {k: jnp.asarray(v) for k, v in self.params.items()}, jnp.asarray(z))
        )

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.logits(x).astype(np.float64)))

    def save(self, folder: str | Path) -> None:
        """probe.safetensors (params, mean, scale) and probe.json (kind and everything in info)."""
        from calib.pipeline.store import write_arrays

        folder = Path(folder)
        arrays = {f"param.{k}": v for k, v in self.params.items()}
        write_arrays(folder / "probe.safetensors", {**arrays, "mean": self.mean, "scale": self.scale})
        (folder / "probe.json").write_text(
            json.dumps({"kind": self.kind, **self.info}, sort_keys=True, indent=1)
        )

    @classmethod
    def load(cls, folder: str | Path) -> Probe:
        from calib.pipeline.store import read_arrays

        folder = Path(folder)
        if not (folder / "probe.json").is_file() or not (folder / "probe.safetensors").is_file():
            raise CalibError(f"probe: no probe.json and probe.safetensors in {folder}; train one first")
        info = json.loads((folder / "probe.json").read_text())
        arrays = read_arrays(folder / "probe.safetensors")
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param.")}
        kind = info.pop("kind")
        return cls(kind, params, arrays["mean"], arrays["scale"], info)


def _logits(kind: str, params: dict, x: jax.Array) -> jax.Array:
    if kind == "logistic":
        return x @ params["w"] + params["b"]
    h = jax.nn.gelu(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _init(kind: str, dim: int, hidden: int, key: jax.Array) -> dict[str, jax.Array]:
    if kind == "logistic":
        return {"w": jnp.zeros((dim,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (dim, hidden), jnp.float32) * dim**-0.5,
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w2": jax.random.normal(k2, (hidden,), jnp.float32) * hidden**-0.5,
        "b2": jnp.zeros((), jnp.float32),
    }


def validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded permutation, at least one example on each side."""
    if n < 2:
        raise CalibError(f"probe: {n} labelled examples; a probe needs at least 2 (one to validate on)")
    perm = np.asarray(jax.random.permutation(jax.random.key(seed), n))
    n_val = min(max(1, round(fraction * n)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fit_probe(
    x: np.ndarray, y: np.ndarray, cfg: ProbeConfig = ProbeConfig(), info: dict | None = None
) -> Probe:
    """Fit on a seeded (1 - val_fraction) share and stop early on the rest; the best-validation params are kept."""
    x = np.asarray(x, np.float32)
    y = np.asarray(y, np.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise CalibError(f"probe: features must be [N, D] and labels [N], got {x.shape} and {y.shape}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise CalibError("probe: labels must be 0 or 1 (correct / wrong)")
    train, val = validation_split(len(y), cfg.val_fraction, cfg.seed)
    mean = x[train].mean(0)
    scale = x[train].std(0) + 1e-6
    z = jnp.asarray((x - mean) / scale)
    yt, yv = jnp.asarray(y[train]), jnp.asarray(y[val])
    params = _init(cfg.kind, x.shape[1], cfg.hidden, jax.random.key(cfg.seed))
    optimizer = optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay)

    def loss(p, rows, target):
        return jnp.mean(optax.sigmoid_binary_cross_entropy(_logits(cfg.kind, p, z[rows]), target))

    @jax.jit
    def step(p, opt):
        value, grads = jax.value_and_grad(loss)(p, train, yt)
        updates, opt = optimizer.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt, value, loss(p, val, yv)

    opt = optimizer.init(params)
    best, best_params, best_epoch, since = np.inf, params, 0, 0
    for epoch in range(cfg.max_epochs):
        new, opt, _, val_loss = step(params, opt)  # val_loss is of `params`, before this update
        if float(val_loss) < best - 1e-7:
            best, best_params, best_epoch, since = float(val_loss), params, epoch, 0
        else:
            since += 1
            if since >= cfg.patience:
                break
        params = new
    record = {
        **(info or {}),
        "val_loss": best,
        "best_epoch": best_epoch,
        "train_size": len(train),
        "val_size": len(val),
        "config": dataclasses.asdict(cfg),
    }
    return Probe(cfg.kind, {k: np.asarray(v) for k, v in best_params.items()}, mean, scale, record)


def fit_probe_search(
    states: np.ndarray,
    y: np.ndarray,
    layers: Sequence[int],
    cfg: ProbeConfig = ProbeConfig(),
    info: dict | None = None,
) -> Probe:
    """One probe per (layer, token) of states [N, len(layers), 2, D]; the lowest validation loss wins."""
    best = None
    scores = {}
    for li, layer in enumerate(layers):
        for ti, token in enumerate(TOKENS):
            probe = fit_probe(
                states[:, li, ti], y, cfg, {**(info or {}), "layer": int(layer), "token": token}
            )
            scores[f"{layer}/{token}"] = probe.info["val_loss"]
            if best is None or probe.info["val_loss"] < best.info["val_loss"]:
                best = probe
    best.info["search"] = scores
    return best
