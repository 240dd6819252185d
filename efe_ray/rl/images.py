"""Pictures of grids in ARC's colours, for TensorBoard."""

from __future__ import annotations

import numpy as np

ARC_COLOURS = np.array([
    [0, 0, 0], [0, 116, 217], [255, 65, 54], [46, 204, 64], [255, 220, 0],
    [170, 170, 170], [240, 18, 190], [255, 133, 27], [127, 219, 255], [135, 12, 37],
], dtype=np.uint8)
"""RGB of colours 0..9 as the ARC viewer draws them."""


def grid_picture(grid: np.ndarray, cell: int = 8) -> np.ndarray:
    """(H, W) colours -> (H*cell, W*cell, 3) uint8, with a 1-pixel grey grid line."""
    img = ARC_COLOURS[grid].repeat(cell, 0).repeat(cell, 1)  # (H*c, W*c, 3)
    img[::cell, :, :] = 60
    img[:, ::cell, :] = 60
    return img


def task_picture(query: np.ndarray, prediction: np.ndarray, target: np.ndarray | None, cell: int = 12) -> np.ndarray:
    """query | prediction | target side by side on a white canvas: (H, W, 3) uint8."""
    pics = [grid_picture(g, cell) for g in (query, prediction, target) if g is not None]
    gap = cell
    h = max(p.shape[0] for p in pics)
    w = sum(p.shape[1] for p in pics) + gap * (len(pics) - 1)
    canvas = np.full((h, w, 3), 255, dtype=np.uint8)
    x = 0
    for p in pics:
        canvas[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gap
    return canvas
