"""Hypothesis strategies shared by the property tests."""

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from efe_ray.data.task import Pair, Task, as_grid

SETTINGS = settings(max_examples=60, deadline=None)
"""Enough examples to find shape bugs, few enough for 2 cores."""


def model_settings(max_examples: int) -> settings:
    """Settings of a property test that runs a model: ``max_examples`` derandomized examples (the
    same ones on every run, no example database) without a deadline."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None)


@st.composite
def grids(draw, max_side: int = 30, colours: tuple[int, ...] = tuple(range(10))) -> np.ndarray:
    """An (H, W) int64 grid of ``colours`` (default 0..9), 1 <= H, W <= max_side."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return draw(arrays(np.int64, (h, w), elements=st.sampled_from(colours)))


@st.composite
def palettes(draw) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(colours of the demonstrations, colours of the test inputs): any colours; a single colour
    throughout; or a test colour that no demonstration holds."""
    kind = draw(st.sampled_from(["any", "single", "unseen"]))
    if kind == "any":
        return tuple(range(10)), tuple(range(10))
    colour = draw(st.integers(0, 9))
    if kind == "single":
        return (colour,), (colour,)
    return tuple(c for c in range(10) if c != colour), (colour,)


@st.composite
def tasks(draw, task_id: str = "t", max_side: int = 30, max_demos: int = 10, max_tests: int = 3) -> Task:
    """A valid ARC task of random shapes: 1..``max_demos`` demonstrations, 1..``max_tests`` test
    inputs (each with an output, for scoring); every grid's height and width drawn on their own up
    to the task's largest side (itself 1..``max_side``), so an output may be larger or smaller than
    its input and sizes differ from pair to pair; sometimes every demonstration the same pair;
    colours from :func:`palettes`."""
    demo_colours, test_colours = draw(palettes())
    max_side = draw(st.integers(1, max_side))
    n_demos = draw(st.integers(1, max_demos))
    demo = st.tuples(grids(max_side, demo_colours), grids(max_side, demo_colours))
    if draw(st.booleans()):
        demos = [draw(demo)] * n_demos  # identical demonstrations
    else:
        demos = draw(st.lists(demo, min_size=n_demos, max_size=n_demos))
    tests = draw(st.lists(st.tuples(grids(max_side, test_colours), grids(max_side, test_colours)),
                          min_size=1, max_size=max_tests))
    return Task(task_id, tuple(Pair(as_grid(i), as_grid(o)) for i, o in demos),
                tuple(Pair(as_grid(i), as_grid(o)) for i, o in tests))


def task_groups(max_tasks: int = 4, **kw) -> st.SearchStrategy[list[Task]]:
    """1..``max_tasks`` tasks of :func:`tasks` (``kw``), ids ``t0``, ``t1``, ..."""
    return st.integers(1, max_tasks).flatmap(
        lambda n: st.tuples(*(tasks(f"t{i}", **kw) for i in range(n))).map(list))
