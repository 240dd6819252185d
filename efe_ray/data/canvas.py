"""The canvas: a grid padded to a square of side ``S`` with the class ``OUTSIDE``, and read back.

The agent predicts one of :data:`NUM_CLASSES` classes for every cell of a square canvas; cells
beyond a grid hold ``OUTSIDE`` (10). :func:`from_canvas` reads the predicted grid off: its height
is the number of leading rows whose first cell is not ``OUTSIDE``, its width the number of leading
columns whose first cell is not ``OUTSIDE``. No torch here.
"""

from __future__ import annotations

import numpy as np

OUTSIDE = 10
"""Class index of a canvas cell that lies outside the grid."""
NUM_CLASSES = 11
"""Colours 0..9 and OUTSIDE."""


def to_canvas(grid: np.ndarray, side: int) -> np.ndarray:
    """Pad a (H, W) grid to (side, side) with OUTSIDE. Raises if the grid does not fit."""
    h, w = grid.shape
    if h > side or w > side:
        raise ValueError(f"grid of shape {h}x{w} does not fit the {side}x{side} canvas (agent.canvas)")
    canvas = np.full((side, side), OUTSIDE, dtype=np.int64)
    canvas[:h, :w] = grid
    return canvas


def from_canvas(canvas: np.ndarray) -> np.ndarray:
    """Read a grid off a predicted (S, S) canvas of class indices (see the module docstring).

    OUTSIDE cells inside the read-off extent become colour 0. An empty prediction gives a 1x1 grid.
    """
    h = int(np.argmax(np.append(canvas[:, 0] == OUTSIDE, True)))
    w = int(np.argmax(np.append(canvas[0, :] == OUTSIDE, True)))
    grid = canvas[: max(h, 1), : max(w, 1)].copy()
    grid[grid == OUTSIDE] = 0
    return grid.astype(np.int64)
