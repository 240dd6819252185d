"""Tests for efe_ray.data.features: the 15 task features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from efe_ray.data.augment import Augmentation
from efe_ray.data.features import FEATURE_NAMES, NUM_FEATURES, batch_features, task_features
from efe_ray.data.task import Pair, Task, as_grid

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def grids(draw, max_side: int = 30) -> np.ndarray:
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    # Few colours often, so one-colour grids and equal shapes are common.
    top = draw(st.integers(0, 9))
    return draw(arrays(np.int64, (h, w), elements=st.integers(0, top)))


@st.composite
def demo_lists(draw, min_size: int = 1, max_size: int = 4) -> list[Pair]:
    n = draw(st.integers(min_size, max_size))
    return [Pair(draw(grids(max_side=12)), draw(grids(max_side=12))) for _ in range(n)]


def test_names():
    assert NUM_FEATURES == 15 == len(FEATURE_NAMES) == len(set(FEATURE_NAMES))


@SETTINGS
@given(demo_lists(), grids())
def test_shape_dtype_finite(demos, query):
    f = task_features(demos, query)
    assert f.shape == (NUM_FEATURES,) and f.dtype == np.float32
    assert np.isfinite(f).all()
    assert (f >= 0).all() and (f <= 1).all()
    np.testing.assert_array_equal(f, task_features(demos, query))  # deterministic


def test_degenerate_inputs():
    one = as_grid([[0]])
    f = task_features([Pair(one, one), Pair(one, one)], one)
    assert np.isfinite(f).all()
    f = task_features([], one)  # no demos: demo features are 0, not NaN
    assert np.isfinite(f).all()
    np.testing.assert_array_equal(f[:12], np.zeros(12, dtype=np.float32))
    big = as_grid(np.full((30, 30), 4))
    f = task_features([Pair(big, one)], big)
    assert np.isfinite(f).all()


def test_hand_computed():
    demos = [
        Pair(as_grid([[1, 0], [0, 0]]), as_grid([[1, 1], [1, 1]])),  # 2x2 -> 2x2
        Pair(as_grid([[2, 3, 3]]), as_grid([[3], [5]])),  # 1x3 -> 2x1
    ]
    query = as_grid([[7, 7, 0]])
    f = task_features(demos, query)
    expected = {
        "demo_in_height": 1.5 / 30,
        "demo_in_width": 2.5 / 30,
        "demo_out_height": 2.0 / 30,
        "demo_out_width": 1.5 / 30,
        "height_ratio": (1.0 + 2.0) / 2 / 4,
        "width_ratio": (1.0 + 1 / 3) / 2 / 4,
        "same_shape_frac": 0.5,
        "demo_in_colours": 2.0 / 10,
        "demo_out_colours": 1.5 / 10,
        "out_colours_subset_frac": 0.5,  # {1} <= {0, 1}; {3, 5} not <= {2, 3}
        "changed_cell_frac": 0.75,  # only the same-shape demo: 3 of 4 cells change
        "out_background_frac": (1.0 + 0.5) / 2,
        "query_height": 1 / 30,
        "query_width": 3 / 30,
        "query_colours": 2 / 10,
    }
    assert set(expected) == set(FEATURE_NAMES)
    for i, name in enumerate(FEATURE_NAMES):
        assert f[i] == pytest.approx(expected[name], abs=1e-6), name


def test_ratio_is_clipped():
    demos = [Pair(as_grid([[1]]), as_grid(np.ones((9, 1), dtype=np.int64)))]
    f = task_features(demos, as_grid([[1]]))
    assert f[FEATURE_NAMES.index("height_ratio")] == pytest.approx(1.0)
    assert f[FEATURE_NAMES.index("width_ratio")] == pytest.approx(0.25)


def test_no_same_shape_demo_gives_zero_change():
    demos = [Pair(as_grid([[1, 2]]), as_grid([[1]]))]
    f = task_features(demos, as_grid([[1]]))
    assert f[FEATURE_NAMES.index("changed_cell_frac")] == 0.0
    assert f[FEATURE_NAMES.index("same_shape_frac")] == 0.0


@SETTINGS
@given(demo_lists(), grids(), grids(), grids())
def test_query_output_cannot_matter(demos, query, out_a, out_b):
    task_a = Task("t", tuple(demos), (Pair(query, out_a),))
    task_b = Task("t", tuple(demos), (Pair(query, out_b),))
    fa = task_features(task_a.train, task_a.test[0].input)
    fb = task_features(task_b.train, task_b.test[0].input)
    np.testing.assert_array_equal(fa, fb)
    with pytest.raises(TypeError):
        task_features(task_a.train, task_a.test[0])  # type: ignore[arg-type]


def test_demo_without_output_is_refused():
    with pytest.raises(ValueError):
        task_features([Pair(as_grid([[1]]), None)], as_grid([[1]]))


def _augmented(aug: Augmentation, demos: list[Pair], query: np.ndarray) -> tuple[list[Pair], np.ndarray]:
    return [aug.apply_pair(p) for p in demos], aug.apply(query)


@SETTINGS
@given(demo_lists(), grids(), st.permutations(list(range(10))))
def test_invariant_under_any_colour_permutation(demos, query, perm):
    aug = Augmentation(0, tuple(perm))
    f = task_features(demos, query)
    g = task_features(*_augmented(aug, demos, query))
    np.testing.assert_allclose(f, g, atol=1e-6)


@SETTINGS
@given(demo_lists(), grids(), st.sampled_from([2, 5, 7]))
def test_invariant_under_shape_keeping_d8(demos, query, d8):
    f = task_features(demos, query)
    g = task_features(*_augmented(Augmentation(d8), demos, query))
    np.testing.assert_allclose(f, g, atol=1e-6)


@SETTINGS
@given(demo_lists(), grids(), st.sampled_from([1, 3, 4, 6]))
def test_axis_swapping_d8_swaps_height_and_width(demos, query, d8):
    f = task_features(demos, query)
    g = task_features(*_augmented(Augmentation(d8), demos, query))
    perm = list(range(NUM_FEATURES))
    for a, b in ((0, 1), (2, 3), (4, 5), (12, 13)):
        perm[a], perm[b] = b, a
    np.testing.assert_allclose(f[perm], g, atol=1e-6)


def test_batch_features():
    demos = [Pair(as_grid([[1, 0]]), as_grid([[1], [0]]))]
    items = [(demos, as_grid([[1]])), (demos, as_grid([[1, 2], [3, 4]]))]
    b = batch_features(items)
    assert b.shape == (2, NUM_FEATURES) and b.dtype == np.float32
    np.testing.assert_array_equal(b[1], task_features(*items[1]))
    assert batch_features([]).shape == (0, NUM_FEATURES)


def test_augmented_features_are_the_raw_ones_with_axes_swapped_on_a_transpose():
    """What the sampler's feature cache relies on: under any D8 transform and colour permutation,
    a view's features are its unaugmented features, height and width swapped where the transform
    transposes the grids."""
    from efe_ray.data.augment import Augmentation
    from efe_ray.data.features import swap_axes
    from efe_ray.data.synthetic import synthetic_tasks

    rng = np.random.default_rng(0)
    for task in synthetic_tasks(side=5, seed=3) + synthetic_tasks(side=3, seed=4):
        raw = task_features(task.train, task.test[0].input)
        for _ in range(12):
            aug = Augmentation.random(rng)
            seen = task_features([aug.apply_pair(p) for p in task.train], aug.apply(task.test[0].input))
            expected = swap_axes(raw) if aug.swaps_axes else raw
            np.testing.assert_allclose(seen, expected, rtol=0, atol=1e-7)


def test_the_samplers_feature_cache_is_bounded_and_exact(monkeypatch):
    import efe_ray.data.batching as batching
    from efe_ray.config import LearnerConfig
    from efe_ray.data.synthetic import synthetic_tasks

    monkeypatch.setattr(batching, "FEATURE_CACHE_SIZE", 16)
    tasks = synthetic_tasks(side=4, num_train=24, num_test=1, seed=0)  # 24 pairs: ~200,000 views a task
    sampler = batching.TaskSampler(tasks, LearnerConfig(augment=True, augment_colours=True), 4)
    for _ in range(50):
        for s in sampler.make_samples(sampler.sample_task(), 8):
            np.testing.assert_allclose(s.features, task_features(list(s.demos), s.query), rtol=1e-6, atol=1e-6)
        assert len(sampler._features) <= 16
    assert len(sampler._features) == 16
