"""The baselines (efe_ray.evaluation.baselines): copying the input, and the rule fitted to the demos."""

from __future__ import annotations

import numpy as np
import pytest

from efe_ray.evaluation.baselines import copy_input, demo_rule, fitting_rules
from efe_ray.evaluation.scoring import score_task

from helpers_eval import make_task, rule_task


def test_copy_input_solves_identity_and_not_flip():
    ident = rule_task("ident", lambda g: g)
    flip = rule_task("flip", lambda g: g[:, ::-1])
    for task, solved in ((ident, 1), (flip, 0)):
        s = score_task(task.task_id, copy_input(task), [p.output for p in task.test], [p.input for p in task.test])
        assert s.num_solved == solved


@pytest.mark.parametrize("fn", [
    lambda g: g[:, ::-1],                                        # flip left-right
    lambda g: np.rot90(g),                                       # rotate (shape changes)
    lambda g: np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 9])[g],        # colour map
    lambda g: np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 9])[g.T],      # transpose + colour map
])
def test_demo_rule_solves_rule_tasks(fn):
    task = rule_task("r", fn, n_test=2, shape=(5, 6))  # 90 demo cells: every colour is seen
    attempts = demo_rule(task)
    s = score_task("r", attempts, [p.output for p in task.test], [p.input for p in task.test])
    assert s.num_solved == 2
    assert fitting_rules(task)


def test_demo_rule_falls_back_to_copy():
    task = make_task("noise", [([[1, 2]], [[3]]), ([[2, 1]], [[4, 4]])], [([[5, 5]], None)])
    assert demo_rule(task)[0][0].tolist() == [[5, 5]]
