"""Candidates scored under augmented views (product of experts) and the output-size prior."""

from __future__ import annotations

import math

import numpy as np
import pytest

from efe_ray.data.augment import Augmentation
from efe_ray.evaluation.candidates import (
    SIZE_PENALTY, View, canvas_log_prob, predicted_sizes, product_of_experts, propose, rank, size_log_prior,
)
from efe_ray.evaluation.voting import vote_augmented
from efe_ray.models.agent import OUTSIDE


def grid(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 10, (h, w)).astype(np.int64)


def confident(canvas: np.ndarray, p: float = 0.9) -> np.ndarray:
    """(S, S, 11) log-probabilities putting ``p`` on ``canvas``'s class at every cell."""
    s = canvas.shape[0]
    probs = np.full((s, s, 11), (1 - p) / 10)
    rows, cols = np.indices((s, s))
    probs[rows, cols, canvas] = p
    return np.log(probs)


def padded(g: np.ndarray, s: int) -> np.ndarray:
    c = np.full((s, s), OUTSIDE, dtype=np.int64)
    c[: g.shape[0], : g.shape[1]] = g
    return c


@pytest.mark.parametrize("demo_shapes, query, expected", [
    ([((3, 4), (3, 4)), ((5, 2), (5, 2))], (6, 7), [(6, 7)]),  # same size
    ([((3, 4), (6, 8)), ((2, 5), (4, 10)), ((4, 4), (8, 8))], (5, 3), [(10, 6)]),  # doubled
    ([((3, 4), (2, 2)), ((5, 5), (2, 2))], (9, 9), [(2, 2)]),  # constant
    ([((3, 4), (4, 3)), ((2, 5), (5, 2))], (6, 7), [(7, 6)]),  # transposed
    ([((3, 4), (5, 6)), ((2, 5), (4, 7)), ((6, 3), (8, 5))], (6, 7), [(8, 9)]),  # a one-cell border
    ([((3, 4), (6, 8)), ((2, 2), (4, 4))], (5, 3), [(5, 6), (10, 6)]),  # two demos: two rules hold
    ([((3, 4), (5, 1)), ((2, 2), (7, 9))], (6, 7), []),  # no rule for the height
])
def test_size_rules_on_demonstrations(demo_shapes, query, expected):
    demos = [(np.zeros(i, np.int64), np.zeros(o, np.int64)) for i, o in demo_shapes]
    assert predicted_sizes(demos, np.zeros(query, np.int64)) == expected


def test_a_ratio_that_gives_no_whole_size_is_no_prediction():
    demos = [(np.zeros((4, 6)), np.zeros((2, 3))), (np.zeros((8, 2)), np.zeros((4, 1)))]
    assert predicted_sizes(demos, np.zeros((6, 4))) == [(3, 2)]
    assert predicted_sizes(demos, np.zeros((5, 4))) == []  # half of 5 rows is no whole size


def test_size_prior_penalises_only_where_a_rule_holds():
    assert size_log_prior((3, 3), [(3, 3)]) == 0.0
    assert size_log_prior((4, 3), [(3, 3)]) == -SIZE_PENALTY
    assert size_log_prior((4, 3), []) == 0.0


def test_canvas_log_prob_matches_a_loop():
    rng = np.random.default_rng(1)
    logp = np.log(rng.dirichlet(np.ones(11), size=(5, 5)))
    g = grid(3, 2, seed=2)
    expected = 0.0
    for i in range(5):
        for j in range(5):
            cls = g[i, j] if i < 3 and j < 2 else OUTSIDE
            expected += logp[i, j, cls]
    assert canvas_log_prob(g, logp) == pytest.approx(expected)
    assert canvas_log_prob(grid(6, 1), logp) == -math.inf


def test_product_of_experts_sums_the_views_in_their_own_frames():
    s, g = 4, grid(3, 2, seed=3)
    views = [View(a, confident(padded(a.apply(g), s))) for a in (Augmentation(0), Augmentation(1), Augmentation(5))]
    expected = sum(canvas_log_prob(v.aug.apply(g), v.logp) for v in views)
    assert product_of_experts(g, views) == pytest.approx(expected)
    assert expected == pytest.approx(3 * 16 * math.log(0.9))  # every view agrees on every cell


def test_scoring_under_all_views_finds_the_answer_that_count_voting_misses():
    """The known answer is each view's second choice by a hair in two views and a clear first in the
    third; a wrong grid wins two views narrowly and is very unlikely in the third. Voting by counts
    picks the wrong grid; the product of experts picks the answer."""
    s, answer = 3, np.array([[1, 2], [3, 4]], dtype=np.int64)
    wrong = answer.copy()
    wrong[0, 0] = 5
    augs = [Augmentation(0), Augmentation(2), Augmentation(7)]
    views = []
    for k, a in enumerate(augs):
        good, bad = padded(a.apply(answer), s), padded(a.apply(wrong), s)
        probs = np.full((s, s, 11), 0.01)
        rows, cols = np.indices((s, s))
        probs[rows, cols, good] = 0.5
        if k < 2:  # the wrong colour wins this view narrowly at its cell
            diff = good != bad
            probs[diff, bad[diff]] = 0.51
        else:  # and is very unlikely here
            diff = good != bad
            probs[diff, bad[diff]] = 1e-6
        views.append(View(a, np.log(probs / probs.sum(-1, keepdims=True))))
    count_vote = vote_augmented([(v.aug, v.logp.argmax(-1)[:2, :2], 0.0) for v in views])
    assert np.array_equal(count_vote[0], wrong)
    best = rank(views, sizes=[(2, 2)])
    assert np.array_equal(best[0].grid, answer)
    assert any(np.array_equal(c.grid, wrong) for c in best[1:])


def test_propose_crops_colours_to_the_predicted_size():
    """The read-off misses the last column (OUTSIDE predicted there); the size rule restores it."""
    s, answer = 4, grid(3, 3, seed=4)
    canvas = padded(answer, s)
    logp = confident(canvas)
    logp[0, 2, OUTSIDE] = math.log(0.95)  # the first row's third cell looks OUTSIDE: read-off is 3x2
    view = View(Augmentation(0), logp)
    cands = propose([view], sizes=[(3, 3)])
    assert any(np.array_equal(c, answer) for c in cands)
    assert cands[0].shape == (3, 2)


def test_rank_does_not_depend_on_the_order_of_views():
    s, answer = 5, grid(4, 3, seed=5)
    rng = np.random.default_rng(6)
    views = [View(a, np.log(rng.dirichlet(np.ones(11), size=(s, s)))) for a in
             (Augmentation(0), Augmentation(3), Augmentation(4), Augmentation(6))]
    views.append(View(Augmentation(0), confident(padded(answer, s))))
    a = [(c.grid.tobytes(), c.grid.shape, round(c.score, 9)) for c in rank(views, [(4, 3)])]
    b = [(c.grid.tobytes(), c.grid.shape, round(c.score, 9)) for c in rank(views[::-1], [(4, 3)])]
    assert sorted(a) == sorted(b) and a[0] == b[0]
