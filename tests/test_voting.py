"""Voting over candidate answers (efe_ray.evaluation.voting): undoing augmentations, majority, ties."""

from __future__ import annotations

import numpy as np
import pytest

from efe_ray.data.augment import Augmentation, all_d8
from efe_ray.evaluation.voting import rank, vote, vote_augmented

from helpers_eval import random_grid


def test_vote_undoes_augmentations():
    rng = np.random.default_rng(0)
    answer = random_grid(rng, 3, 5)  # non-square and asymmetric: every D8 image differs
    augs = [Augmentation(a.d8, Augmentation.random(rng).colours) for a in all_d8()]
    cands = [(aug, aug.apply(answer), -0.1 * i) for i, aug in enumerate(augs)]
    assert len({aug.apply(answer).tobytes() + bytes(aug.apply(answer).shape) for aug in augs}) > 1
    a1, a2 = vote_augmented(cands)
    np.testing.assert_array_equal(a1, answer)
    np.testing.assert_array_equal(a2, answer)  # one distinct candidate: attempt 2 repeats it


def test_majority_beats_a_confident_minority_and_score_breaks_count_ties():
    x, y, z = np.array([[1]]), np.array([[2]]), np.array([[3, 3]])
    a1, a2 = vote([(x, -5.0), (y, -0.01), (x, -5.0), (z, -1.0)])
    assert a1.tolist() == [[1]]  # 2 votes beat 1, whatever the scores
    assert a2.tolist() == [[2]]  # y and z have one vote each; y's score is higher
    ranked = rank([(x, -1.0), (y, -0.5)])
    assert [r.grid.tolist() for r in ranked] == [[[2]], [[1]]]


def test_tie_break_is_deterministic_under_candidate_order():
    rng = np.random.default_rng(1)
    cands = [(np.array([[c]]), -1.0) for c in (4, 2, 7, 2, 4, 7)]  # three grids, equal counts and scores
    outcomes = set()
    for _ in range(10):
        order = rng.permutation(len(cands))
        a1, a2 = vote([cands[i] for i in order])
        outcomes.add((a1.tobytes(), a2.tobytes()))
    assert len(outcomes) == 1
    assert vote(cands)[0].tolist() == [[2]] and vote(cands)[1].tolist() == [[4]]
    with pytest.raises(ValueError):
        vote([])
