"""Small synthetic ARC-style tasks with known rules, for tests, smoke runs and the CPU default.

Three rules, each a pure function of the input grid:

- ``colour_map``: every colour c becomes ``perm[c]`` (a fixed permutation, 0 fixed);
- ``flip``: mirror left-right;
- ``crop``: keep the top-left ``k x k`` block (the output is smaller than the input).

:func:`synthetic_tasks` makes tasks that share a rule but not their inputs, so "held-out inputs of
the same tasks" are easy to build: call it again with another seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from efe_ray.data.task import Pair, Task, as_grid

RULES = ("colour_map", "flip", "crop")
"""Names of the synthetic rules."""

_COLOUR_PERM = np.array([0, 3, 5, 1, 7, 2, 9, 4, 8, 6])


def rule(name: str, side: int) -> Callable[[np.ndarray], np.ndarray]:
    """The input -> output function of a synthetic rule."""
    if name == "colour_map":
        return lambda g: _COLOUR_PERM[g]
    if name == "flip":
        return lambda g: g[:, ::-1]
    if name == "crop":
        k = max(1, side // 2)
        return lambda g: g[:k, :k]
    raise ValueError(f"unknown synthetic rule {name!r}; known: {', '.join(RULES)}")


def random_grid(rng: np.random.Generator, side: int, density: float = 0.6) -> np.ndarray:
    """A (side, side) grid: background 0 with random colours 1..9 on ``density`` of the cells."""
    colours = rng.integers(1, 10, size=(side, side))
    return np.where(rng.random((side, side)) < density, colours, 0)


def synthetic_tasks(
    rules: tuple[str, ...] = RULES,
    *,
    side: int = 6,
    num_train: int = 4,
    num_test: int = 1,
    seed: int = 0,
    prefix: str = "syn",
) -> list[Task]:
    """One task per rule, with ``num_train`` demonstrations and ``num_test`` test pairs."""
    rng = np.random.default_rng(seed)
    tasks = []
    for name in rules:
        fn = rule(name, side)
        pairs = []
        for _ in range(num_train + num_test):
            g = random_grid(rng, side)
            pairs.append(Pair(as_grid(g), as_grid(fn(g))))
        tasks.append(Task(f"{prefix}-{name}", tuple(pairs[:num_train]), tuple(pairs[num_train:]),
                          source=f"synthetic:{name}:seed{seed}"))
    return tasks
