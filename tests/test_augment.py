"""Tests for efe_ray.data.augment: D8 x colour-permutation augmentations and their inverses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efe_ray.data.augment import Augmentation, all_d8
from efe_ray.data.task import Pair, Task, as_grid

from strategies import SETTINGS, grids


perms = st.permutations(list(range(10))).map(tuple)
augmentations = st.builds(Augmentation, d8=st.integers(0, 7), colours=perms)


def _check_out(grid: np.ndarray) -> None:
    assert grid.dtype == np.int64
    assert grid.flags["C_CONTIGUOUS"]


# ---------------------------------------------------------------------- properties


@SETTINGS
@given(grids(), augmentations)
def test_invert_after_apply_is_identity(grid, aug):
    out = aug.apply(grid)
    _check_out(out)
    back = aug.invert(out)
    _check_out(back)
    np.testing.assert_array_equal(back, grid)


@SETTINGS
@given(grids(), augmentations)
def test_apply_after_invert_is_identity(grid, aug):
    np.testing.assert_array_equal(aug.apply(aug.invert(grid)), grid)


@SETTINGS
@given(grids(), augmentations)
def test_inverse_apply_equals_invert(grid, aug):
    inv = aug.inverse()
    np.testing.assert_array_equal(inv.apply(grid), aug.invert(grid))
    assert inv.inverse() == aug


@SETTINGS
@given(augmentations)
def test_dict_round_trip(aug):
    d = json.loads(json.dumps(aug.to_dict()))
    assert Augmentation.from_dict(d) == aug


@SETTINGS
@given(grids(), st.integers(0, 7))
def test_shapes(grid, d8):
    h, w = grid.shape
    out = Augmentation(d8).apply(grid)
    expected = (w, h) if d8 in (1, 3, 4, 6) else (h, w)
    assert out.shape == expected
    assert Augmentation(d8).swaps_axes == (d8 in (1, 3, 4, 6))


@SETTINGS
@given(grids())
def test_rot90_maps_shape(grid):
    h, w = grid.shape
    assert Augmentation(1).apply(grid).shape == (w, h)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_random_fix_zero(seed, geometric, colours):
    aug = Augmentation.random(np.random.default_rng(seed), fix_zero=True, geometric=geometric, colours=colours)
    assert aug.colours[0] == 0
    assert aug.fixes_zero
    if not geometric:
        assert aug.d8 == 0
    if not colours:
        assert aug.colours == tuple(range(10))
    grid = np.array([[0, 1, 2], [3, 0, 9]])
    out = aug.apply(grid)
    # Zeros stay zeros (moved only by the geometric part), and nothing else becomes 0.
    np.testing.assert_array_equal(out == 0, Augmentation(aug.d8).apply(grid) == 0)


def test_random_without_fix_zero_moves_zero_sometimes():
    rng = np.random.default_rng(0)
    zeros = [Augmentation.random(rng, fix_zero=False).colours[0] for _ in range(200)]
    assert any(z != 0 for z in zeros)


def test_random_is_deterministic_given_seed():
    a = [Augmentation.random(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]


# ---------------------------------------------------------------------- d8


def test_d8_transforms_of_asymmetric_grid_are_distinct():
    grid = np.arange(6).reshape(2, 3)  # no symmetry
    outs = [a.apply(grid) for a in all_d8()]
    keys = {(o.shape, o.tobytes()) for o in outs}
    assert len(keys) == 8
    square = np.array([[1, 2], [3, 4]])
    assert len({a.apply(square).tobytes() for a in all_d8()}) == 8


def test_all_d8():
    augs = all_d8()
    assert [a.d8 for a in augs] == list(range(8))
    assert all(a.colours == tuple(range(10)) for a in augs)
    assert Augmentation.all_d8() == augs
    assert augs[0].is_identity and not any(a.is_identity for a in augs[1:])


G = np.array([[1, 2, 3], [4, 5, 6]])  # (2, 3)

EXPECTED = {
    0: [[1, 2, 3], [4, 5, 6]],
    1: [[3, 6], [2, 5], [1, 4]],  # rotate 90 counter-clockwise
    2: [[6, 5, 4], [3, 2, 1]],
    3: [[4, 1], [5, 2], [6, 3]],  # rotate 90 clockwise
    4: [[1, 4], [2, 5], [3, 6]],  # transpose
    5: [[4, 5, 6], [1, 2, 3]],  # flip upside down
    6: [[6, 3], [5, 2], [4, 1]],  # anti-transpose
    7: [[3, 2, 1], [6, 5, 4]],  # flip left-right
}


@pytest.mark.parametrize("d8", range(8))
def test_d8_hand_examples(d8):
    out = Augmentation(d8).apply(G)
    np.testing.assert_array_equal(out, np.array(EXPECTED[d8]))
    _check_out(out)
    np.testing.assert_array_equal(Augmentation(d8).invert(out), G)


def test_colour_hand_example():
    perm = (0, 2, 1, 3, 4, 5, 6, 7, 9, 8)  # swap 1<->2 and 8<->9
    aug = Augmentation(0, perm)
    grid = np.array([[0, 1, 2], [8, 9, 3]])
    np.testing.assert_array_equal(aug.apply(grid), np.array([[0, 2, 1], [9, 8, 3]]))
    # Non-involutive permutation: 1->2->3->1.
    cyc = (0, 2, 3, 1, 4, 5, 6, 7, 8, 9)
    aug = Augmentation(1, cyc)
    grid = np.array([[1, 2], [3, 0]])
    np.testing.assert_array_equal(aug.apply(grid), np.array([[3, 0], [2, 1]]))
    np.testing.assert_array_equal(aug.invert(np.array([[3, 0], [2, 1]])), grid)
    assert aug.inverse() == Augmentation(3, (0, 3, 1, 2, 4, 5, 6, 7, 8, 9))


def test_apply_accepts_read_only_and_non_contiguous():
    grid = as_grid([[1, 2, 3], [4, 5, 6]])
    out = Augmentation(4).apply(grid[:, ::2])
    np.testing.assert_array_equal(out, np.array([[1, 4], [3, 6]]))
    _check_out(out)


# ---------------------------------------------------------------------- pairs, tasks


def _task() -> Task:
    train = (
        Pair(as_grid([[1, 0], [0, 0]]), as_grid([[2, 2, 0]])),
        Pair(as_grid([[3]]), as_grid([[3, 3], [0, 1]])),
    )
    test = (Pair(as_grid([[0, 5, 5]]), None), Pair(as_grid([[1]]), as_grid([[7]])))
    return Task("abc", train, test, source="x.json")


def test_apply_task_and_back():
    task = _task()
    aug = Augmentation(5, (0, 3, 1, 2, 9, 8, 7, 6, 5, 4))
    out = aug.apply_task(task)
    assert out.task_id == "abc" and out.source == "x.json"
    assert len(out.train) == 2 and len(out.test) == 2
    assert out.test[0].output is None
    np.testing.assert_array_equal(out.train[0].output, np.array([[1, 1, 0]]))
    np.testing.assert_array_equal(out.train[1].output, np.array([[0, 3], [2, 2]]))
    back = aug.inverse().apply_task(out)
    assert back.pair_set_signature() == task.pair_set_signature()
    for p, q in zip(task.train + task.test, back.train + back.test):
        np.testing.assert_array_equal(p.input, q.input)
        assert (p.output is None) == (q.output is None)
        if p.output is not None:
            np.testing.assert_array_equal(p.output, q.output)
    # pair-level inverse
    pair = task.train[0]
    restored = aug.invert_pair(aug.apply_pair(pair))
    assert restored.key() == pair.key()


def test_identity():
    ident = Augmentation.identity()
    assert ident.is_identity
    assert ident == Augmentation()
    assert ident.inverse() == ident
    np.testing.assert_array_equal(ident.apply(G), G)


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize("d8", [-1, 8, 100])
def test_bad_d8(d8):
    with pytest.raises(ValueError):
        Augmentation(d8)


def test_bad_d8_type():
    with pytest.raises(TypeError):
        Augmentation(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Augmentation(True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "colours",
    [(0, 1, 2), (0, 0, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 5, 6, 7, 8, 9, 10), tuple(range(11))],
)
def test_bad_colours(colours):
    with pytest.raises(ValueError):
        Augmentation(0, colours)


def test_from_dict_rejects_junk():
    with pytest.raises(ValueError):
        Augmentation.from_dict({"d8": 0})
    with pytest.raises(ValueError):
        Augmentation.from_dict({"d8": 9, "colours": list(range(10))})


def test_bad_grid():
    with pytest.raises(ValueError):
        Augmentation(0).apply(np.array([1, 2, 3]))
    with pytest.raises(ValueError):
        Augmentation(0).apply(np.array([[10]]))
    with pytest.raises(ValueError):
        Augmentation(0).apply(np.array([[-1]]))
