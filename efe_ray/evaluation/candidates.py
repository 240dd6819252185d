"""Candidate answers for one test input, scored under every augmented view (a product of experts).

The agent predicts, for each view ``a`` of a task (an :class:`Augmentation` of its demonstrations
and test input), a log-probability for each of 11 classes at every cell of an ``S x S`` canvas:
``logp_a`` of shape ``(S, S, 11)``. The model is not autoregressive, so the log-probability of a
whole answer ``g`` under view ``a`` is a sum over cells::

    log p_a(g) = sum_{i,j < S} logp_a[i, j, canvas_a(g)[i, j]]

where ``canvas_a(g)`` is ``a.apply(g)`` padded with ``OUTSIDE`` to the canvas: cells beyond the
grid must be predicted ``OUTSIDE``, so an answer's size is scored as much as its colours. Every
candidate is scored over the same ``S x S`` cells, so answers of different sizes compare fairly.

**Product of experts**: a candidate's score is ``sum_a log p_a(g)`` over all views, plus the
log-prior of its size (:func:`size_log_prior`). The two best distinct candidates are the attempts.

**Candidates** (:func:`propose`): each view's argmax canvas read off with ``from_canvas`` and mapped
back with ``a.invert``; and, for every size the demonstrations' size rules predict, each view's
colour argmax (``OUTSIDE`` excluded) cropped to that size and mapped back. The second kind rescues
predictions whose colours are right but whose ``OUTSIDE`` border is off by a row.

**Size rules** (:func:`predicted_sizes`): for the output height and width separately, every rule
of the list below that holds on *all* demonstrations; the sizes for the test input are the
products of the two lists. Rules, for a dimension ``o`` of the output:
``o = c`` (constant), ``o = r * i`` for either input dimension ``i`` and a ratio ``r`` shared by all
demos (1, 2, 1/2, 3, ... : same size, scaled, transposed), ``o = i + c`` (a border of ``c/2``).

All functions are pure; grids are ``(H, W)`` int64 numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from efe_ray.data.augment import Augmentation
from efe_ray.data.canvas import NUM_CLASSES, OUTSIDE, from_canvas

__all__ = ["Candidate", "View", "canvas_log_prob", "predicted_sizes", "product_of_experts", "propose",
           "rank", "size_log_prior"]

SIZE_PENALTY = 8.0
"""Log-prior penalty (nats) of a size that no demonstration size rule predicts, where some rule holds."""


@dataclass(frozen=True)
class View:
    """One augmented view of a test input: the augmentation and the agent's log-probabilities."""

    aug: Augmentation
    """The augmentation the demonstrations and the test input were seen under."""
    logp: np.ndarray
    """``(S, S, 11)`` float log-probabilities of the classes at every canvas cell (augmented frame)."""


@dataclass(frozen=True, eq=False)
class Candidate:
    """A candidate answer in the original frame and its score."""

    grid: np.ndarray
    """``(H, W)`` int64."""
    score: float
    """Summed log-probability over the views plus the size log-prior (higher is better)."""


# ---------------------------------------------------------------------------- sizes


def _dimension_rules(values: list[int], inputs: list[tuple[int, int]]) -> list[tuple[str, int, Fraction]]:
    """Rules ``(kind, input_axis, parameter)`` that give ``values`` (one output dimension) from ``inputs``."""
    rules: list[tuple[str, int, Fraction]] = []
    if len(set(values)) == 1:
        rules.append(("const", -1, Fraction(values[0])))
    for axis in (0, 1):
        dims = [shape[axis] for shape in inputs]
        ratios = {Fraction(v, d) for v, d in zip(values, dims)}
        if len(ratios) == 1:
            rules.append(("scale", axis, ratios.pop()))
        offsets = {v - d for v, d in zip(values, dims)}
        if len(offsets) == 1 and (off := offsets.pop()) != 0:
            rules.append(("offset", axis, Fraction(off)))
    return rules


def _apply_rule(rule: tuple[str, int, Fraction], shape: tuple[int, int]) -> int | None:
    kind, axis, p = rule
    value = p if kind == "const" else (p * shape[axis] if kind == "scale" else p + shape[axis])
    return int(value) if value.denominator == 1 and 1 <= value <= 30 else None


def predicted_sizes(demos: Sequence[tuple[np.ndarray, np.ndarray]], query: np.ndarray) -> list[tuple[int, int]]:
    """Output sizes for ``query`` that the demonstrations' size rules predict (see the module
    docstring); empty when no rule holds for one of the two dimensions."""
    inputs = [x.shape for x, _ in demos]
    per_dim = []
    for axis in (0, 1):
        values = [y.shape[axis] for _, y in demos]
        found = {_apply_rule(r, query.shape) for r in _dimension_rules(values, inputs)} - {None}
        per_dim.append(sorted(found))
    return [(h, w) for h in per_dim[0] for w in per_dim[1]]


def size_log_prior(shape: tuple[int, int], sizes: Sequence[tuple[int, int]]) -> float:
    """0 for a size the rules predict (or when no rule holds), ``-SIZE_PENALTY`` otherwise."""
    if not sizes or tuple(shape) in set(map(tuple, sizes)):
        return 0.0
    return -SIZE_PENALTY


# ---------------------------------------------------------------------------- scoring


def canvas_log_prob(grid: np.ndarray, logp: np.ndarray) -> float:
    """``log p(grid)`` under one view's ``(S, S, 11)`` log-probabilities (``grid`` already in that
    view's frame): its cells, plus ``OUTSIDE`` on every other canvas cell. ``-inf`` if it does not fit."""
    s = logp.shape[0]
    h, w = grid.shape
    if h > s or w > s:
        return -math.inf
    canvas = np.full((s, s), OUTSIDE, dtype=np.int64)
    canvas[:h, :w] = grid
    rows, cols = np.indices((s, s))
    return float(logp[rows, cols, canvas].sum())


def product_of_experts(grid: np.ndarray, views: Sequence[View]) -> float:
    """Sum over views of ``log p_a(a(grid))``: the candidate's log-probability under every view."""
    return math.fsum(canvas_log_prob(v.aug.apply(grid), v.logp) for v in views)


# ---------------------------------------------------------------------------- candidates


def _key(grid: np.ndarray) -> tuple:
    return grid.shape, grid.tobytes()


def propose(views: Sequence[View], sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Distinct candidate grids (original frame): each view's read-off, and each view's colour argmax
    cropped to every predicted size. In order of first appearance."""
    out: dict[tuple, np.ndarray] = {}
    for v in views:
        argmax = v.logp.argmax(-1)  # (S, S)
        grids = [from_canvas(argmax)]
        colours = v.logp[..., :NUM_CLASSES - 1].argmax(-1)  # (S, S), OUTSIDE excluded
        s = colours.shape[0]
        for h, w in sizes:
            hh, ww = (w, h) if v.aug.swaps_axes else (h, w)  # the size in the view's frame
            if hh <= s and ww <= s:
                grids.append(colours[:hh, :ww].astype(np.int64))
        for g in grids:
            g = v.aug.invert(g)
            out.setdefault(_key(g), g)
    return list(out.values())


def rank(views: Sequence[View], sizes: Sequence[tuple[int, int]]) -> list[Candidate]:
    """Every proposed candidate with its score (product of experts + size log-prior), best first;
    ties go to the smaller canonical key, so the order never depends on the views' order."""
    scored = [Candidate(g, product_of_experts(g, views) + size_log_prior(g.shape, sizes))
              for g in propose(views, sizes)]
    scored.sort(key=lambda c: (-c.score, c.grid.shape, c.grid.tobytes()))
    return scored
