"""The grid coercer (efe_ray.data.task.as_grid): what it accepts, what it refuses, and its messages."""

from __future__ import annotations

import numpy as np
import pytest

from efe_ray.data.task import as_grid


def test_lists_and_arrays_become_read_only_int64_copies():
    from_list = as_grid([[1, 2], [3, 4]])
    assert from_list.dtype == np.int64 and from_list.shape == (2, 2) and not from_list.flags.writeable
    caller = np.array([[0, 9]], dtype=np.int32)
    grid = as_grid(caller)
    assert grid.dtype == np.int64 and np.array_equal(grid, caller)
    assert caller.flags.writeable  # the caller's array is never frozen...
    caller[0, 0] = 5
    assert grid[0, 0] == 0  # ...nor shared
    assert as_grid(grid) is grid  # a grid that already is one passes as it is


@pytest.mark.parametrize("bad, words", [
    ([1, 2, 3], "non-empty 2-D grid, got shape (3,)"),
    (np.zeros((0, 3), np.int64), "non-empty 2-D grid, got shape (0, 3)"),
    ([[1, 2], [3]], "not a rectangular grid"),
    ([[1.0, 2.0]], "must hold integers, got dtype float64"),
    ([[True, False]], "must hold integers, got dtype bool"),
    ([[0, 10]], "colours must lie in 0..9, got 0..10"),
    ([[-1]], "colours must lie in 0..9, got -1..-1"),
])
def test_bad_grids_are_refused_by_name(bad, words):
    with pytest.raises(ValueError) as err:
        as_grid(bad, "demo 2 input")
    assert str(err.value).startswith("demo 2 input") and words in str(err.value)
