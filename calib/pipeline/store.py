"""The artifact store: every stage output lives under `<root>/<stage>/<key>/`, where the key hashes all its inputs.

A key is the sha256 of canonical JSON of (stage, fingerprint of the stage's code, inputs): the stage's own config,
the keys of the artifacts it reads, the model weights' digest. Same inputs -> same key -> the stored result is reused;
any change -> a new key, so a stale result is never read. Each artifact folder is written under a temporary name
and renamed into place whole (calib.cache.atomic_dir), so a process killed at any moment leaves either a complete
artifact or none; `meta.json` inside records the inputs for provenance.

File formats: arrays in safetensors, tables in Parquet (pyarrow), small metadata in JSON; never pickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from calib.cache import atomic_dir, atomic_write_text, writing
from calib.errors import WriteError

log = logging.getLogger("calib")

META = "meta.json"
QUARANTINE = "damaged"  # <root>/damaged/<stage>-<key>-<time>: artifacts that failed to load, set aside


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces); tuples become lists, numpy scalars plain numbers."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, set | frozenset):
            return sorted(obj)
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot hash a {type(obj).__name__} into an artifact key: {obj!r}")

    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=default, ensure_ascii=False)


def content_hash(value: Any) -> str:
    """sha256 hex of a JSON-able value (used for prompts, task contents, configs)."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def artifact_key(stage: str, code: str, inputs: Mapping[str, Any]) -> str:
    """The 20-hex-digit key of a stage's artifact from its code fingerprint (calib.fingerprint) and
    everything else that determines it."""
    return content_hash({"stage": stage, "code": code, "inputs": dict(inputs)})[:20]


class ArtifactStore:
    """Stage outputs addressed by (stage, key); written atomically, read many times."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def has(self, stage: str, key: str) -> bool:
        """True when the artifact is complete (its meta.json is written last, inside the atomic folder)."""
        return (self.path(stage, key) / META).is_file()

    def meta(self, stage: str, key: str) -> dict:
        return json.loads((self.path(stage, key) / META).read_text())

    def load(self, stage: str, key: str, read: Callable[[Path], Any]) -> Any | None:
        """read(folder) of a stored artifact; None when there is none, or when it fails to load: a crash or a full
        disk can leave a file empty or cut short. A damaged artifact is set aside (renamed under `damaged/`, with a
        one-line warning naming it) so the caller recomputes it and no later run trips over it."""
        if not self.has(stage, key):
            return None
        try:
            return read(self.path(stage, key))
        except Exception as err:  # any reader's error: the file is not what was written
            self.set_aside(self.path(stage, key), f"{stage}/{key}", err)
            return None

    def set_aside(self, folder: Path, label: str, err: BaseException) -> Path:
        """Move a damaged artifact (or shard) out of the way, keeping it for inspection, and warn in one line."""
        target = (
            self.root
            / QUARANTINE
            / f"{label.replace('/', '-')}-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(3).hex()}"
        )
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        with writing(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, target)
        log.warning(
            "stored artifact %s could not be read (%s); moved to %s and recomputing", label, reason, target
        )
        return target

    def put(self, stage: str, key: str, write: Callable[[Path], None], meta: Mapping[str, Any]) -> Path:
        """Build the artifact with write(tmp_folder) and rename it into place with its meta.json; all or nothing."""
        final = self.path(stage, key)
        with atomic_dir(final) as tmp:
            write(tmp)
            (tmp / META).write_text(canonical_json({"stage": stage, "key": key, **meta}), encoding="utf-8")
            publish(tmp)
        return final

    def keys(self, stage: str) -> list[str]:
        """Complete artifacts of a stage (temporary folders of interrupted writers are ignored)."""
        folder = self.root / stage
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / META).is_file())


def publish(path: str | os.PathLike) -> None:
    """Give a folder built under a private temporary name (mode 0700/0600) the usual umask permissions, so a store
    on a shared filesystem is readable by the other jobs of a sweep."""
    from calib.cache import current_umask

    mask = current_umask()
    path = Path(path)
    for p in [path, *path.rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


# ---- file helpers (all writes are atomic on their own when used outside `put`) ----------------------------------
def write_json(path: str | os.PathLike, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=1, sort_keys=True, default=str, ensure_ascii=False))
    publish(path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_arrays(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """safetensors file of named numpy arrays (contiguous copies; bool stored as uint8)."""
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    tensors = {
        name: np.ascontiguousarray(a.astype(np.uint8) if a.dtype == bool else a) for name, a in arrays.items()
    }
    try:
        save_file(tensors, str(path))
    except SafetensorError as err:  # an OSError inside Rust (full disk, file size limit) arrives as this
        raise WriteError(path, str(err)) from err


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def write_table(path: str | os.PathLike, table: Any) -> None:
    """A pandas DataFrame as Parquet, written to a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path):
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_table(path: str | os.PathLike) -> Any:
    import pandas as pd

    return pd.read_parquet(path)
