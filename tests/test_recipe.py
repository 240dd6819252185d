"""The ARC recipe's learner pieces, each off by default: the learning-rate schedule, the average of
the weights (EMA) and what evaluates it, and the task table's sign-SGD update. Each against a
formula or a slow reference loop, on the tiny models of tests/conftest.py.
(Their variant of the no-host-read check: tests/test_device_step.py.)"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from efe_ray import checkpoint as ckpt
from efe_ray import export as exp
from efe_ray.config import ConfigError, ExperimentConfig, LearnerConfig, from_dict
from efe_ray.data.batching import TaskSampler
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.evaluation.model import load_model
from efe_ray.evaluation.predict import evaluate
from efe_ray.learner import EFELearner

TASKS = synthetic_tasks(side=4, seed=0, prefix="a") + synthetic_tasks(side=4, seed=1, prefix="b")
"""Six tasks: a step on one (with two rehearsal views) leaves at least three rows of the table alone."""


@pytest.fixture
def recipe(tiny_prompt, tiny_agent):
    """``(**learner_kw) -> (EFELearner, TaskSampler)``: a tiny learner with a task table of
    :data:`TASKS`, two views and two rehearsal views a step."""

    def make(prompt=None, **kw):
        cfg = LearnerConfig(**{"batch_size": 2, "rehearsal": 2, **kw})
        learner = EFELearner(tiny_prompt(**{"task_embedding": True, **(prompt or {})}), tiny_agent(), cfg,
                             task_ids=tuple(t.task_id for t in TASKS))
        return learner, TaskSampler(TASKS, cfg, 6)

    return make


def params(learner: EFELearner) -> dict[str, torch.Tensor]:
    """Every parameter, cloned, as ``<module>.<name>``."""
    return {f"{m}.{n}": p.detach().clone()
            for m in ("agent", "prompt") for n, p in getattr(learner, m).named_parameters()}


def ema(learner: EFELearner) -> dict[str, torch.Tensor]:
    """The average of the weights, cloned, as ``<module>.<name>``."""
    return {f"{m}.{n}": t.clone() for m, named in learner.ema.state_dict().items() for n, t in named.items()}


def lrs(learner: EFELearner) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in learner.param_groups()}


# ------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(("raw", "message"), [
    ({"learner": {"lr_schedule": "cosine"}}, "learner.schedule_steps: 0 with lr_schedule=cosine must be larger than "
                                             "warmup_steps=0"),
    ({"learner": {"lr_schedule": "cosine", "warmup_steps": 50, "schedule_steps": 50}}, "learner.schedule_steps: 50"),
    ({"learner": {"schedule_steps": 100}}, "learner.schedule_steps: 100 is set but lr_schedule=constant"),
    ({"learner": {"lr_schedule": "linear"}}, "learner.lr_schedule: 'linear' is not one of"),
    ({"learner": {"ema_decay": 1.0}}, "learner.ema_decay: must be >= 0 and < 1, got 1.0"),
    ({"learner": {"warmup_steps": -1}}, "learner.warmup_steps: must be >= 0"),
    ({"learner": {"task_lr": 0.01}}, "learner.task_lr: 0.01 needs prompt.task_embedding=true"),
    ({"learner": {"task_weight_decay": 0.1}}, "learner.task_weight_decay: 0.1 needs task_lr > 0"),
])
def test_recipe_settings_are_checked_with_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, raw)
    assert message in str(err.value)


def test_the_recipe_is_off_by_default(make_learner):
    cfg = LearnerConfig()
    assert (cfg.warmup_steps, cfg.lr_schedule, cfg.schedule_steps) == (0, "constant", 0)
    assert (cfg.ema_decay, cfg.task_lr, cfg.task_weight_decay) == (0, 0, 0)
    learner, _ = make_learner(prompt={"task_embedding": True})
    assert learner.ema is None and learner.task_optimizer is None and learner.schedule_factor() == 1.0
    agent_group = learner.optimizer.param_groups[0]["params"]
    assert any(p is learner.prompt.task_table for p in agent_group)  # the table stays in AdamW's agent group
    assert "ema" not in learner.state_dict()


# ------------------------------------------------------------------------------------------------
# Learning-rate schedule


def reference_factor(n: int, warmup: int, cosine_steps: int | None) -> float:
    """The multiplier of the ``n``-th learner step (counted from 1), written out."""
    if n <= warmup:
        return n / warmup
    if cosine_steps is None:
        return 1.0
    done = min(n - 1 - warmup, cosine_steps - warmup)  # steps of the cosine before this one
    return (1 + math.cos(math.pi * done / (cosine_steps - warmup))) / 2


@pytest.mark.parametrize(("kw", "cosine"), [
    (dict(warmup_steps=3, lr_schedule="cosine", schedule_steps=8), 8),
    (dict(warmup_steps=2), None),
    (dict(lr_schedule="cosine", schedule_steps=4), 4),
])
def test_every_group_follows_the_schedule_and_a_zero_rate_moves_nothing(recipe, kw, cosine):
    learner, sampler = recipe(agent_lr=2e-3, qwen_lr=5e-4, task_lr=1e-2, **kw)
    base = {"agent": 2e-3, "qwen": 5e-4, "task": 1e-2}
    assert set(lrs(learner)) == set(base)
    for n in range(1, 11):
        before = params(learner)
        learner.step(sampler.batch(TASKS[n % 6]))
        want = reference_factor(n, kw.get("warmup_steps", 0), cosine)
        for name, lr in lrs(learner).items():  # the rates this step used
            assert lr == pytest.approx(base[name] * want, rel=1e-12, abs=1e-18), (n, name)
        if want == 0.0:  # past the cosine's end: AdamW and the table's update leave every weight as it was
            after = params(learner)
            assert all(torch.equal(before[k], after[k]) for k in before)
    assert learner.steps == 10


def test_a_resumed_learner_continues_the_schedule_and_new_base_rates_scale_with_it(recipe):
    kw = dict(agent_lr=2e-3, qwen_lr=5e-4, task_lr=1e-2, warmup_steps=2, lr_schedule="cosine", schedule_steps=9)
    a, sa = recipe(**kw)
    for i in range(5):
        a.step(sa.batch(TASKS[i]))
    state = copy.deepcopy({**a.state_dict(), **sa.state_dict()})
    assert state["lrs"] == {"agent_lr": 2e-3, "qwen_lr": 5e-4, "task_lr": 1e-2}  # base rates, not scheduled ones
    ma = a.step(sa.batch(TASKS[5]))  # before b restores torch's RNG as it was at the save

    b, sb = recipe(**{**kw, "seed": 7})
    b.load_state_dict(state)
    sb.load_state_dict(state)
    f5 = reference_factor(6, 2, 9)  # the sixth step's multiplier
    assert b.schedule_factor() == pytest.approx(f5) and lrs(b) == pytest.approx({"agent": 2e-3 * f5, "qwen": 5e-4 * f5,
                                                                              "task": 1e-2 * f5})
    mb = b.step(sb.batch(TASKS[5]))
    assert ma == mb and lrs(a) == lrs(b)
    assert all(torch.equal(x, y) for x, y in zip(params(a).values(), params(b).values()))

    # PBT: the trial's own base rates survive a load (keep_lrs) and the schedule multiplies them.
    c, _ = recipe(**{**kw, "agent_lr": 1e-2})
    c.load_state_dict(state, keep_lrs=True)
    assert lrs(c)["agent"] == pytest.approx(1e-2 * f5) and lrs(c)["qwen"] == pytest.approx(5e-4 * f5)
    c.set_learning_rates(agent_lr=4e-3, task_lr=2e-2)
    assert lrs(c) == pytest.approx({"agent": 4e-3 * f5, "qwen": 5e-4 * f5, "task": 2e-2 * f5})
    assert (c.cfg.agent_lr, c.cfg.task_lr) == (4e-3, 2e-2)
    with pytest.raises(ValueError, match="task_lr=0"):
        c.set_learning_rates(task_lr=0.0)  # the table's own update is fixed at construction


def test_an_older_state_without_a_task_rate_loads(recipe):
    a, sa = recipe()
    a.step(sa.batch(TASKS[0]))
    state = a.state_dict()
    state["lrs"] = {"agent_lr": 1e-3, "qwen_lr": 1e-4}  # as written before the recipe
    b, _ = recipe()
    b.load_state_dict(state)
    assert lrs(b) == {"agent": 1e-3, "qwen": 1e-4}


# ------------------------------------------------------------------------------------------------
# Average of the weights


def test_the_average_equals_a_reference_loop_over_the_steps(recipe):
    decay = 0.8
    learner, sampler = recipe(ema_decay=decay)
    reference = {k: v.double() for k, v in params(learner).items()}
    assert all(torch.equal(reference[k].float(), v) for k, v in ema(learner).items())  # it starts at the weights
    for i in range(6):
        learner.step(sampler.batch(TASKS[i]), np.full(32, 0.05, np.float32))
        for k, p in params(learner).items():
            reference[k] = decay * reference[k] + (1 - decay) * p.double()
    got, now = ema(learner), params(learner)
    assert got.keys() == reference.keys() and all(v.dtype == torch.float32 for v in got.values())
    for k in reference:
        torch.testing.assert_close(got[k], reference[k].float(), rtol=1e-5, atol=1e-6, msg=k)
    assert max(float((got[k] - now[k]).abs().max()) for k in now) > 1e-3  # an average, not the weights


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_skipped_step_moves_neither_the_average_nor_the_task_table(recipe, precision):
    learner, sampler = recipe(ema_decay=0.9, task_lr=1e-2, task_weight_decay=0.1, precision=precision)
    assert learner.step(sampler.batch(TASKS[0]))["skipped"] == 0.0
    kept_ema, kept = ema(learner), params(learner)
    delta = np.zeros(32, np.float32)
    delta[3] = np.nan  # a non-finite loss and gradients, the table's included
    m = learner.step(sampler.batch(TASKS[1]), delta)
    assert m["skipped"] == 1.0 and learner.skipped_steps == 1
    assert all(torch.equal(kept_ema[k], v) for k, v in ema(learner).items())
    assert all(torch.equal(kept[k], v) for k, v in params(learner).items())  # the table among them
    assert learner.step(sampler.batch(TASKS[1]))["skipped"] == 0.0  # and training goes on
    assert not torch.equal(kept["prompt.task_table"], learner.prompt.task_table)
    assert any(not torch.equal(kept_ema[k], v) for k, v in ema(learner).items())


def test_the_average_travels_in_the_state_and_an_older_state_starts_it_at_its_weights(recipe, tmp_path):
    a, sa = recipe(ema_decay=0.7)
    for i in range(3):
        a.step(sa.batch(TASKS[i]))
    cfg = ExperimentConfig(learner=a.cfg)
    ckpt.save(tmp_path, {**a.state_dict(), **sa.state_dict()}, cfg, TASKS)
    saved = ema(a)
    ma = a.step(sa.batch(TASKS[3]))  # before b restores torch's RNG as it was at the save
    state, _, _ = ckpt.load(tmp_path)  # torch.load(weights_only=True)
    b, sb = recipe(ema_decay=0.7, seed=5)
    b.load_state_dict(state)
    sb.load_state_dict(state)
    assert all(torch.equal(saved[k], v) for k, v in ema(b).items())
    assert ma == b.step(sb.batch(TASKS[3]))
    assert all(torch.equal(ema(a)[k], v) for k, v in ema(b).items())

    del state["ema"]  # a checkpoint written without an average
    c, _ = recipe(ema_decay=0.7, seed=6)
    c.load_state_dict(state)
    assert all(torch.equal(params(c)[k], v) for k, v in ema(c).items())


def test_an_evaluation_block_holds_the_average_and_gives_the_training_weights_back(recipe):
    learner, sampler = recipe(ema_decay=0.6)
    for i in range(3):
        learner.step(sampler.batch(TASKS[i]))
    training, average, cache = params(learner), ema(learner), learner.text_cache
    rows = {k: v.clone() for k, v in cache.items()}
    with learner.ema_weights():
        inside = params(learner)
        assert len(learner.text_cache) == 0  # the cached rows are the training weights' embeddings
    assert all(torch.equal(average[k], inside[k]) for k in inside)
    assert all(torch.equal(training[k], v) for k, v in params(learner).items())  # bit for bit
    assert all(torch.equal(average[k], v) for k, v in ema(learner).items())
    assert learner.text_cache is cache and all(torch.equal(rows[k], v) for k, v in cache.items())
    with pytest.raises(RuntimeError, match="boom"), learner.ema_weights():
        raise RuntimeError("boom")
    assert all(torch.equal(training[k], v) for k, v in params(learner).items())


def test_held_out_scoring_in_a_trial_uses_the_average(recipe):
    from efe_ray.rl.callbacks import held_out_evaluation

    learner, sampler = recipe(ema_decay=0.5, agent_lr=0.02)
    for i in range(4):
        learner.step(sampler.batch(TASKS[i]))
    held_out = synthetic_tasks(side=4, seed=2, prefix="h")
    averaged = copy.deepcopy(learner)
    averaged.use_ema_weights()
    training, average = params(learner), ema(learner)
    seen = []

    def refine(task):  # the policy's delta; records the weights it is computed with
        seen.append(params(learner))
        return np.full(32, 0.1, np.float32)

    scores, pictures = held_out_evaluation(SimpleNamespace(learner=learner, eval_tasks=held_out), refine)
    assert len(seen) == len(held_out) + min(3, len(held_out)) and len(pictures) == 3
    assert all(torch.equal(average[k], w[k]) for w in seen for k in w)
    assert scores == evaluate(averaged, held_out, lambda task: np.full(32, 0.1, np.float32))
    assert all(torch.equal(training[k], v) for k, v in params(learner).items())


@pytest.fixture
def ema_checkpoint(recipe, tmp_path):
    """(trial checkpoint folder, the learner that wrote it) of a tiny learner with an average."""
    learner, sampler = recipe(ema_decay=0.5, agent_lr=0.02)
    for i in range(4):
        learner.step(sampler.batch(TASKS[i]))
    cfg = ExperimentConfig(prompt=learner.prompt.cfg, agent=learner.agent_cfg, learner=learner.cfg)
    folder = tmp_path / "checkpoint_000001"
    ckpt.save(folder, {**learner.state_dict(), **sampler.state_dict()}, cfg, TASKS)
    return folder, learner


def test_export_and_evaluate_use_the_average(ema_checkpoint, tmp_path):
    folder, learner = ema_checkpoint
    average, training = ema(learner), params(learner)
    assert all(not torch.equal(average[k], training[k]) for k in average)

    exp.export(folder, tmp_path / "fp32", "fp32", 4)
    assert ckpt.read_meta(tmp_path / "fp32")["ema_weights"] is True
    exported = ckpt.load(tmp_path / "fp32")[0]
    flat = {f"{m}.{n}": t for m in ("agent", "prompt") for n, t in exported[m].items()}
    assert all(torch.equal(flat[k], v) for k, v in average.items())
    assert flat.keys() == {f"{m}.{n}" for m in ("agent", "prompt") for n in getattr(learner, m).state_dict()}

    for source in (folder, tmp_path / "fp32"):  # what python -m efe_ray.evaluate loads
        loaded = load_model(source, device="cpu", use_policy=False).learner
        assert all(torch.equal(average[k], v) for k, v in params(loaded).items()), source
        assert len(loaded.text_cache) == 0
        copies = loaded.agent.stacked(2)  # test-time adaptation starts from the average too
        for (name, p), q in zip(loaded.agent.named_parameters(), copies.parameters()):
            first = {"coord_emb": q[:, :1], "stem": q[: len(p)]}.get(name, q[:1])
            assert torch.equal(first, p), name

    exp.export(folder, tmp_path / "bf16", "bf16", 4)
    bf16 = ckpt.load(tmp_path / "bf16")[0]
    for m in ("agent", "prompt"):
        for n, t in bf16[m].items():
            want = average.get(f"{m}.{n}", learner.state_dict()[m][n])
            assert torch.equal(t, want.to(torch.bfloat16).float() if want.is_floating_point() else want), n


def test_export_of_the_training_weights_is_the_ablation_of_the_average(ema_checkpoint, recipe, tmp_path):
    """--weights trained: the training weights, marked as such, evaluated as they are; refused for a
    trial without an average, and for an unknown choice."""
    folder, learner = ema_checkpoint
    training = params(learner)
    assert exp.main(["--checkpoint", str(folder), "--out", str(tmp_path / "trained"), "--dtype", "fp32",
                     "--weights", "trained"]) == 0
    assert ckpt.read_meta(tmp_path / "trained")["ema_weights"] is False
    loaded = load_model(tmp_path / "trained", device="cpu", use_policy=False).learner
    assert all(torch.equal(training[k], v) for k, v in params(loaded).items())

    plain, sampler = recipe(agent_lr=0.02)  # no average kept
    plain.step(sampler.batch(TASKS[0]))
    cfg = ExperimentConfig(prompt=plain.prompt.cfg, agent=plain.agent_cfg, learner=plain.cfg)
    ckpt.save(tmp_path / "checkpoint_000002", {**plain.state_dict(), **sampler.state_dict()}, cfg, TASKS)
    with pytest.raises(exp.ExportError, match="kept no average"):
        exp.export(tmp_path / "checkpoint_000002", tmp_path / "none", weights="trained")
    with pytest.raises(exp.ExportError, match="--weights 'best'"):
        exp.export(folder, tmp_path / "none", weights="best")
    assert not (tmp_path / "none").exists()


def test_an_average_that_names_unknown_weights_is_refused(ema_checkpoint):
    folder, learner = ema_checkpoint
    state = ckpt.load(folder)[0]
    state["ema"]["agent"]["no_such_weight"] = torch.zeros(2)
    with pytest.raises(ckpt.CheckpointError, match="no_such_weight"):
        ckpt.evaluation_weights(state)


# ------------------------------------------------------------------------------------------------
# The task table's sign-SGD


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_only_the_batch_tasks_rows_move_by_the_sign_of_their_gradient(recipe, weight_decay):
    lr = 1e-2
    learner, sampler = recipe(task_lr=lr, task_weight_decay=weight_decay)
    table = learner.prompt.task_table
    assert all(p is not table for g in learner.optimizer.param_groups for p in g["params"])
    assert [g["name"] for g in learner.param_groups()] == ["agent", "qwen", "task"]
    learner.step(sampler.batch(TASKS[0]))  # the rows start at zero; after a step some are not
    for i in range(1, 4):
        before = table.detach().clone()
        batch = sampler.batch(TASKS[i])
        learner.step(batch)
        grad = table.grad
        batch_rows = {learner.prompt.task_index[t] for t in batch.task_ids()}
        moved_rows = {int(r) for r in torch.nonzero(grad.abs().sum(-1)).flatten()}
        assert moved_rows == batch_rows  # the step's task and its rehearsal tasks
        moved = torch.zeros(len(table), 1, dtype=torch.bool)
        moved[list(batch_rows)] = True
        want = before - (torch.sign(grad) + weight_decay * before * moved) * lr
        assert torch.equal(table.detach(), want)
        others = [r for r in range(len(table)) if r not in batch_rows]
        assert len(others) >= 4 and torch.equal(table[others], before[others])  # bit for bit
    assert not table[-1].any()  # the unknown-task row never moves
    assert table not in learner.optimizer.state and not learner.task_optimizer.state  # no moments: stateless
