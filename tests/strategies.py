"""Hypothesis strategies shared by the property tests."""

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

SETTINGS = settings(max_examples=60, deadline=None)
"""Enough examples to find shape bugs, few enough for 2 cores."""


@st.composite
def grids(draw, max_side: int = 30) -> np.ndarray:
    """An (H, W) int64 grid of colours 0..9, 1 <= H, W <= max_side."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    return draw(arrays(np.int64, (h, w), elements=st.integers(0, 9)))
