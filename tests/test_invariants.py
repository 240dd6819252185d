"""One test (or a small group) per invariant of docs/design.md ("Invariants").

1. the prompt never sees the target grid;   2. gradients reach Qwen after a non-cached step;
3. parameters always fp32, speed from autocast;   4. targets are long class indices;
5. the RL update and the learner update never share a graph;   6. clipping only after unscale_.

Everything runs on CPU with tiny models (a few ms per learner step).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from efe_ray.config import ConfigError, ExperimentConfig, from_dict
from efe_ray.data.batching import MAX_DEMOS, Batch, Sample
from efe_ray.data.features import task_features
from efe_ray.data.serialize import grid_to_text, prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.efe import efe_loss
from efe_ray.evaluation.predict import observe, predict
from efe_ray.models.agent import to_canvas
from efe_ray.models.prompt import QwenHybridPrompt
from efe_ray.refine import delta_tensor

CPU = torch.device("cpu")


def grad_norm(params) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


# ------------------------------------------------------------------------------------------------
# 1. The prompt never sees the target grid


def with_test_output(task: Task, output: np.ndarray | None) -> Task:
    """``task`` with its first test output replaced."""
    test = (Pair(task.test[0].input, None if output is None else as_grid(output)),) + task.test[1:]
    return Task(task.task_id, task.train, test, task.source)


def test_observed_prompt_and_features_ignore_the_test_output(make_learner):
    task = synthetic_tasks(side=4, num_train=4, num_test=2, seed=0)[0]
    learner, _ = make_learner([task])
    prompt, feats = observe(learner, task)
    # Another test output, even of another size, or none at all, changes neither.
    for other in (np.full((2, 3), 9), 9 - task.test[0].output, None):
        p2, f2 = observe(learner, with_test_output(task, other))
        assert np.array_equal(p2, prompt) and np.array_equal(f2, feats)
    # observe() is the prompt model applied to the serialised demos + query input and its features.
    demos, query = task.train[:MAX_DEMOS], task.test[0].input
    assert np.array_equal(feats, task_features(demos, query))
    with torch.no_grad():
        direct = learner.prompt([prompt_text(demos, query)], torch.as_tensor(feats)[None])[0].numpy()
    np.testing.assert_allclose(direct, prompt, rtol=0, atol=1e-6)
    # The test is not vacuous: a demonstration output does reach the prompt and the features.
    changed = Pair(task.train[0].input, as_grid(np.full((2, 2), 7)))
    p4, f4 = observe(learner, Task(task.task_id, (changed,) + task.train[1:], task.test, task.source))
    assert not np.allclose(p4, prompt) and not np.array_equal(f4, feats)


def test_a_pair_is_refused_where_a_query_input_is_expected():
    pair = synthetic_tasks(side=4, seed=0)[0].train[0]
    for fn in (prompt_text, task_features):
        with pytest.raises(TypeError, match="leak"):
            fn((pair,), pair)  # a Pair (with its output) is refused as the query


def blinded(batch: Batch) -> Batch:
    """``batch`` with every view's target replaced by a grid of 9s of another size."""
    def blind(s: Sample) -> Sample:
        return Sample(s.demos, s.query, as_grid(np.full((3, 1), 9)), s.aug)
    return Batch(batch.task_id, tuple(map(blind, batch.samples)),
                 tuple((k, blind(s)) for k, s in batch.rehearsal), batch.side)


def test_a_step_reads_no_view_target_into_its_prompts(make_learner):
    """For every view of every batch (the task's leave-one-out views and the rehearsal views): its
    target is not among its demonstrations, and its prompt text and features do not change when
    the target does; the texts the step encodes are exactly those."""
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)  # distinct outputs per pair
    learner, sampler = make_learner(tasks, batch_size=8, augment=True, cache_every=1)  # a text on every step
    encoded = []
    real_tokenize = learner.prompt.tokenize
    learner.prompt.tokenize = lambda texts, device: encoded.extend(texts) or real_tokenize(texts, device)
    for i in range(4):
        batch = sampler.batch(tasks[i % 3])
        views = list(batch.samples) + [s for _, s in batch.rehearsal]
        for s in views:
            assert not any(np.array_equal(d.output, s.target) for d in s.demos)
            assert "O\n" + grid_to_text(s.target) + "\n" not in s.prompt_text()
        blind = blinded(batch)
        assert blind.prompt_texts() == batch.prompt_texts()
        assert [s.prompt_text() for _, s in blind.rehearsal] == [s.prompt_text() for _, s in batch.rehearsal]
        assert torch.equal(blind.tensors(CPU).features, batch.tensors(CPU).features)
        encoded.clear()
        learner.step(batch)
        texts = {s.prompt_text() for s in views}
        assert encoded[:8] == batch.prompt_texts() and set(encoded) <= texts


# ------------------------------------------------------------------------------------------------
# 2. Gradients reach Qwen


def test_gradients_reach_qwen_on_fresh_steps_only(make_learner):
    learner, sampler = make_learner(cache_every=10, grad_clip=0.0)
    tasks = sampler.tasks
    qwen = learner.prompt.qwen_parameters()
    assert qwen and all(p.requires_grad for p in qwen)
    before = [p.detach().clone() for p in qwen]

    m1 = learner.step(sampler.batch(tasks[0]))
    assert m1["qwen_fresh"] == 1.0 and m1["qwen_grad_norm"] > 0
    assert all(p.grad is not None for p in qwen)  # every Qwen parameter got a gradient
    assert m1["qwen_grad_norm"] == pytest.approx(grad_norm(qwen), rel=1e-6)  # no clipping here
    assert sum(int((p.grad != 0).any()) for p in qwen) >= len(qwen) - 1
    assert any(not torch.equal(b, p) for b, p in zip(before, qwen))  # and the optimizer moved Qwen

    # Second step on the same task: the cached (detached) embedding is reused.
    m2 = learner.step(sampler.batch(tasks[0]))
    assert m2["qwen_fresh"] == 0.0 and m2["qwen_grad_norm"] == 0.0
    assert all(p.grad is None for p in qwen)
    assert m2["agent_grad_norm"] > 0 and all(p.grad is not None for p in learner.agent.parameters())


# ------------------------------------------------------------------------------------------------
# 3. Parameters are always fp32


@pytest.mark.parametrize("precision,compute_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                     ("fp16", torch.float16)])
def test_parameters_stay_fp32(make_learner, state_tensors, precision, compute_dtype, monkeypatch):
    learner, sampler = make_learner(precision=precision)
    tasks = sampler.tasks
    assert learner.scaler.is_enabled() == (precision == "fp16")
    seen = []

    def spy(logits, target, *args, **kwargs):
        seen.append(logits.dtype)
        return efe_loss(logits, target, *args, **kwargs)

    monkeypatch.setattr(learner, "efe_loss", spy)
    for i in range(3):
        m = learner.step(sampler.batch(tasks[i % 3]), np.full(32, 0.01, np.float32))
        assert m["skipped"] == 0.0 and math.isfinite(m["loss"])
    assert seen == [compute_dtype] * 3  # autocast did run in that precision...

    params = list(learner.prompt.parameters()) + list(learner.agent.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # ...on fp32 parameters
    assert all(p.grad.dtype == torch.float32 for p in params if p.grad is not None)
    opt_tensors = list(state_tensors(learner.optimizer.state).values())
    assert len(opt_tensors) == 3 * len(learner.optimizer.state) > 0  # step, exp_avg, exp_avg_sq
    assert all(t.dtype == torch.float32 for t in opt_tensors)

    # A checkpoint-like round trip keeps fp32.
    buf = io.BytesIO()
    torch.save(learner.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    floats = [t for key in ("agent", "prompt", "optimizer", "text_cache") for t in state_tensors(state[key]).values()
              if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    fresh, _ = make_learner(precision=precision, seed=1)
    fresh.load_state_dict(state)
    for p, q in zip(params, list(fresh.prompt.parameters()) + list(fresh.agent.parameters())):
        assert q.dtype == torch.float32 and torch.equal(p, q)


def test_prompt_dtype_other_than_float32_is_rejected(tiny_prompt):
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(ConfigError, match="prompt.dtype"):
            from_dict(ExperimentConfig, {"prompt": {"dtype": dtype}})
        with pytest.raises(ValueError, match="float32"):
            QwenHybridPrompt(tiny_prompt(dtype=dtype))


# ------------------------------------------------------------------------------------------------
# 4. Targets are long


def test_targets_passed_to_the_loss_are_long(make_learner, monkeypatch):
    learner, sampler = make_learner(batch_size=8, rehearsal=8)
    seen = []

    def spy(logits, target, loss_mask, target_mask, **kwargs):
        seen.append((target.dtype, int(target.min()), int(target.max()), tuple(target.shape)))
        return efe_loss(logits, target, loss_mask, target_mask, **kwargs)

    monkeypatch.setattr(learner, "efe_loss", spy)
    learner.step(sampler.batch(sampler.tasks[0]))
    learner.step(sampler.batch(sampler.tasks[2]), np.zeros(32, np.float32))
    # class indices 0..10 (10 = OUTSIDE) on (batch + rehearsal, S, S) canvases, S the 4x4 tasks' side
    assert [(dtype, hi, shape) for dtype, _, hi, shape in seen] == [(torch.int64, 10, (16, 4, 4))] * 2
    assert all(lo >= 0 for _, lo, _, _ in seen)
    assert to_canvas(np.zeros((2, 3), np.int32), 6).dtype == np.int64
    logits, ones = torch.randn(2, 3, 3, 11), torch.ones(2, 3, 3)
    for dtype in (torch.int32, torch.float32):
        with pytest.raises(TypeError, match="long"):
            efe_loss(logits, torch.zeros(2, 3, 3, dtype=dtype), ones, ones)


# ------------------------------------------------------------------------------------------------
# 5. The RL update and the learner update never share a graph


def test_learner_never_backpropagates_into_the_delta(make_learner):
    learner, sampler = make_learner()
    task = sampler.tasks[0]

    # A torch tensor that could carry the policy's graph is refused outright (the contract is numpy).
    live = torch.full((32,), 0.1, requires_grad=True)
    kept = [p.detach().clone() for p in learner.agent.parameters()]
    with pytest.raises(TypeError, match="numpy"):
        learner.step(sampler.batch(task), live)
    assert live.grad is None
    assert all(torch.equal(w, p) for w, p in zip(kept, learner.agent.parameters()))
    with pytest.raises(TypeError, match="numpy"):
        predict(learner, task, live.detach())

    # A numpy delta becomes a constant (no graph, nothing asks for its gradient), and is not written to.
    delta = np.linspace(-0.5, 0.5, 32)  # float64 on purpose
    d = delta_tensor(delta, 4, CPU, pad_rows=2)
    assert d.shape == (6, 32) and d.dtype == torch.float32 and not d.requires_grad and d.grad_fn is None
    assert not d[4:].any()
    refined_seen = []
    hook = learner.agent.register_forward_pre_hook(lambda mod, args: refined_seen.append(args[1]))
    kept = delta.copy()
    metrics = learner.step(sampler.batch(task), delta)
    hook.remove()
    assert np.array_equal(delta, kept)
    refined, unrefined = refined_seen  # agent(refined) with gradient, agent(prompt.detach()) without
    assert refined.requires_grad and not unrefined.requires_grad
    assert all(type(v) is float for v in metrics.values())  # nothing with a graph leaves step()


def test_observe_returns_plain_numpy(make_learner):
    learner, sampler = make_learner()
    tasks = sampler.tasks
    for task in (tasks[0], tasks[1]):
        learner.step(sampler.batch(task))
    for task in tasks:  # cached (0, 1) and uncached (2) Qwen embeddings
        prompt, feats = observe(learner, task)
        assert type(prompt) is np.ndarray and type(feats) is np.ndarray
        assert prompt.dtype == np.float32 and prompt.shape == (32,) and feats.shape == (15,)
        assert np.isfinite(prompt).all()


# ------------------------------------------------------------------------------------------------
# 6. Clipping only on unscaled gradients


LIMIT = 0.1
"""A clip limit below the tiny learner's first gradient norm (about 0.8)."""


def clipped_step(make_learner, precision: str, grad_clip: float = LIMIT):
    """(metrics, the global gradient norm the optimizer used) of one step; fp16 at scale 2**16."""
    learner, sampler = make_learner(precision=precision, grad_clip=grad_clip, seed=0)
    if precision == "fp16":
        learner.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    metrics = learner.step(sampler.batch(sampler.tasks[0]))
    if precision == "fp16":
        assert learner.scaler.get_scale() == 65536.0  # a real step at scale 2**16, not skipped
    params = [p for g in learner.optimizer.param_groups for p in g["params"]]
    return metrics, grad_norm(params)  # the optimizer leaves the gradients in place


def test_clipping_sees_unscaled_gradients(make_learner):
    """Clipping scaled gradients to the limit and unscaling after would leave a norm of limit/65536;
    clipping after unscale_ leaves exactly the limit, with the reported norms at fp32's magnitude."""
    m16, used16 = clipped_step(make_learner, "fp16")
    m32, used32 = clipped_step(make_learner, "fp32")
    norm16 = math.hypot(m16["agent_grad_norm"], m16["qwen_grad_norm"])
    norm32 = math.hypot(m32["agent_grad_norm"], m32["qwen_grad_norm"])
    assert m16["skipped"] == 0.0 and 0.5 < norm16 / norm32 < 2.0  # unscaled, not x65536
    assert norm16 > 2 * LIMIT and norm32 > 2 * LIMIT  # over the limit, so clipped...
    assert used16 == pytest.approx(LIMIT, rel=1e-4) and used32 == pytest.approx(LIMIT, rel=1e-4)  # ...to it


def test_no_clipping_when_disabled(make_learner):
    metrics, used = clipped_step(make_learner, "fp16", grad_clip=0.0)
    assert used == pytest.approx(math.hypot(metrics["agent_grad_norm"], metrics["qwen_grad_norm"]), rel=1e-5)
    assert used > 2 * LIMIT
