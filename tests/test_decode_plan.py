"""The decode plan: programs counted, one compiled decode program for every length, and the same tokens whatever
the length asked for or the batch a prompt is decoded in."""

from __future__ import annotations

import jax
import numpy as np

from calib.pipeline import programs


def test_program_counter_counts_each_new_shape_once():
    """Cross-checked against jit's own cache of traced shapes: one program per new shape, none for a repeat."""
    programs.install()
    programs.install()  # idempotent: a second install must not double-count

    @jax.jit
    def twice_plus_one(x):
        return x * 2 + 1

    before = programs.snapshot()
    for n in (3, 5, 7, 5, 3):
        twice_plus_one(np.arange(n, dtype=np.float32))
    built = programs.snapshot().since(before)
    assert built.programs == twice_plus_one._cache_size() == 3
    assert built.by_function == {"jit(twice_plus_one)": 3}
    assert 0 <= built.loaded <= built.programs and built.compiled == built.programs - built.loaded
    record = built.record()
    assert record["programs"] == 3 and record["by_function"] == {"jit(twice_plus_one)": 3}


def test_numpy_inputs_build_no_extra_programs():
    """Why the decode code hands numpy arrays to its jitted functions: jnp.asarray builds a program per shape."""
    programs.install()
    before = programs.snapshot()
    jax.jit(lambda x: x + 1)(np.ones(11, np.int32))
    assert programs.snapshot().since(before).programs == 1
