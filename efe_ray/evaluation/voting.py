"""Vote over predictions made under several augmentations of one test input.

Each candidate is ``(augmentation, grid, score)`` where ``grid`` is the prediction in the
*augmented* frame (what the model saw) and ``score`` is a confidence, e.g. the mean max
log-probability of the read-off cells (higher is better). :func:`vote_augmented` maps every grid
back with ``aug.invert``, groups identical grids (same shape and cells) and ranks the groups by

1. how many candidates produced the grid (more first),
2. the summed score of those candidates (higher first; summed with ``math.fsum`` so the order of
   the candidates cannot change the result),
3. a canonical key of the grid (shape, then cell bytes; smaller first) -- an arbitrary but
   deterministic final tie-break.

``attempt_1`` is the best group's grid; ``attempt_2`` is the second-best *distinct* grid, or
``attempt_1`` again when every candidate agreed. All functions are pure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from efe_ray.data.augment import Augmentation
from efe_ray.data.task import as_grid

__all__ = ["Ranked", "grid_key", "rank", "vote", "vote_augmented"]


def grid_key(grid: np.ndarray) -> bytes:
    """A canonical byte key of a grid: its shape, then its cells (int8, row-major)."""
    g = np.asarray(grid)
    h, w = g.shape
    return h.to_bytes(2, "big") + w.to_bytes(2, "big") + np.ascontiguousarray(g, dtype=np.int8).tobytes()


@dataclass(frozen=True, eq=False)
class Ranked:
    """One distinct grid among the candidates, with its support."""

    grid: np.ndarray
    """The grid, ``(H, W)`` int64, in the original (un-augmented) frame."""
    count: int
    """How many candidates produced it."""
    score: float
    """Summed score of those candidates."""


def rank(candidates: Sequence[tuple[np.ndarray, float]]) -> list[Ranked]:
    """Group ``(grid, score)`` candidates by grid and rank them (see the module docstring).

    Raises ``ValueError`` on an empty list or a non-finite score.
    """
    if not candidates:
        raise ValueError("cannot vote over zero candidates")
    groups: dict[bytes, tuple[np.ndarray, list[float]]] = {}
    for grid, score in candidates:
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"candidate score must be finite, got {score!r}")
        g = as_grid(grid, "candidate grid")
        key = grid_key(g)
        if key in groups:
            groups[key][1].append(score)
        else:
            groups[key] = (g, [score])
    ranked = [(key, Ranked(g, len(s), math.fsum(s))) for key, (g, s) in groups.items()]
    ranked.sort(key=lambda kr: (-kr[1].count, -kr[1].score, kr[0]))
    return [r for _, r in ranked]


def vote(candidates: Sequence[tuple[np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(attempt_1, attempt_2) from ``(grid, score)`` candidates already in the original frame."""
    ranked = rank(candidates)
    first = ranked[0].grid
    second = ranked[1].grid if len(ranked) > 1 else first
    return first.copy(), second.copy()


def vote_augmented(
    candidates: Sequence[tuple[Augmentation, np.ndarray, float]],
) -> tuple[np.ndarray, np.ndarray]:
    """Invert each ``(aug, grid in the augmented frame, score)`` and :func:`vote` on the results."""
    return vote([(aug.invert(grid), score) for aug, grid, score in candidates])
