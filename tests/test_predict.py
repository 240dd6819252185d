"""efe_ray/evaluation/predict.py: predictions, the held-out scores' definition, and test-time
adaptation on a task's own demonstrations with a fresh optimizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import efe_ray.evaluation.predict as predict_mod
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.evaluation.predict import adapt, evaluate, predict, predict_logits
from efe_ray.evaluation.scoring import cell_accuracy
from efe_ray.learner import EFELearner


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


def test_adaptation_trains_on_the_tasks_demonstrations_only(make_learner, monkeypatch):
    """Every batch of the adaptation holds views of the task's demonstration pairs only (no test
    pair, no rehearsal of the tasks the learner trained on), and its optimizer starts fresh."""
    trained = synthetic_tasks(side=4, num_train=4, seed=0, prefix="tr")
    learner, sampler = make_learner(trained, batch_size=4, rehearsal=4)
    for i in range(3):
        learner.step(sampler.batch(trained[i]))
    kept = {k: v.clone() for k, v in learner.agent.state_dict().items()}
    task = synthetic_tasks(side=4, num_train=3, num_test=1, seed=5, prefix="ev")[1]
    demo_keys = {p.key() for p in task.train}

    batches = []
    real_step = EFELearner.step
    monkeypatch.setattr(EFELearner, "step", lambda self, batch, delta=None: batches.append(batch)
                        or real_step(self, batch, delta))
    adapted, losses = adapt(learner, task, steps=3, seed=0)
    assert len(losses) == len(batches) == 3 and all(np.isfinite(losses))
    for batch in batches:
        assert batch.task_id == task.task_id and batch.rehearsal == () and len(batch.samples) == 4
        for s in batch.samples:
            seen = {Pair(s.aug.invert(d.input), s.aug.invert(d.output)).key() for d in s.demos}
            query = Pair(s.aug.invert(s.query), s.aug.invert(s.target)).key()
            assert query in demo_keys and seen <= demo_keys - {query}
    steps = {int(s["step"]) for s in adapted.optimizer.state_dict()["state"].values()}
    assert max(steps) == 3  # a fresh optimizer: 3 steps, not the training run's 3 + 3
    assert all(torch.equal(kept[k], v) for k, v in learner.agent.state_dict().items())  # the original is untouched
    assert adapted.steps == learner.steps + 3
