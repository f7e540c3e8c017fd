"""Reading a GGUF file safely: the header walked with bounds checks, then gguf.GGUFReader, and typed metadata."""

from __future__ import annotations

import os

from calib.errors import CalibError

_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType -> size
_STRING, _ARRAY = 8, 9
REQUIRED = object()


class _Header:
    """A bounds-checked cursor over a GGUF header. gguf.GGUFReader reads past the end of a file as empty arrays, so
    an array whose length field is damaged makes it loop (nearly) forever; this walk refuses such a file first."""

    def __init__(self, buf, path: str):
        self.buf, self.path, self.pos, self.order = buf, path, 0, "<"

    def bad(self, what: str) -> CalibError:
        return CalibError(
            f"cannot read GGUF file {self.path}: {what} at byte {self.pos} (the file is corrupt or truncated; "
            "re-download or re-convert it)"
        )

    def take(self, n: int) -> int:
        if n > len(self.buf) - self.pos:
            raise self.bad(f"{n} more bytes needed but the file ends at byte {len(self.buf)}")
        start, self.pos = self.pos, self.pos + n
        return start

    def uint(self, size: int) -> int:
        start = self.take(size)
        return int.from_bytes(self.buf[start : self.pos], "little" if self.order == "<" else "big")

    def text(self, what: str) -> str:
        n = self.uint(8)
        start = self.take(n)
        try:
            return bytes(self.buf[start : self.pos]).decode("utf-8")
        except UnicodeDecodeError:
            raise self.bad(f"{what} is not UTF-8") from None

    def value(self, kind: int, key: str, depth: int = 0) -> None:
        if kind in _SCALAR_BYTES:
            self.take(_SCALAR_BYTES[kind])
        elif kind == _STRING:
            self.text(f"the value of {key}")
        elif kind == _ARRAY and depth < 4:
            item, count = self.uint(4), self.uint(8)
            least = _SCALAR_BYTES.get(item, 8 if item == _STRING else 12)
            if count * least > len(self.buf) - self.pos:
                raise self.bad(f"array {key} claims {count} items, more than the file holds")
            if item in _SCALAR_BYTES:
                self.take(count * least)
            else:
                for _ in range(count):
                    self.value(item, key, depth + 1)
        else:
            raise self.bad(f"metadata {key} has unknown value type {kind}")

    def walk(self) -> None:
        """Magic, version, every key/value and every tensor description, each inside the file."""
        if bytes(self.buf[:4]) != b"GGUF":
            raise self.bad("no GGUF magic (this is not a GGUF file)")
        self.pos = 4
        version = self.uint(4)
        if version & 0xFFFF == 0:  # written on a big-endian machine, as gguf.GGUFReader detects it
            self.order, self.pos = ">", 4
            version = self.uint(4)
        if version not in (2, 3):
            raise self.bad(f"GGUF version {version} (calib reads versions 2 and 3)")
        tensors, keys = self.uint(8), self.uint(8)
        if keys * 13 + tensors * 24 > len(self.buf) - self.pos:
            raise self.bad(f"{keys} metadata keys and {tensors} tensors claimed, more than the file holds")
        for _ in range(keys):
            key = self.text("a metadata key")
            self.value(self.uint(4), key)
        for _ in range(tensors):
            name = self.text("a tensor name")
            dims = self.uint(4)
            if dims > 4:
                raise self.bad(f"tensor {name} has {dims} dimensions (GGUF allows at most 4)")
            self.take(8 * dims + 4 + 8)


def check_gguf_header(path: str) -> None:
    """Walk the header with bounds checks before gguf.GGUFReader sees the file (see _Header)."""
    import mmap

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < 24:
                raise CalibError(
                    f"cannot read GGUF file {path}: only {os.fstat(f.fileno()).st_size} bytes, too short for a "
                    "GGUF header (the file is corrupt or truncated; re-download it)"
                )
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                _Header(buf, path).walk()
    except OSError as err:
        raise CalibError(f"cannot read GGUF file {path}: {err.strerror or err}") from None


def open_gguf(path: str):
    """Open a GGUF file or raise one clear line naming it."""
    import gguf

    if not os.path.isfile(path):
        raise CalibError(
            f"GGUF file not found: {path} (check the path; built-in models install with `make setup`)"
        )
    check_gguf_header(path)
    try:
        return gguf.GGUFReader(path)
    except Exception as err:  # the reader raises ValueError, KeyError, struct errors... on truncated files
        raise CalibError(
            f"cannot read GGUF file {path}: {type(err).__name__}: {err} (the file is corrupt or truncated; re-download it)"
        ) from None


def field_value(reader, key: str, default=None):
    """A scalar, string or array metadata value of a GGUF file."""
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception as err:  # e.g. a string value that is not UTF-8
        raise CalibError(
            f"GGUF file metadata {key} is unreadable ({type(err).__name__}: {err}); the file is corrupt, "
            "re-download or re-convert it"
        ) from None


def meta_value(reader, path: str, key: str, kind: str, default=REQUIRED):
    """A metadata value checked against its kind: "count" (integer >= 1), "id" (integer >= 0) or "number" (> 0)."""
    value = field_value(reader, key)
    if value is None:
        if default is REQUIRED:
            raise CalibError(
                f"GGUF file {path} lacks metadata key {key} (incomplete conversion; re-convert it)"
            )
        return default
    integer = not isinstance(value, bool) and isinstance(value, int)
    ok = {
        "count": integer and value >= 1,
        "id": integer and value >= 0,
        "number": not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < float("inf"),
    }[kind]
    if not ok:
        want = {
            "count": "a positive integer",
            "id": "a token id (integer >= 0)",
            "number": "a positive number",
        }
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CalibError(
            f"GGUF file {path}: metadata {key} is {shown}, expected {want[kind]} (corrupt or foreign file; "
            "re-convert it)"
        )
    return value
