"""Safetensors files read one tensor at a time: the header checked against the file size first, then each tensor
read into its own buffer in the file's dtype. Not memory-mapped on purpose: the pages of a mapped file that a
reader touches stay in the process's resident set until unmapped, so mapping a whole shard holds the source model
in host RSS beside the converted one; a plain read keeps host memory near one tensor plus the loaded model."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import ml_dtypes
import numpy as np

from calib.errors import CalibError

_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("<u1"),
    "I8": np.dtype("<i1"),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
    "F64": np.dtype("<f8"),
}
_MAX_HEADER = 100_000_000  # the safetensors library's own limit


def safetensors_header(file: str) -> dict[str, dict]:
    """The tensor table of a safetensors file ({name: {dtype, shape, data_offsets}}), checked against the file's
    size before any tensor is read, so a damaged or foreign file is one line naming it."""

    def bad(what: str) -> CalibError:
        return CalibError(
            f"{file} is not a valid safetensors file ({what}); re-download it or re-save the model with "
            "save_pretrained(safe_serialization=True)"
        )

    try:
        size = os.path.getsize(file)
        with open(file, "rb") as f:
            prefix = f.read(8)
            n = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 2 <= n <= min(size - 8, _MAX_HEADER):
                raise bad(f"header length {n} does not fit a file of {size} bytes")
            raw = f.read(n)
    except OSError as err:
        raise CalibError(f"cannot read {file}: {err.strerror or err}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise bad("its header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data_bytes = size - 8 - n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise bad("__metadata__ is not a string-to-string map")
            continue
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r} has no dtype/shape/data_offsets entry")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        ints = lambda v: isinstance(v, list) and all(type(x) is int and x >= 0 for x in v)  # noqa: E731
        if not ints(shape):
            raise bad(f"tensor {name!r} has shape {shape!r}")
        if not ints(offsets) or len(offsets) != 2 or not offsets[0] <= offsets[1] <= data_bytes:
            raise bad(f"tensor {name!r} has data_offsets {offsets!r} outside the {data_bytes} data bytes")
        if offsets[1] - offsets[0] != int(np.prod(shape, dtype=object)) * _DTYPES[dtype].itemsize:
            raise bad(f"tensor {name!r} of shape {shape} and dtype {dtype} does not match its data_offsets")
        tensors[name] = info
    return tensors


def read_safetensors(files: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of every tensor of the files, largest first (a loader that converts and keeps each tensor
    then peaks while little else is loaded). Every header is checked before this returns."""
    entries = []
    for file in files:
        tensors = safetensors_header(file)
        start = _data_start(file)
        for name, info in tensors.items():
            first, last = info["data_offsets"]
            entries.append((last - first, file, start + first, name, info))
    entries.sort(key=lambda e: (-e[0], e[1], e[3]))
    return _read(entries)


def _data_start(file: str) -> int:
    with open(file, "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")  # checked by safetensors_header


def _read(entries: list) -> Iterator[tuple[str, np.ndarray]]:
    for size, file, offset, name, info in entries:
        buffer = np.empty(size, np.uint8)
        try:
            with open(file, "rb") as f:
                f.seek(offset)
                got = f.readinto(buffer)
        except OSError as err:
            raise CalibError(f"cannot read {file}: {err.strerror or err}") from None
        if got != size:
            raise CalibError(f"{file} ended inside tensor {name!r} (truncated file); re-download it")
        yield name, buffer.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


class SafetensorsWriter:
    """Write a safetensors file one tensor at a time: the header is laid out up front from the (name, dtype, shape)
    of every tensor, then each array is appended as it arrives, so the writer never holds more than the one array it
    is given (safetensors' save_file needs the whole dict and serialises it into one more buffer)."""

    def __init__(self, file: str | os.PathLike, specs: list[tuple[str, np.dtype, tuple[int, ...]]]):
        names = {dtype: name for name, dtype in _DTYPES.items()}
        header, offset = {}, 0
        for name, dtype, shape in specs:
            size = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            header[name] = {
                "dtype": names[np.dtype(dtype)],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as the safetensors library writes it
        self.pending = list(specs)
        self.file = open(file, "wb")  # noqa: SIM115 (closed by close(), also on error)
        self.file.write(len(raw).to_bytes(8, "little") + raw)

    def write(self, name: str, array: np.ndarray) -> None:
        """Append the next tensor; it must be the next one of the specs, in dtype and shape."""
        expected = self.pending.pop(0) if self.pending else None
        if expected is None or (expected[0], np.dtype(expected[1]), tuple(expected[2])) != (
            name,
            array.dtype,
            tuple(array.shape),
        ):
            raise ValueError(f"tensor {name} {array.dtype}{tuple(array.shape)} is not the next of {expected}")
        self.file.write(np.ascontiguousarray(array).data)

    def close(self) -> None:
        """Close the file; every tensor of the specs must have been written."""
        self.file.close()
        if self.pending:
            raise ValueError(f"{len(self.pending)} tensors were never written, e.g. {self.pending[0][0]}")

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.file.close()
