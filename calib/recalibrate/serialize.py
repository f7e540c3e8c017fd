"""Save and load any recalibrator as a small JSON or safetensors file; reloads give bit-identical outputs.

JSON keeps float64 values exactly (Python writes the shortest repr that reads back to the same double);
safetensors keeps the arrays as raw little-endian tensors with kind and params in its string metadata. No
pickles, so a calibrator file from someone else is safe to load. Writes are atomic (temp file, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from calib.cache import atomic_write_bytes
from calib.errors import CalibError, WriteError
from calib.recalibrate.base import RecalibrationModel, model_class

FORMAT = "calib.recalibrator"
VERSION = 1
_DTYPES = ("float64", "int64")


def to_dict(cal: RecalibrationModel) -> dict[str, Any]:
    """A JSON-ready dict of the calibrator's kind, params and arrays."""
    arrays = {}
    for name, arr in cal.arrays().items():
        arr = np.asarray(arr)
        if arr.dtype.name not in _DTYPES:
            raise CalibError(
                f"{cal.kind} array {name!r} has dtype {arr.dtype}; calibrators store float64 or int64"
            )
        arrays[name] = {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": arr.reshape(-1).tolist()}
    return {"format": FORMAT, "version": VERSION, "kind": cal.kind, "params": cal.params(), "arrays": arrays}


def _header(d: Any, where: str) -> tuple[type[RecalibrationModel], dict[str, Any]]:
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CalibError(
            f"{where} is not a calib calibrator file (no format {FORMAT!r}); pass a file save() wrote"
        )
    version = d.get("version")
    if type(version) is not int or version != VERSION:
        raise CalibError(
            f"{where} has calibrator format version {str(version)[:20]!r}; this calib reads {VERSION}"
        )
    params = d.get("params")
    if not isinstance(params, dict):
        raise CalibError(f"{where} has no params object; the file is damaged, refit and save again")
    kind = d.get("kind")
    if not isinstance(kind, str):
        raise CalibError(
            f"{where} has no calibrator kind (field 'kind'); the file is damaged, refit and save again"
        )
    return model_class(kind[:100]), params


def _build(
    cls: type[RecalibrationModel], params: dict[str, Any], arrays: dict[str, np.ndarray], where: str
) -> RecalibrationModel:
    try:
        return cls.from_parts(params, arrays)
    except CalibError as err:
        raise CalibError(f"{where}: bad {cls.kind} calibrator: {err}; refit and save again") from err
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as err:
        raise CalibError(
            f"{where} holds a {cls.kind} calibrator with bad fields ({str(err)[:200]}); refit and save again"
        ) from err


def _json_array(name: str, spec: Any) -> np.ndarray:
    """One {dtype, shape, data} entry of to_dict's arrays, strictly: JSON numbers of the stated dtype only."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data"}:
        raise ValueError(f"array {name!r} is not an object with dtype, shape and data")
    dtype, shape, data = spec["dtype"], spec["shape"], spec["data"]
    if dtype not in _DTYPES:
        raise ValueError(f"array {name!r} has dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or any(type(n) is not int or n < 0 for n in shape) or len(shape) > 8:
        raise ValueError(f"array {name!r} has shape {str(shape)[:40]}, not a list of sizes")
    if not isinstance(data, list) or len(data) != int(np.prod(shape, dtype=object)):
        raise ValueError(
            f"array {name!r} has {len(data) if isinstance(data, list) else 'no'} values for shape {shape}"
        )
    allowed = (int,) if dtype == "int64" else (int, float)
    if any(type(v) not in allowed for v in data):
        bad = next(v for v in data if type(v) not in allowed)
        raise ValueError(f"array {name!r} holds {str(bad)[:20]!r} ({type(bad).__name__}), not {dtype} values")
    return np.asarray(data, dtype=dtype).reshape(shape)


def from_dict(d: Any, where: str = "calibrator state") -> RecalibrationModel:
    """Rebuild a calibrator from to_dict's output; every field is checked, a bad one is a CalibError naming it."""
    cls, params = _header(d, where)
    raw = d.get("arrays", {})
    if not isinstance(raw, dict):
        raise CalibError(f"{where} has a damaged array (arrays is not an object); refit and save again")
    arrays = {}
    try:
        for name, spec in raw.items():
            arrays[name] = _json_array(str(name)[:40], spec)
    except (TypeError, ValueError, OverflowError) as err:
        raise CalibError(f"{where} has a damaged array ({err}); refit and save again") from err
    return _build(cls, params, arrays, where)


def _format_of(path: Path) -> str:
    if path.suffix == ".json":
        return "json"
    if path.suffix == ".safetensors":
        return "safetensors"
    raise CalibError(
        f"{path}: unknown calibrator file type {path.suffix!r}; use a .json or .safetensors name"
    )


def save_calibrator(cal: RecalibrationModel, path: str | os.PathLike) -> Path:
    """Write the calibrator to `path` (.json or .safetensors); returns the path."""
    path = Path(path)
    fmt = _format_of(path)
    d = to_dict(cal)
    if fmt == "json":
        data = json.dumps(d, allow_nan=False, indent=1).encode()
    else:
        from safetensors.numpy import save

        meta = {
            "format": FORMAT,
            "version": str(VERSION),
            "kind": cal.kind,
            "params": json.dumps(d["params"]),
        }
        tensors = {k: np.ascontiguousarray(v) for k, v in cal.arrays().items()}
        data = save(tensors, metadata=meta)
    try:
        atomic_write_bytes(path, data)  # temp name in the same folder, then rename: never half-written
    except WriteError as err:
        raise CalibError(f"{err}; choose a writable folder and file name") from err
    return path


def load_calibrator(path: str | os.PathLike) -> RecalibrationModel:
    """Read a calibrator written by save_calibrator (kind taken from the file)."""
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise CalibError(f"{path}: no such calibrator file; check the path or save one first")
    if fmt == "json":
        try:
            text = path.read_bytes()
        except OSError as err:
            raise CalibError(
                f"cannot read {path}: {err.strerror or err}; check the file's permissions"
            ) from err
        try:
            d = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
            raise CalibError(
                f"{path}: not valid JSON ({str(err)[:200]}); the file is damaged, refit and save again"
            ) from err
        return from_dict(d, str(path))
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "np") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, ValueError, OSError) as err:
        raise CalibError(f"{path}: not a readable safetensors file ({err}); refit and save again") from err
    try:
        meta["version"] = int(meta.get("version", "0"))
        meta["params"] = json.loads(meta.get("params", "null"))
    except (ValueError, RecursionError) as err:
        raise CalibError(f"{path}: damaged calibrator metadata ({err}); refit and save again") from err
    cls, params = _header(meta, str(path))
    return _build(cls, params, {k: np.asarray(v) for k, v in tensors.items()}, str(path))
