"""Fifteen hand-made numeric features of a task, seen from one query.

The features are computed only from the demonstration pairs and the query *input*; the
signature of :func:`task_features` cannot accept a query output, so no answer can leak in.
All are scaled to roughly ``[0, 1]``: sizes are divided by :data:`MAX_SIDE` (30), colour counts
by :data:`NUM_COLOURS` (10). A mean over no items is 0 (so an empty demo list, or no
same-shape demo, gives 0 rather than NaN).

===  =======================  ===========================================================
idx  name                     definition
===  =======================  ===========================================================
0    demo_in_height           mean demo input height / 30
1    demo_in_width            mean demo input width / 30
2    demo_out_height          mean demo output height / 30
3    demo_out_width           mean demo output width / 30
4    height_ratio             mean of clip(out height / in height, 0, 4), then / 4
5    width_ratio              mean of clip(out width / in width, 0, 4), then / 4
6    same_shape_frac          fraction of demos whose output shape equals the input shape
7    demo_in_colours          mean number of distinct colours in a demo input / 10
8    demo_out_colours         mean number of distinct colours in a demo output / 10
9    out_colours_subset_frac  fraction of demos whose output colours are a subset of the input's
10   changed_cell_frac        mean fraction of cells that differ, over same-shape demos
11   out_background_frac      mean fraction of output cells holding the output's most common colour
12   query_height             query input height / 30
13   query_width              query input width / 30
14   query_colours            number of distinct colours in the query input / 10
===  =======================  ===========================================================

None of these depends on which colour is which, so every feature is unchanged when one colour
permutation is applied to all grids. Rotating by 180 degrees or flipping keeps all features;
a transpose (or a 90-degree rotation) swaps the height/width features (0<->1, 2<->3, 4<->5, 12<->13).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from efe_ray.data.task import MAX_SIDE, NUM_COLOURS, Pair, as_grid

FEATURE_NAMES: tuple[str, ...] = (
    "demo_in_height",
    "demo_in_width",
    "demo_out_height",
    "demo_out_width",
    "height_ratio",
    "width_ratio",
    "same_shape_frac",
    "demo_in_colours",
    "demo_out_colours",
    "out_colours_subset_frac",
    "changed_cell_frac",
    "out_background_frac",
    "query_height",
    "query_width",
    "query_colours",
)
"""The name of each feature, in index order (see the module docstring)."""
NUM_FEATURES = 15
"""Length of a feature vector."""
assert len(FEATURE_NAMES) == NUM_FEATURES

MAX_RATIO = 4.0
"""Features 4 and 5 clip a demonstration's output/input size ratio here."""
PAIR_STATS: tuple[str, ...] = ("in_h", "in_w", "out_h", "out_w", "h_ratio", "w_ratio", "same", "in_colours",
                               "out_colours", "subset", "changed", "background")
"""The per-demonstration terms that features 0..11 are means of (:func:`pair_stats`), in order.
``changed`` is the share of cells that differ where input and output have one shape (0 otherwise;
``same`` says which: feature 10 is its mean over the same-shape demonstrations only)."""


def _mean(values: Sequence[float]) -> float:
    """Mean of ``values``; 0 for an empty list."""
    return float(np.mean(values)) if len(values) else 0.0


def pair_stats(demo: Pair, what: str = "demo") -> list[float]:
    """The :data:`PAIR_STATS` terms of one answered demonstration pair (``what`` names it in errors)."""
    if demo.output is None:
        raise ValueError(f"{what} has no output; demonstrations must be answered")
    x = as_grid(demo.input, f"{what} input")  # (H, W)
    y = as_grid(demo.output, f"{what} output")  # (H', W')
    same = x.shape == y.shape
    x_set, y_set = np.unique(x), np.unique(y)
    _, counts = np.unique(y, return_counts=True)
    return [x.shape[0], x.shape[1], y.shape[0], y.shape[1],
            min(max(y.shape[0] / x.shape[0], 0.0), MAX_RATIO), min(max(y.shape[1] / x.shape[1], 0.0), MAX_RATIO),
            float(same), len(x_set), len(y_set), float(np.isin(y_set, x_set).all()),
            float(np.mean(x != y)) if same else 0.0, float(counts.max()) / y.size]


def task_features(demos: Sequence[Pair], query: np.ndarray) -> np.ndarray:
    """The ``(15,)`` float32 feature vector of a task's demos and one query input grid.

    Args:
        demos: demonstration pairs, every output known.
        query: the query input grid (a :class:`Pair` is refused, so its output cannot leak).
    """
    if isinstance(query, Pair):
        raise TypeError("task_features takes the query input grid, not a Pair (its output must not leak)")
    q = as_grid(query, "query")  # (Hq, Wq)
    rows = [pair_stats(demo, f"demo {i}") for i, demo in enumerate(demos)]
    col = {name: [r[k] for r in rows] for k, name in enumerate(PAIR_STATS)}
    changed = [c for c, same in zip(col["changed"], col["same"]) if same]
    feats = np.array(
        [
            _mean(col["in_h"]) / MAX_SIDE,
            _mean(col["in_w"]) / MAX_SIDE,
            _mean(col["out_h"]) / MAX_SIDE,
            _mean(col["out_w"]) / MAX_SIDE,
            _mean(col["h_ratio"]) / MAX_RATIO,
            _mean(col["w_ratio"]) / MAX_RATIO,
            _mean(col["same"]),
            _mean(col["in_colours"]) / NUM_COLOURS,
            _mean(col["out_colours"]) / NUM_COLOURS,
            _mean(col["subset"]),
            _mean(changed),
            _mean(col["background"]),
            q.shape[0] / MAX_SIDE,
            q.shape[1] / MAX_SIDE,
            len(np.unique(q)) / NUM_COLOURS,
        ],
        dtype=np.float32,
    )  # (15,)
    return feats


AXIS_PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (12, 13))
"""Features that trade places when a view's grids are transposed (height <-> width)."""


def swap_axes(feats: np.ndarray) -> np.ndarray:
    """The features of the same view with every grid transposed (or turned by 90 degrees): the
    height and width features trade places; the others are unchanged. ``(15,)`` -> ``(15,)``."""
    out = feats.copy()
    for a, b in AXIS_PAIRS:
        out[a], out[b] = feats[b], feats[a]
    return out


def batch_features(items: Sequence[tuple[Sequence[Pair], np.ndarray]]) -> np.ndarray:
    """Stack :func:`task_features` over ``(demos, query)`` items: a ``(B, 15)`` float32 array."""
    if len(items) == 0:
        return np.zeros((0, NUM_FEATURES), dtype=np.float32)
    return np.stack([task_features(demos, query) for demos, query in items]).astype(np.float32, copy=False)
