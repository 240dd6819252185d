"""GridAgent: predicts the output grid, cell by cell, from the query input and a prompt.

Output sizes may differ from the input's. Grids live on a square canvas of side ``S``
(``AgentConfig.canvas``, or a smaller side chosen per batch); cells beyond a grid hold the class
``OUTSIDE`` (10). The agent predicts
one of 11 classes for every canvas cell, and the predicted grid is read off the canvas by
:func:`from_canvas`: its height is the number of leading rows whose first cell is not ``OUTSIDE``,
its width the number of leading columns whose first cell is not ``OUTSIDE``. The loss therefore
covers the target cells plus a one-cell border of ``OUTSIDE`` (efe_ray/data/batching.py).

Architecture: cell embeddings + learned coordinate embeddings + the projected prompt, a prompt
token in front, a small pre-norm transformer over all cells, a linear head to 11 classes. Each
cell's coordinates are counted from both ends of the input grid (row from the top and from the
bottom, column from the left and from the right), so mirror-like moves are a match between two
embeddings rather than arithmetic on the grid size.

A cell's embedding (its class and coordinates) is the same on any canvas side that holds the
grid. Its logits are not: every canvas cell attends to every other, so the OUTSIDE cells a larger
canvas adds change the context. Smaller canvases are valid, not equivalent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from efe_ray.config import AgentConfig

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


class GridAgent(nn.Module):
    """(query canvas, prompt) -> per-cell class logits."""

    def __init__(self, cfg: AgentConfig, prompt_dim: int):
        super().__init__()
        self.cfg = cfg
        d, s = cfg.d_model, cfg.canvas
        self.cell_emb = nn.Embedding(NUM_CLASSES, d)
        # Index s (= cfg.canvas) means "beyond the input grid" for the from-the-far-end coordinates.
        self.coord_emb = nn.ModuleList([nn.Embedding(s + 1, d) for _ in range(4)])
        self.prompt_in = nn.Linear(prompt_dim, d)
        self.prompt_token = nn.Linear(prompt_dim, d)
        layer = nn.TransformerEncoderLayer(
            d, cfg.num_heads, dim_feedforward=4 * d, dropout=cfg.dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.body = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, NUM_CLASSES)

    def forward(self, canvas: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """canvas: (B, S, S) long in 0..10, S <= ``cfg.canvas``; prompt: (B, P). Returns logits (B, S, S, 11)."""
        b, s, _ = canvas.shape
        if s > self.cfg.canvas:
            raise ValueError(f"a {s}x{s} canvas is larger than the agent's {self.cfg.canvas}x{self.cfg.canvas} (agent.canvas)")
        x = self.cell_emb(canvas) + self._coords(canvas)  # (B, S, S, D)
        x = x + self.prompt_in(prompt)[:, None, None, :]  # (B, S, S, D)
        x = x.reshape(b, s * s, -1)  # (B, S*S, D)
        x = torch.cat([self.prompt_token(prompt)[:, None, :], x], dim=1)  # (B, 1+S*S, D)
        x = self.body(x)[:, 1:]  # (B, S*S, D)
        return self.head(self.norm(x)).reshape(b, s, s, NUM_CLASSES)  # (B, S, S, 11)

    def _coords(self, canvas: torch.Tensor) -> torch.Tensor:
        """Sum of the four coordinate embeddings of every cell: (B, S, S, D)."""
        b, s, _ = canvas.shape
        beyond = self.cfg.canvas  # the "beyond the input grid" index, whatever the batch's side
        inside = canvas != OUTSIDE  # (B, S, S)
        h = inside[:, :, 0].sum(1)  # (B,) input height
        w = inside[:, 0, :].sum(1)  # (B,) input width
        idx = torch.arange(s, device=canvas.device)
        row_back = h[:, None] - 1 - idx[None]  # (B, S)
        col_back = w[:, None] - 1 - idx[None]  # (B, S)
        row_back = torch.where(row_back < 0, beyond, row_back)
        col_back = torch.where(col_back < 0, beyond, col_back)
        e_row, e_col, e_row_back, e_col_back = self.coord_emb
        return (e_row(idx)[None, :, None] + e_col(idx)[None, None, :]
                + e_row_back(row_back)[:, :, None] + e_col_back(col_back)[:, None, :])
