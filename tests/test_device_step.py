"""The learner step on device-drawn batches: the same loss and gradients as the host path for the same
views; no host read inside a step; one read per refiner action of K steps; observations from cached
features; the one-hot lookups equal indexing; and the layering of data/ below models/ and evaluation/."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the env)
from efe_ray.config import LearnerConfig
from efe_ray.data.device_sampler import DeviceSampler
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.learner import METRICS, EFELearner
from efe_ray.models.agent import lookup
from tuning.presets import build_config

ROOT = Path(__file__).resolve().parents[1]


def _pair(make_learner, **kw):
    """Two learners with the same weights and a device sampler over the same tasks."""
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)
    a, _ = make_learner(tasks, **kw)
    b, _ = make_learner(tasks, **kw)
    return a, b, DeviceSampler(tasks, a.cfg, a.agent_cfg.canvas), tasks


@pytest.mark.parametrize("kw", [dict(augment=True, cache_every=2), dict(augment=False, batch_size=3, rehearsal=5)])
def test_a_device_batch_trains_exactly_as_the_host_batch_of_the_same_views(make_learner, kw):
    a, b, sampler, tasks = _pair(make_learner, **kw)
    rng = np.random.default_rng(0)
    for i in range(5):
        batch = sampler.batch(tasks[i % 3])
        delta = (0.1 * rng.standard_normal(a.prompt.cfg.prompt_dim)).astype(np.float32)
        ma, mb = a.step(batch, delta), b.step(batch.host_batch(), delta)
        for k in METRICS:
            assert ma[k] == pytest.approx(mb[k], rel=1e-5, abs=1e-6), (i, k)
        for (name, pa), pb in zip(a.agent.named_parameters(), b.agent.parameters()):
            torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)  # the gradients were the same
    assert a.steps == b.steps == 5 and a.text_cache.keys() == b.text_cache.keys()


class HostRead(AssertionError):
    pass


@contextlib.contextmanager
def no_host_reads():
    """Make every way of reading a tensor's value on the host raise."""
    names = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name):
        def method(self, *args, **kwargs):
            raise HostRead(f"Tensor.{name} read a value back inside a learner step")
        return method

    try:
        for n in names:
            setattr(torch.Tensor, n, refuse(n))
        yield
    finally:
        for n, m in saved.items():
            setattr(torch.Tensor, n, m)


def test_a_training_step_reads_nothing_back(make_learner):
    learner, _, sampler, tasks = _pair(make_learner, augment=True, cache_every=3)
    learner.step(sampler.batch(tasks[1]))  # the first step on a task fills the text rows it needs
    delta = np.full(learner.prompt.cfg.prompt_dim, 0.05, np.float32)
    batches = [sampler.batch(tasks[i % 3]) for i in range(4)]  # fresh and cached Qwen steps
    with no_host_reads():
        values = [learner.train_step(b, delta) for b in batches]
    assert all(v.shape == (len(METRICS),) for v in values) and learner.steps == 5
    with pytest.raises(HostRead):  # the guard works: the compatibility wrapper reads once
        with no_host_reads():
            learner.step(sampler.batch(tasks[0]))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_training_step_with_the_arc_recipe_reads_nothing_back(tiny_prompt, tiny_agent, precision):
    """Warm-up and cosine schedule, the average of the weights and the task table's sign-SGD, on."""
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)
    cfg = LearnerConfig(batch_size=2, rehearsal=2, cache_every=3, precision=precision, warmup_steps=2,
                        lr_schedule="cosine", schedule_steps=10, ema_decay=0.9, task_lr=0.01, task_weight_decay=0.1)
    learner = EFELearner(tiny_prompt(task_embedding=True), tiny_agent(), cfg, task_ids=tuple(t.task_id for t in tasks))
    sampler = DeviceSampler(tasks, cfg, 6)
    learner.step(sampler.batch(tasks[1]))  # the first step on a task fills the text rows it needs
    batches = [sampler.batch(tasks[i % 3]) for i in range(4)]
    delta = np.full(learner.prompt.cfg.prompt_dim, 0.05, np.float32)
    with no_host_reads():
        values = [learner.train_step(b, delta) for b in batches]
    assert all(v.shape == (len(METRICS),) for v in values) and learner.steps == 5
    assert float(torch.stack(values)[:, METRICS.index("skipped")].sum()) == 0.0
    assert learner.prompt.task_table[:3].abs().sum() > 0  # the table's own update ran
    average = learner.ema.state_dict()["agent"]
    assert any(not torch.equal(average[n], p) for n, p in learner.agent.named_parameters())  # so did the average


def test_a_non_finite_step_is_skipped_on_the_device(make_learner):
    learner, _, sampler, tasks = _pair(make_learner)
    before = {k: v.clone() for k, v in learner.agent.state_dict().items()}
    with torch.no_grad():
        learner.prompt.numeric[0].weight[0, 0] = float("nan")  # every prompt, hence the loss, is NaN
    with no_host_reads():
        values = learner.train_step(sampler.batch(tasks[0]))
    assert values[METRICS.index("skipped")] == 1.0 and learner.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in learner.agent.state_dict().items())
    assert all(int(s["step"]) == 0 for s in learner.optimizer.state.values())  # the step count was restored


def _trainee(k: int):
    from envs.trainee import build_trainee

    cfg = build_config("smoke", [f"env.learner_steps_per_action={k}", "learner.agent_lr=0.005"])
    return build_trainee(cfg)


def test_one_action_runs_k_learner_steps_and_reads_the_device_once(monkeypatch):
    trainee = _trainee(3)
    task = trainee.sampler.sample_task()
    trainee.observation(task)  # the first observation of a task encodes its prompt
    rewards, real = [], trainee.learner.train_step

    def recording(batch, delta=None):
        values = real(batch, delta)
        rewards.append(values[METRICS.index("reward")].clone())
        return values

    monkeypatch.setattr(trainee.learner, "train_step", recording)
    reads, cpu = [], torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **kw: reads.append(self.shape) or cpu(self, *a, **kw))
    delta = trainee.refiner.delta(np.full(trainee.cfg.env.action_dim, 0.5, np.float32))
    metrics, prompt = trainee.act(task, delta)
    assert trainee.learner.steps == 3 and len(rewards) == 3 and len(reads) == 1
    monkeypatch.undo()
    assert metrics["reward"] == pytest.approx(float(torch.stack(rewards).mean()), abs=1e-6)
    assert prompt.shape == (trainee.cfg.prompt.prompt_dim,)
    assert np.allclose(trainee.observation(task)[: len(prompt)], prompt, atol=1e-6)  # the prompt after the steps


def test_the_env_counts_actions_per_episode_and_k_steps_per_action():
    import gymnasium as gym

    env = gym.make("efe_ray/ArcPrompt-v0", trainee=_trainee(2)).unwrapped
    env.reset(seed=0)
    steps = []
    for _ in range(env.steps_per_episode):
        _, reward, terminated, _, info = env.step(env.action_space.sample())
        steps.append(info["steps"])
        assert np.isfinite(reward)
    assert terminated and steps == [2.0 * (i + 1) for i in range(env.steps_per_episode)]


def test_observations_read_each_tasks_features_once(monkeypatch):
    import envs.trainee as trainee_module

    trainee = _trainee(1)
    calls = []
    real = trainee_module.canonical_features
    monkeypatch.setattr(trainee_module, "canonical_features", lambda task: calls.append(task.task_id) or real(task))
    for _ in range(3):
        for task in trainee.train_tasks:
            trainee.observation(task)
    assert sorted(calls) == sorted(t.task_id for t in trainee.train_tasks)


@pytest.mark.parametrize("copies", [1, 3])
def test_the_one_hot_lookup_equals_indexing_in_values_and_gradients(copies):
    g = torch.Generator().manual_seed(0)
    table = torch.randn(copies, 11, 16, generator=g, requires_grad=True)
    index = torch.randint(0, 11, (copies, 5, 7, 7), generator=g)
    got = lookup(index, table)
    want = table[torch.arange(copies)[:, None, None, None], index]
    assert torch.equal(got, want)  # exact: one product with 1, the rest zeros
    grad = torch.randn(got.shape, generator=g)
    (ga,) = torch.autograd.grad(got, table, grad)
    (gb,) = torch.autograd.grad(want, table, grad)
    torch.testing.assert_close(ga, gb, rtol=1e-6, atol=1e-6)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_data_imports_nothing_from_the_layers_above_it():
    above = ("efe_ray.models", "efe_ray.evaluation", "efe_ray.checkpoint", "efe_ray.learner", "efe_ray.rl", "envs")
    for path in sorted((ROOT / "efe_ray" / "data").glob("*.py")):
        bad = [m for m in _imports(path) if m.startswith(above)]
        assert not bad, f"{path.name} imports {bad}"
    assert not [m for m in _imports(ROOT / "envs" / "observation.py") if m.startswith("efe_ray.evaluation")]


def test_a_store_in_another_order_than_the_learners_tasks_maps_its_rows(tiny_prompt, tiny_agent):
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)
    cfg = LearnerConfig(batch_size=4, rehearsal=4)
    ids = tuple(t.task_id for t in tasks)
    a, b = (EFELearner(tiny_prompt(task_embedding=True), tiny_agent(), cfg, task_ids=ids) for _ in range(2))
    sampler = DeviceSampler(list(reversed(tasks)), cfg, 6)  # store rows are the reverse of the learners'
    for i in range(3):
        batch = sampler.batch(tasks[i])
        ma, mb = a.step(batch), b.step(batch.host_batch())
        assert ma["loss"] == pytest.approx(mb["loss"], rel=1e-5)
    torch.testing.assert_close(a.prompt.task_table, b.prompt.task_table)
    assert a.prompt.task_table[:3].abs().sum() > 0  # the rows of the tasks trained on moved


def test_rows_of_a_store_follow_the_text_cache_a_load_puts_in_place(make_learner):
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)
    a, _ = make_learner(tasks)  # no task ids: the cache's rows come in the order tasks are first seen
    b, _ = make_learner(tasks)
    forward, backward = (DeviceSampler(order, a.cfg, 6) for order in (tasks, list(reversed(tasks))))
    a.step(forward.batch(tasks[0]))
    b.step(backward.batch(tasks[0]))  # b's cache numbers the tasks the other way round
    batch = forward.batch(tasks[1])
    a.load_state_dict(b.state_dict())
    host, device = a._rows(batch)
    assert [a.text_cache.ids[r] for r in host] == batch.task_ids() and torch.equal(torch.as_tensor(host), device)
