"""docs/recalibration.md's python blocks run as written, and its error examples are the real messages."""

import re
from pathlib import Path

import numpy as np
import pytest

from calib.errors import CalibError
from calib.recalibrate import Split, TemperatureScaler, make_calibrator

DOC = Path(__file__).resolve().parents[1] / "docs" / "recalibration.md"


def test_python_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "the page lost its runnable example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "fitted T = " in out and "| ece |" in out and "deployed: 0.95 ->" in out


def test_documented_error_messages_are_current():
    text = DOC.read_text()
    cases = [
        (lambda: TemperatureScaler(0), CalibError),
        (lambda: make_calibrator("isotonic").fit([], []), CalibError),
        (lambda: make_calibrator("isotonic").fit([0.5], [2]), CalibError),
        (lambda: make_calibrator("platt").fit([0.5, 0.6], [1, 1]), CalibError),
        (lambda: Split(np.arange(12), np.arange(12)), CalibError),
    ]
    for fn, err_type in cases:
        with pytest.raises(err_type) as err:
            fn()
        assert f"- `{err.value}`" in text, str(err.value)
