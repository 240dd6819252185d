"""efe_ray/evaluation/predict.py: predictions and the held-out scores' definition (test-time adaptation:
tests/test_solve.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import efe_ray.evaluation.predict as predict_mod
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.evaluation.predict import evaluate, predict, predict_logits
from efe_ray.evaluation.scoring import cell_accuracy


def test_predict_logits_are_log_probabilities_on_the_canvas(make_learner):
    learner, sampler = make_learner()
    task = sampler.tasks[0]
    logp = predict_logits(learner, task.train, [p.input for p in task.test] * 2)
    assert logp.shape == (2, 4, 4, 11)  # the side of the task's largest grid, not the agent's 6
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 4, 4))
    grids = predict(learner, task)
    assert len(grids) == 1 and grids[0].ndim == 2


def test_held_out_cell_accuracy_is_scorings(make_learner, monkeypatch):
    """eval/cell_acc is the mean over outputs of scoring.cell_accuracy: a wrong-shaped prediction
    scores 0 (the canvas cells it shares with the target do not count); eval/exact the share of
    outputs predicted exactly; outputs without a known target are not scored."""
    target_a, target_b = as_grid([[1, 2], [3, 4]]), as_grid([[5, 5, 5]])
    task = Task("t", (Pair(target_a, target_a),) * 2,
                (Pair(target_a, target_a), Pair(target_b, target_b), Pair(target_b, None)))
    answers = [as_grid([[1, 2], [3, 0]]), as_grid([[5, 5, 5], [0, 0, 0]]), as_grid([[1]])]
    monkeypatch.setattr(predict_mod, "predict", lambda learner, task, delta=None: answers)
    learner, _ = make_learner()
    scores = evaluate(learner, [task])
    assert cell_accuracy(answers[1], target_b) == 0.0
    assert scores == {"cell_acc": pytest.approx((0.75 + 0.0) / 2), "exact": 0.0, "outputs": 2.0,
                      "score": pytest.approx(0.0 + 0.375 / 1000)}
    answers[0] = target_a
    assert evaluate(learner, [task]) == {"cell_acc": pytest.approx(0.5), "exact": 0.5, "outputs": 2.0,
                                         "score": pytest.approx(0.5 + 0.5 / 1000)}


def test_observe_takes_the_last_demonstration_as_query_when_a_task_has_no_test_input(make_learner):
    """An evaluation task trained on blinded has no test pair left (data.transductive): the policy's
    observation then reads its last demonstration's input as the query, never an output."""
    from efe_ray.data.features import task_features
    from efe_ray.evaluation.predict import observe

    learner, sampler = make_learner()
    full = sampler.tasks[0]
    demos_only = Task(full.task_id, full.train, ())
    prompt, feats = observe(learner, demos_only)
    assert prompt.shape == (learner.prompt.cfg.prompt_dim,) and np.isfinite(prompt).all()
    np.testing.assert_array_equal(feats, task_features(full.train[:-1], full.train[-1].input))
