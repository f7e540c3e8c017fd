"""Fuzzing the feedback read paths: any database or calibrator file ends in a result or a CalibError, unchanged.

`calib feedback show/export/transform` (run as Python calls through feedback_cli.run) get random bytes, valid
feedback databases with bytes overwritten or cut off, calibrator JSON files with values replaced by arbitrary JSON,
and safetensors calibrator files with bytes overwritten. Another exception type would be a traceback for the user;
a changed input file would be a read command that writes. Example counts come from the hypothesis profile in conftest.py (300, or 10,000 under CALIB_FUZZ=1).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from calib.errors import CalibError
from calib.feedback_cli import _parser, run
from calib.recalibrate import from_dict, make_calibrator, save_calibrator, to_dict

KINDS = ("online_histogram", "isotonic", "histogram", "platt", "beta")
READS = (
    ["show", "--check", "--last", "3"],
    ["show", "--name", "iso"],
    ["export", "--out", "{dir}/out.json"],
    ["transform", "--name", "iso", "0.1", "0.9"],
    ["transform", "0.5"],
)


PARSER = _parser()  # built once: argparse setup would otherwise be most of an example's time


def read_command(argv: list[str], db: Path | None = None) -> str | None:
    """Run one feedback read command; its printed output, or None when it ended in a CalibError."""
    args = (
        list(argv) if db is None else [a.replace("{dir}", str(db.parent)) for a in argv] + ["--db", str(db)]
    )
    out = io.StringIO()
    try:
        run(PARSER.parse_args(args), out=out)
    except CalibError as err:
        assert "\n" not in str(err)
        event(f"{argv[0]}: CalibError")
        return None
    event(f"{argv[0]}: result")
    return out.getvalue()


@functools.cache
def valid_database() -> bytes:
    """A small calib feedback database (rows, an online_histogram and an isotonic calibrator), as file bytes."""
    from calib.recalibrate import Recalibrator

    rng = np.random.default_rng(0)
    c = rng.random(60)
    y = (rng.random(60) < c).astype(float)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fb.db"
        with Recalibrator(path) as rec:
            rec.update(c, y, questions=[f"question {i}" for i in range(60)], answers=["a"] * 60)
        with Recalibrator(path, name="iso", kind="isotonic") as rec:
            rec.refit()
        return path.read_bytes()  # the last connection closed: everything is checkpointed into the file


def check_database(data: bytes) -> None:
    """Every read command on a database holding `data`: a result or a CalibError, and the bytes unchanged."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "fb.db"
        db.write_bytes(data)
        for argv in READS:
            read_command(argv, db)
            assert db.read_bytes() == data, argv


@pytest.mark.fuzz
@given(st.one_of(st.binary(max_size=2048), st.binary(max_size=2048).map(b"SQLite format 3\x00".__add__)))
def test_random_bytes_as_a_feedback_database(data: bytes) -> None:
    check_database(data)


@pytest.mark.fuzz
@given(
    mutations=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 99), st.integers(0, 1 << 20)),  # the header often, any page otherwise
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=8,
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_feedback_database(mutations: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(valid_database())
    for position, value in mutations:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    check_database(bytes(data))


@functools.cache
def valid_calibrator(kind: str) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    c = rng.random(200)
    return to_dict(make_calibrator(kind).fit(c, (rng.random(200) < c).astype(float)))


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path into a JSON value (the value itself is the empty path)."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:4]):  # a few elements of long data lists are enough
            found += paths(v, (*prefix, i))
    return found


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 70), 1 << 70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from((*KINDS, "temperature", "int64", "float64", "object")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@st.composite
def mutated_calibrators(draw: st.DrawFn) -> tuple[dict[str, Any] | None, str]:
    """A saved calibrator with values replaced, keys deleted, or its JSON text overwritten."""
    d = copy.deepcopy(valid_calibrator(draw(st.sampled_from(KINDS))))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(d)[1:]))
        parent = d
        for key in where[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(json_values)
    text = json.dumps(d)  # NaN and Infinity as Python's json writes them (and reads them back)
    if draw(st.booleans()):
        raw = bytearray(text.encode())
        for position, value in draw(
            st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4)
        ):
            raw[position % len(raw)] = value
        return None, raw.decode("utf-8", errors="surrogateescape")
    return d, text


@pytest.mark.fuzz
@given(mutated_calibrators())
def test_mutated_calibrator_files(case: tuple[dict[str, Any] | None, str]) -> None:
    d, text = case
    if d is not None:  # the state stored in a feedback database goes through the same from_dict
        try:
            from_dict(d, "state")
        except CalibError as err:
            assert "\n" not in str(err)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cal.json"
        data = text.encode("utf-8", errors="surrogateescape")
        path.write_bytes(data)
        check_transform(path, data)


def check_transform(path: Path, data: bytes) -> None:
    """transform with the calibrator file: three numbers in [0, 1] or a CalibError, and the file unchanged."""
    out = read_command(["transform", "--calibrator", str(path), "0", "0.3", "1"])
    if out is not None:
        values = [float(v) for v in out.split()]
        assert len(values) == 3 and all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values)
    assert path.read_bytes() == data


@functools.cache
def valid_safetensors(kind: str) -> bytes:
    rng = np.random.default_rng(1)
    c = rng.random(200)
    with tempfile.TemporaryDirectory() as folder:
        cal = make_calibrator(kind).fit(c, (rng.random(200) < c).astype(float))
        return save_calibrator(cal, Path(folder) / "cal.safetensors").read_bytes()


@pytest.mark.fuzz
@given(
    kind=st.sampled_from(KINDS),
    mutations=st.lists(
        st.tuples(st.one_of(st.integers(0, 255), st.integers(0, 1 << 16)), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 16)),
)
def test_mutated_safetensors_calibrator_files(
    kind: str, mutations: list[tuple[int, int]], cut: int | None
) -> None:
    """The header (JSON with kind and params) is in the first few hundred bytes, so it is hit most often."""
    data = bytearray(valid_safetensors(kind))
    for position, value in mutations:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cal.safetensors"
        path.write_bytes(bytes(data))
        check_transform(path, bytes(data))
