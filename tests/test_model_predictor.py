"""The model as an evaluation method (efe_ray.evaluation.model): test-time adaptation leaves the
loaded weights alone, a seed fixes the submission, and a prepared predictor ships its weights.

``tiny_checkpoint`` (tests/conftest.py) is built once for this file.
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch

from efe_ray.data.task import Pair, Task
from efe_ray.evaluation.model import ModelPredictor, ModelSettings, cached_model
from efe_ray.evaluation.runner import run_serial
from efe_ray.evaluation.solve import SolveSettings, solve_group
from efe_ray.evaluation.submission import build_submission, validate_submission

from helpers_eval import G, eval_tasks, make_task


def _weights(learner) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m, mod in (("agent", learner.agent), ("prompt", learner.prompt))
            for k, v in mod.state_dict().items()}


def test_tta_leaves_loaded_weights_untouched_and_never_needs_test_outputs(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    learner = cached_model(folder, device="cpu", use_policy=False).learner
    before = _weights(learner)
    task = eval_tasks()[1]
    garbage = Task(task.task_id, task.train, tuple(Pair(p.input, G([[9] * 7] * 7)) for p in task.test))
    rng_before = torch.get_rng_state()
    settings = SolveSettings(tta_steps=2, tta_views=2, augmentations=2, search_steps=1, seed=3)
    one, two = (solve_group(learner, None, [t], settings)[0] for t in (task, garbage))
    assert len(one.methods["model"]) == 2 and len(one.info["tta_loss"]) == 2
    for (a, b), (c, d) in zip(one.methods["model"], two.methods["model"]):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    after = _weights(learner)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's torch RNG is untouched


def test_same_seed_same_submission_and_canvas_fallback(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    tasks = eval_tasks()[:2]
    big = make_task("big", [([[1] * 4] * 4, [[1] * 4] * 4)] * 2, [([[2] * 10] * 10, None)])  # 10x10 > canvas 8
    settings = ModelSettings(SolveSettings(tta_steps=1, tta_views=2, augmentations=2, seed=7), use_policy=False,
                             device="cpu")
    predictor = ModelPredictor(folder, settings)
    clone = pickle.loads(pickle.dumps(predictor))  # what Ray ships: the path and the settings only
    assert len(pickle.dumps(predictor)) < 2000
    subs = []
    for fn, order in ((predictor, tasks + [big]), (clone, [big] + tasks[::-1])):
        results = {r.task_id: r.attempts for r in run_serial(order, fn, progress=False)}
        subs.append(build_submission({t.task_id: results[t.task_id] for t in tasks + [big]}))
    assert subs[0] == subs[1]
    assert validate_submission(subs[0], tasks + [big]) == []
    result = run_serial([big], predictor, progress=False)[0]
    assert result.attempts[0][0].tolist() == [[2] * 10] * 10 and "canvas" in result.note and not result.error


def test_a_prepared_predictor_carries_verified_weights_not_the_path(tiny_checkpoint, tmp_path):
    from ray import cloudpickle

    import efe_ray.evaluation.model as model_mod

    folder, _ = tiny_checkpoint
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    settings = ModelSettings(SolveSettings(augmentations=1), use_policy=False, device="cpu")
    predictor = ModelPredictor(copy, settings)
    predictor.prepare(device="cpu")
    shipped = cloudpickle.dumps(predictor)  # what ray.put sends to the workers
    task = eval_tasks()[0]
    expected = predictor(task).attempts
    shutil.rmtree(copy)  # a worker never reads the folder
    model_mod._CACHE.clear()
    clone = cloudpickle.loads(shipped)
    assert clone._loaded is None
    for (a, b), (c, d) in zip(expected, clone(task).attempts):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_the_precision_setting_overrides_the_checkpoints_and_travels_with_a_prepared_predictor(tiny_checkpoint):
    """--precision: prediction and adaptation run in the precision asked for (the checkpoint's by
    default), in the driver and in a worker that builds from the shipped bytes."""
    from ray import cloudpickle

    import efe_ray.evaluation.model as model_mod

    folder, _ = tiny_checkpoint
    own = cached_model(folder, device="cpu", use_policy=False)
    assert own.cfg.learner.precision == "fp32" and own.learner.autocast_dtype is None
    bf16 = cached_model(folder, device="cpu", use_policy=False, precision="bf16")
    assert bf16.cfg.learner.precision == "bf16" and bf16.learner.autocast_dtype == torch.bfloat16
    assert bf16 is not own and bf16.cfg.agent == own.cfg.agent  # only the precision differs
    for k, v in _weights(own.learner).items():
        assert torch.equal(v, _weights(bf16.learner)[k])  # the same weights, loaded twice
    predictor = ModelPredictor(folder, ModelSettings(SolveSettings(augmentations=1), use_policy=False, device="cpu",
                                                     precision="bf16"))
    predictor.prepare(device="cpu")
    worker = cloudpickle.loads(cloudpickle.dumps(predictor))
    model_mod._CACHE.clear()  # as in a fresh worker process
    assert worker.load().learner.autocast_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision must be one of checkpoint, fp32, bf16, fp16, got 'fp64'"):
        ModelSettings(precision="fp64")


def test_groups_hold_tasks_of_one_side_sorted_and_never_above_the_group_size():
    rng = np.random.default_rng(0)
    sides = [3, 5, 3, 4, 3, 5, 3, 3, 4]
    tasks = [make_task(f"t{i}", [(rng.integers(0, 10, (s, s)).tolist(), [[1]])] * 2, [([[1] * s] * s, None)])
             for i, s in enumerate(sides)]
    groups = ModelPredictor("unused", ModelSettings(group_size=2, device="cpu")).groups(tasks)
    assert [[tasks[i].task_id for i in g] for g in groups] == [
        ["t0", "t2"], ["t4", "t6"], ["t7"], ["t3", "t8"], ["t1", "t5"]]


def test_a_tasks_answers_do_not_depend_on_the_tasks_evaluated_with_it(tiny_checkpoint):
    """Adapted with other tasks of its side and of other sides, or alone, each task gets the same
    attempts, adaptation losses and fit: its group shares its own square, and its copy draws from its
    own stream."""
    folder, _ = tiny_checkpoint
    rng = np.random.default_rng(5)
    other_side = make_task("ev-wide", [(rng.integers(0, 4, (6, 6)).tolist(), rng.integers(0, 4, (6, 6)).tolist())] * 3,
                           [(rng.integers(0, 4, (6, 6)).tolist(), None)])
    tasks = eval_tasks() + [other_side]
    settings = ModelSettings(SolveSettings(tta_steps=12, tta_views=4, augmentations=2, seed=1), use_policy=False,
                             device="cpu", group_size=16)
    predictor = ModelPredictor(folder, settings)
    together = {r.task_id: r for r in run_serial(tasks, predictor, progress=False)}
    for t in tasks:
        alone = run_serial([t], predictor, progress=False)[0]
        mine = together[t.task_id]
        for (a, b), (c, d) in zip(mine.attempts, alone.attempts):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)
        np.testing.assert_allclose(mine.info["tta_loss"], alone.info["tta_loss"], atol=2e-4)
        assert mine.info["tta_demo_exact"] == alone.info["tta_demo_exact"]
