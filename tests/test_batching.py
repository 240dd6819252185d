"""efe_ray/data/batching.py: leave-one-out views, rehearsal, the curriculum, a batch's tensors and
masks, canvases smaller than the agent's, and the sampler's state."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from efe_ray.config import LearnerConfig
from efe_ray.data.batching import FAR_WEIGHT, MAX_DEMOS, Curriculum, TaskSampler, known_pairs, task_difficulty
from efe_ray.data.features import task_features
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.models.agent import OUTSIDE

CPU = torch.device("cpu")


def test_views_are_leave_one_out_and_rehearsal_comes_from_other_tasks():
    tasks = synthetic_tasks(side=4, num_train=6, num_test=1, seed=3)
    sampler = TaskSampler(tasks, LearnerConfig(batch_size=8, rehearsal=5, augment=False), side=6)
    batch = sampler.batch(tasks[0])
    assert batch.task_id == tasks[0].task_id and len(batch.samples) == 8 and len(batch.rehearsal) == 5
    pairs = {p.key(): p for p in known_pairs(tasks[0])}
    for s in batch.samples:
        query = Pair(s.query, s.target)
        assert query.key() in pairs  # a known pair of the task...
        assert all(d.key() in pairs and d.key() != query.key() for d in s.demos)  # ...left out of its demos
        assert len(s.demos) == MAX_DEMOS
    assert {k for k, _ in batch.rehearsal} <= {t.task_id for t in tasks[1:]}


def test_batch_tensors_and_masks():
    task = Task("t", (Pair(as_grid([[1, 2, 3]]), as_grid([[4], [5]])), Pair(as_grid([[7]]), as_grid([[8]]))), ())
    sampler = TaskSampler([task], LearnerConfig(batch_size=6, rehearsal=3, augment=False), side=5)
    assert sampler.batch(task).side == 3  # by default the largest grid of a view: the 1x3 input
    batch = sampler.batch(task, side=5)
    assert batch.rehearsal == ()  # no other task to rehearse
    t = batch.tensors(CPU)
    assert t.canvas.shape == t.target.shape == t.loss_mask.shape == (6, 5, 5) and t.features.shape == (6, 15)
    assert t.canvas.dtype == t.target.dtype == torch.long and t.loss_mask.dtype == torch.float32
    assert t.view.tolist() == [0] * 6
    for i, s in enumerate(batch.samples):
        assert s.side == 3
        if s.query.shape == (1, 3):  # input 1x3, output 2x1: weight 1 over 3x4 (the larger extent + a border)
            assert t.loss_mask[i].sum() == 12 and t.loss_mask[i, :3, :4].eq(1).all()
            assert t.target_mask[i].sum() == 2 and t.target_mask[i, :2, :1].all()
            assert t.target[i, :2, 0].tolist() == [4, 5] and (t.target[i, :, 1:] == OUTSIDE).all()
        else:  # 1x1 -> 1x1: weight 1 on 2x2, FAR_WEIGHT on the rest of the view's 3x3 square, 0 beyond
            assert t.loss_mask[i, :2, :2].eq(1).all() and t.target_mask[i].sum() == 1
            assert t.loss_mask[i].sum().item() == pytest.approx(4 + 5 * FAR_WEIGHT)
            assert t.loss_mask[i, 3:].sum() == 0 and t.loss_mask[i, :, 3:].sum() == 0
        np.testing.assert_array_equal(t.features[i].numpy(), task_features(s.demos, s.query))


def test_views_carry_their_d8_transform():
    tasks = synthetic_tasks(side=4, seed=0)
    sampler = TaskSampler(tasks, LearnerConfig(batch_size=16, rehearsal=4, augment_colours=False), side=6)
    batch = sampler.batch(tasks[0])
    t = batch.tensors(CPU)
    every = list(batch.samples) + [s for _, s in batch.rehearsal]
    assert t.view.tolist() == [s.aug.d8 for s in every] and len(set(t.view.tolist())) > 1
    assert all(s.aug.colours == tuple(range(10)) for s in every)  # colours stay: augment_colours=False
    assert batch.task_ids() == [tasks[0].task_id] * 16 + [k for k, _ in batch.rehearsal]


def test_rehearsal_window_draws_tasks_of_similar_size():
    small = synthetic_tasks(side=3, seed=0, prefix="s")
    large = synthetic_tasks(side=20, seed=0, prefix="l")
    sampler = TaskSampler(small + large, LearnerConfig(batch_size=2, rehearsal=40, rehearsal_window=2), side=30)
    batch = sampler.batch(small[0])
    assert {k for k, _ in batch.rehearsal} <= {t.task_id for t in small[1:]}
    assert batch.side == 3  # no 20x20 grid in the batch: the canvas stays small


def test_a_smaller_canvas_is_a_batch_parameter():
    tasks = synthetic_tasks(side=4, seed=0)
    sampler = TaskSampler(tasks, LearnerConfig(batch_size=2, rehearsal=1), side=6)
    assert sampler.batch(tasks[0]).tensors(CPU).canvas.shape == (3, 4, 4)
    assert sampler.batch(tasks[0], side=6).tensors(CPU).canvas.shape == (3, 6, 6)
    with pytest.raises(ValueError, match=r"batch canvas side 7 must lie in 4..6"):
        sampler.batch(tasks[0], side=7)
    with pytest.raises(ValueError, match=r"batch canvas side 3 must lie in 4..6"):
        sampler.batch(tasks[0], side=3)


def test_curriculum_easy_share_by_epoch():
    small = synthetic_tasks(side=3, seed=0, prefix="small")  # difficulty 9, 9, 2 (crop: 1 cell, resized)
    large = synthetic_tasks(side=6, seed=0, prefix="large")  # difficulty 36, 36, 18
    assert [task_difficulty(t) for t in small + large] == [9.0, 9.0, 2.0, 36.0, 36.0, 18.0]
    tasks = (small + large) * 500  # 3000 tasks: an epoch is 3000 draws
    cur = Curriculum(tasks, 0.6, 0.3)
    easy_ids = {t.task_id for t in small}
    assert {tasks[i].task_id for i in cur.easy} == easy_ids
    assert {tasks[i].task_id for i in cur.hard} == {t.task_id for t in large}

    rng = np.random.default_rng(0)
    first = [cur.sample(rng).task_id in easy_ids for _ in range(3000)]
    assert cur.draws == 3000 and cur.epoch == 1 and cur.easy_share == 0.3
    later = [cur.sample(rng).task_id in easy_ids for _ in range(3000)]
    assert cur.epoch == 2
    assert abs(np.mean(first) - 0.6) < 0.03
    assert abs(np.mean(later) - 0.3) < 0.03


def test_sampler_curriculum_advances_after_len_tasks_draws():
    tasks = synthetic_tasks(side=3, seed=0, prefix="small") + synthetic_tasks(side=6, seed=0, prefix="large")
    sampler = TaskSampler(tasks, LearnerConfig(easy_share_first_epoch=0.9, easy_share_later=0.1), side=6)
    for _ in range(5):
        sampler.sample_task()
    assert sampler.curriculum.epoch == 0 and sampler.curriculum.easy_share == 0.9
    sampler.sample_task()
    assert sampler.curriculum.epoch == 1 and sampler.curriculum.easy_share == 0.1


def test_state_round_trip_continues_the_same_draws():
    tasks = synthetic_tasks(side=4, seed=0)
    cfg = LearnerConfig(batch_size=3, rehearsal=2)
    a = TaskSampler(tasks, cfg, side=6)
    for _ in range(4):
        a.batch(a.sample_task())
    b = TaskSampler(tasks, dataclasses.replace(cfg, seed=7), side=6)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        ta, tb = a.sample_task(), b.sample_task()
        assert ta.task_id == tb.task_id
        xa, xb = a.batch(ta), b.batch(tb)
        assert xa.prompt_texts() == xb.prompt_texts()
        assert [s.aug for s in xa.samples] == [s.aug for s in xb.samples]
    assert a.state_dict() == b.state_dict() and a.state_dict()["curriculum_draws"] == 7


def test_tasks_with_fewer_than_two_known_pairs_are_refused():
    lonely = Task("lonely", (Pair(as_grid([[1]]), as_grid([[2]])),), (Pair(as_grid([[3]]), None),), "file.json")
    with pytest.raises(ValueError, match=r"'lonely' \(file.json\) has fewer than 2 known pairs"):
        TaskSampler([lonely], LearnerConfig(), side=6)
    with pytest.raises(ValueError, match="at least one task"):
        TaskSampler([], LearnerConfig(), side=6)
