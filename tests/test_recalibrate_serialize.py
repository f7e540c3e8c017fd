"""Every calibrator round-trips through a small JSON or safetensors file with bit-identical outputs."""

import json

import numpy as np
import pytest
from scipy.special import expit, logit

from calib.errors import CalibError
from calib.recalibrate import (
    Calibrator,
    Recalibrator,
    TemperatureScaler,
    calibrator_kinds,
    load_calibrator,
    make_calibrator,
    save_calibrator,
)


def fitted(kind: str):
    if kind == "temperature":
        return TemperatureScaler(1.2345678901234567)
    rng = np.random.default_rng(0)
    p = rng.random(3000)
    c = expit(2 * logit(np.clip(p, 1e-4, 1 - 1e-4)))
    return make_calibrator(kind).fit(c, (rng.random(3000) < p).astype(float))


def outputs(cal) -> np.ndarray:
    grid = np.concatenate([[0.0, 1.0, 1e-12, 1 - 1e-12], np.random.default_rng(1).random(10000)])
    if isinstance(cal, Calibrator):
        return cal.transform(grid)
    return cal.transform_logprobs(np.log(np.random.default_rng(2).dirichlet(np.ones(50), 20)))


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
@pytest.mark.parametrize("kind", calibrator_kinds())
def test_round_trip_is_bit_identical_and_small(tmp_path, kind, suffix):
    cal = fitted(kind)
    path = save_calibrator(cal, tmp_path / f"cal{suffix}")
    assert path.stat().st_size < 64 * 1024
    back = load_calibrator(path)
    assert type(back) is type(cal) and back == cal
    assert np.array_equal(outputs(back), outputs(cal))


def test_json_is_readable_and_exact(tmp_path):
    cal = fitted("platt")
    d = json.loads(save_calibrator(cal, tmp_path / "p.json").read_text())
    assert d["kind"] == "platt" and d["params"]["a"] == cal.a  # the float survives exactly


def test_recalibrator_save_and_load_without_a_database(tmp_path):
    rec = Recalibrator(None)
    rng = np.random.default_rng(3)
    c = rng.random(500)
    rec.update(c, (rng.random(500) < c**2).astype(float))
    rec.save(tmp_path / "r.safetensors")
    again = Recalibrator.load(tmp_path / "r.safetensors")
    grid = np.linspace(0, 1, 301)
    assert np.array_equal(again.transform(grid), rec.transform(grid))
    # a reloaded online calibrator keeps learning from where it stopped
    rec.update([0.5], [1])
    again.update([0.5], [1])
    assert again.calibrator == rec.calibrator


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.json", b"{not json", "not valid JSON"),
        ("a.json", b'{"format": "other"}', "not a calib calibrator file"),
        ("a.json", b'{"format": "calib.recalibrator", "version": 9, "params": {}}', "version"),
        (
            "a.json",
            b'{"format": "calib.recalibrator", "version": 1, "kind": "nope", "params": {}}',
            "unknown",
        ),
        (
            "a.json",
            b'{"format": "calib.recalibrator", "version": 1, "kind": "isotonic", "params": {},'
            b' "arrays": {"x": {"dtype": "object", "shape": [1], "data": [1]}}}',
            "damaged array",
        ),
        (
            "a.json",
            b'{"format": "calib.recalibrator", "version": 1, "kind": "platt", "params": {"zz": 1}}',
            "bad",
        ),
        ("a.safetensors", b"\x00\x01garbage", "not a readable safetensors"),
        ("a.pkl", b"", "use a .json or .safetensors"),
    ],
)
def test_damaged_files_give_one_line_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CalibError, match=match) as err:
        load_calibrator(path)
    assert "\n" not in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(CalibError, match="no such calibrator file"):
        load_calibrator(tmp_path / "none.json")
