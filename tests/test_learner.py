"""EFELearner on its own (no Ray): learning, the Qwen cache, reward, the RL term, state round trips
and non-finite steps.

The learning test: on the three synthetic rules the learner alone reaches >= 95% held-out cell
accuracy (scoring.py's definition: a wrong-shaped grid scores 0) within 600 steps; measured 96.1%
(exact 62.5%) after 200 steps. The objective "efe" alone (the cross-entropy H[q, P̃], no forward
KL) learns too, but more slowly: its numbers are asserted below, next to the default's.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import efe_ray.data.batching as batching
from efe_ray import checkpoint
from efe_ray.config import AgentConfig, ExperimentConfig, LearnerConfig, PromptConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.evaluation.predict import evaluate
from efe_ray.learner import METRICS, EFELearner
from efe_ray.refine import pull_term, refinement_reward


def weights(learner: EFELearner) -> list[torch.Tensor]:
    return [t.detach().clone() for t in list(learner.prompt.state_dict().values())
            + list(learner.agent.state_dict().values())]


# ------------------------------------------------------------------------------------------------
# Learning


def run_learning(objective: str, max_steps: int, stop_at: float | None):
    """(step metrics, [(steps, held-out scores)] every 50 steps, starting at step 0)."""
    tasks = synthetic_tasks(side=6, num_train=40, num_test=1, seed=0)
    held_out = synthetic_tasks(side=6, num_train=4, num_test=8, seed=1)
    cfg = LearnerConfig(augment=False, batch_size=16, agent_lr=3e-3, qwen_lr=1e-3, objective=objective)
    learner = EFELearner(
        PromptConfig(hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=128, prompt_dim=64),
        AgentConfig(canvas=6, d_model=64, num_layers=2), cfg)
    sampler = TaskSampler(tasks, cfg, 6)
    history, evals = [], [(0, evaluate(learner, held_out))]
    for i in range(max_steps):
        history.append(learner.step(sampler.batch(tasks[i % len(tasks)])))
        if (i + 1) % 50 == 0:
            evals.append((i + 1, evaluate(learner, held_out)))
            if stop_at is not None and evals[-1][1]["cell_acc"] >= stop_at and evals[-1][1]["exact"] >= 0.5:
                break
    return history, evals


@pytest.fixture(scope="module")
def default_run():
    return run_learning("forward_kl+efe", max_steps=600, stop_at=0.95)


def test_learner_reaches_95_percent_on_held_out_inputs(default_run):
    history, evals = default_run
    steps, result = evals[-1]
    assert result["cell_acc"] >= 0.95, f"cell accuracy per 50 steps: {[round(e['cell_acc'], 3) for _, e in evals]}"
    assert steps <= 600 and result["exact"] >= 0.5
    assert evals[0][1]["cell_acc"] < 0.2 and evals[0][1]["exact"] == 0.0  # it starts from nothing
    assert result["outputs"] == 24.0  # 3 held-out tasks x 8 test inputs
    assert all(m["skipped"] == 0.0 for m in history)


def test_efe_objective_alone_learns_but_less(default_run):
    """H[q, P̃] alone saturates where q is confidently wrong (tests/test_efe.py): it learns one rule
    of three in 300 steps (measured: cell accuracy 0.098 -> 0.591, exact 0.333) where the default
    objective has all three after 200 (0.961, 0.625) -- why the default adds KL[P̃ ‖ q]."""
    _, evals = run_learning("efe", max_steps=300, stop_at=None)
    (_, start), (steps, end) = evals[0], evals[-1]
    assert steps == 300 and start["cell_acc"] < 0.15 and start["exact"] == 0.0
    assert end["cell_acc"] >= 0.45 and end["exact"] >= 0.2
    assert end["cell_acc"] <= default_run[1][-1][1]["cell_acc"] - 0.2


def test_loss_falls(default_run):
    history, _ = default_run
    losses = [m["efe_loss"] for m in history]
    assert len(losses) >= 40
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])


# ------------------------------------------------------------------------------------------------
# Caching and metrics


def test_qwen_cache_refreshes_every_cache_every_steps_per_task(make_learner, monkeypatch):
    tasks = synthetic_tasks(side=4, seed=0)[:2]
    learner, sampler = make_learner(tasks, cache_every=3, batch_size=4)
    texts = []
    real = batching.prompt_text
    monkeypatch.setattr(batching, "prompt_text", lambda demos, query: texts.append(1) or real(demos, query))
    fresh = {t.task_id: [] for t in tasks}
    for i in range(16):  # interleaved: each task's own step count decides
        task = tasks[i % 2]
        batch = sampler.batch(task)
        texts.clear()
        m = learner.step(batch)
        # A cached step builds no prompt text (step 0 also fills the other task's cache for rehearsal).
        assert len(texts) == (4 if m["qwen_fresh"] else 0) + (i == 0)
        assert set(METRICS) | {"qwen_fresh", "skipped_steps"} == set(m)
        fresh[task.task_id].append(m["qwen_fresh"])
        assert (m["qwen_grad_norm"] > 0) == (m["qwen_fresh"] == 1.0)
        assert m["agent_grad_norm"] > 0
    expected = [1.0 if n in (0, 3, 6) else 0.0 for n in range(8)]
    assert fresh == {t.task_id: expected for t in tasks}
    assert learner.task_steps == {t.task_id: 8 for t in tasks} and learner.steps == 16


# ------------------------------------------------------------------------------------------------
# Reward and the RL term


def test_reward_is_scaled_accuracy_gain(make_learner):
    tasks = synthetic_tasks(side=4, seed=0)
    learner, sampler = make_learner(tasks, reward_scale=2.0)
    for i in range(6):
        learner.step(sampler.batch(tasks[i % 3]))

    m = learner.step(sampler.batch(tasks[0]), np.zeros(32, np.float32))
    assert m["reward"] == 0.0 and m["acc_before"] == m["acc_after"]
    m = learner.step(sampler.batch(tasks[1]), None)
    assert m["reward"] == 0.0 and m["acc_before"] == m["acc_after"]

    rng = np.random.default_rng(0)
    rewards = []
    for i in range(6):
        m = learner.step(sampler.batch(tasks[i % 3]), (20.0 * rng.standard_normal(32)).astype(np.float32))
        assert m["reward"] == pytest.approx(2.0 * (m["acc_after"] - m["acc_before"]), abs=1e-12)
        rewards.append(m["reward"])
    assert any(r != 0.0 for r in rewards)  # a large refinement does change the accuracy


def test_refinement_reward_and_pull_term_by_hand():
    assert float(refinement_reward(torch.tensor(0.75), torch.tensor(0.25), 4.0)) == 2.0
    prompt = torch.zeros(2, 3, requires_grad=True)
    refined = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    term = pull_term(prompt, refined, torch.tensor(2.0), reward_scale=4.0)  # pull 0.5, mean square 5/6
    assert float(term.detach()) == pytest.approx(0.5 * 5 / 6)
    term.backward()
    torch.testing.assert_close(prompt.grad, -0.5 * 2 * refined / 6)  # toward the refined prompt
    assert float(pull_term(prompt, refined, torch.tensor(-1.0), reward_scale=4.0)) == 0.0


def step_with_reward(learner, sampler, task, sign: float, **kw):
    """The first of a fixed series of random deltas whose step earns a reward of ``sign``, tried on
    copies of ``learner`` and ``sampler``: (learner, sampler state before, delta, metrics)."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        delta = (rng.uniform(0.5, 3.0) * rng.standard_normal(32)).astype(np.float32)
        trial, trial_sampler = copy.deepcopy(learner), copy.deepcopy(sampler)
        before = copy.deepcopy(trial_sampler.state_dict())
        m = trial.step(trial_sampler.batch(task), delta)
        if m["reward"] * sign > 0:
            return trial, before, delta, m
    raise AssertionError(f"no delta of the series earned a reward of sign {sign}")


def test_rl_term_pulls_the_prompt_toward_a_rewarded_refinement(make_learner):
    tasks = synthetic_tasks(side=4, seed=0)
    learner, sampler = make_learner(tasks, efe_weight=0.0, rl_weight=1.0, grad_clip=0.0, batch_size=4)
    prompt_before = copy.deepcopy(learner.prompt)
    learner, state, delta, m = step_with_reward(learner, sampler, tasks[0], +1.0)
    assert m["rl_term"] > 0 and m["loss"] == pytest.approx(m["rl_term"], rel=1e-6)
    assert m["rl_term"] == pytest.approx(m["reward"] / 5.0 * float(np.mean(delta**2)), rel=1e-4)
    # Its gradient reaches the prompt encoder (Qwen and the feature MLP), not the agent.
    assert m["qwen_grad_norm"] > 0 and m["agent_grad_norm"] > 0  # the agent group holds the feature MLP
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.prompt.numeric.parameters())
    assert all(p.grad is None or not p.grad.any() for p in learner.agent.parameters())

    # And the update moved the encoder's prompts of that step's views toward the refined prompts.
    sampler.load_state_dict(state)
    batch = sampler.batch(tasks[0])
    feats = batch.tensors(torch.device("cpu")).features[:4]
    with torch.no_grad():
        old = prompt_before(batch.prompt_texts(), feats)
        new = learner.prompt(batch.prompt_texts(), feats)
    target = old + torch.as_tensor(delta)
    assert float((new - target).pow(2).mean()) < float((old - target).pow(2).mean())


def test_rl_term_is_zero_without_positive_reward(make_learner):
    tasks = synthetic_tasks(side=4, seed=0)
    learner, sampler = make_learner(tasks, efe_weight=0.0, rl_weight=1.0, batch_size=4)
    _, _, _, m = step_with_reward(learner, sampler, tasks[0], -1.0)
    assert m["reward"] < 0 and m["rl_term"] == 0.0
    assert m["qwen_grad_norm"] == 0.0 and m["agent_grad_norm"] == 0.0


# ------------------------------------------------------------------------------------------------
# State round trip, non-finite steps


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_state_round_trip_is_bit_identical(make_learner, state_tensors, tmp_path, precision):
    tasks = synthetic_tasks(side=4, seed=0)
    rng = np.random.default_rng(5)
    deltas = [(0.2 * rng.standard_normal(32)).astype(np.float32) for _ in range(6)]
    a, sa = make_learner(tasks, precision=precision, cache_every=2, batch_size=4)
    for i in range(5):
        a.step(sa.batch(sa.sample_task()), deltas[i])
    checkpoint.save(tmp_path, {**a.state_dict(), **sa.state_dict()}, ExperimentConfig(), tasks)
    task = sa.sample_task()
    ma = a.step(sa.batch(task), deltas[5])

    state, cfg, meta = checkpoint.load(tmp_path)
    assert cfg == ExperimentConfig() and [t["id"] for t in meta["trained_tasks"]] == [t.task_id for t in tasks]
    b, sb = make_learner(tasks, precision=precision, cache_every=2, batch_size=4, seed=99)  # other init and RNG
    b.load_state_dict(state)
    sb.load_state_dict(state)
    task_b = sb.sample_task()
    assert task_b.task_id == task.task_id
    mb = b.step(sb.batch(task_b), deltas[5])
    assert ma == mb  # every metric, bit for bit
    ta, tb = state_tensors(a.state_dict()), state_tensors(b.state_dict())
    assert ta.keys() == tb.keys() and len(ta) > 20
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert sa.state_dict() == sb.state_dict()  # numpy RNG and curriculum position
    assert (a.steps, a.task_steps, a.text_cache.keys()) == (b.steps, b.task_steps, b.text_cache.keys())


def test_truncated_learner_file_raises(make_learner, tmp_path):
    learner, sampler = make_learner()
    learner.step(sampler.batch(sampler.tasks[0]))
    checkpoint.save(tmp_path, learner.state_dict(), ExperimentConfig(), sampler.tasks)
    path = Path(tmp_path) / checkpoint.LEARNER_FILE
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="SHA-256"):
        checkpoint.load(tmp_path)
    path.unlink()
    with pytest.raises(checkpoint.CheckpointError, match="missing"):
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_non_finite_step_never_reaches_the_weights(make_learner, state_tensors, precision):
    tasks = synthetic_tasks(side=4, seed=0)
    learner, sampler = make_learner(tasks, precision=precision)
    assert learner.step(sampler.batch(tasks[0]))["skipped"] == 0.0
    kept = weights(learner)
    opt_state = state_tensors(copy.deepcopy(learner.optimizer.state_dict())["state"])  # moments and step counts
    scale = learner.scaler.get_scale() if precision == "fp16" else None

    delta = np.zeros(32, np.float32)
    delta[3] = np.nan
    m = learner.step(sampler.batch(tasks[1]), delta)
    assert m["skipped"] == 1.0 and m["skipped_steps"] == 1.0 and learner.skipped_steps == 1
    assert math.isnan(m["loss"])
    assert all(torch.equal(x, y) for x, y in zip(kept, weights(learner)))
    after = state_tensors(learner.optimizer.state_dict()["state"])
    assert after.keys() == opt_state.keys() and all(torch.equal(t, after[k]) for k, t in opt_state.items())
    if precision == "fp16":
        assert learner.scaler.get_scale() == scale / 2  # the scaler backs off after an inf/NaN

    m = learner.step(sampler.batch(tasks[1]))  # and training goes on
    assert m["skipped"] == 0.0 and learner.skipped_steps == 1
    assert any(not torch.equal(x, y) for x, y in zip(kept, weights(learner)))


def test_a_fresh_optimizer_forgets_the_moments(make_learner):
    learner, sampler = make_learner()
    learner.step(sampler.batch(sampler.tasks[0]))
    assert learner.optimizer.state
    learner.reset_optimizer()
    assert not learner.optimizer.state and [g["name"] for g in learner.optimizer.param_groups] == ["agent", "qwen"]
