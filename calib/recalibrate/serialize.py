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
from calib.errors import CalibError
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
    if d.get("version") != VERSION:
        raise CalibError(
            f"{where} has calibrator format version {d.get('version')!r}; this calib reads {VERSION}"
        )
    params = d.get("params")
    if not isinstance(params, dict):
        raise CalibError(f"{where} has no params object; the file is damaged, refit and save again")
    return model_class(str(d.get("kind"))), params


def _build(
    cls: type[RecalibrationModel], params: dict[str, Any], arrays: dict[str, np.ndarray], where: str
) -> RecalibrationModel:
    try:
        return cls.from_parts(params, arrays)
    except CalibError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise CalibError(
            f"{where} holds a {cls.kind} calibrator with bad fields ({err}); refit and save again"
        ) from err


def from_dict(d: Any, where: str = "calibrator state") -> RecalibrationModel:
    """Rebuild a calibrator from to_dict's output."""
    cls, params = _header(d, where)
    arrays = {}
    try:
        for name, spec in (d.get("arrays") or {}).items():
            if spec["dtype"] not in _DTYPES:
                raise ValueError(f"array {name!r} has dtype {spec['dtype']!r}")
            arrays[name] = np.asarray(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
    except (TypeError, ValueError, KeyError, AttributeError) as err:
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
    atomic_write_bytes(path, data)
    return path


def load_calibrator(path: str | os.PathLike) -> RecalibrationModel:
    """Read a calibrator written by save_calibrator (kind taken from the file)."""
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise CalibError(f"{path}: no such calibrator file; check the path or save one first")
    if fmt == "json":
        try:
            d = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise CalibError(
                f"{path}: not valid JSON ({err}); the file is damaged, refit and save again"
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
    except (ValueError, json.JSONDecodeError) as err:
        raise CalibError(f"{path}: damaged calibrator metadata ({err}); refit and save again") from err
    cls, params = _header(meta, str(path))
    return _build(cls, params, {k: np.asarray(v) for k, v in tensors.items()}, str(path))
