"""One test (or a small group) per invariant of DESIGN.md ("Invariants (each one is a test)").

1. the prompt never sees the target;   2. gradients reach Qwen;   3. parameters are always fp32;
4. targets are long;   5. no shared graph with the RL side;   6. clipping never on scaled gradients.

Everything runs on CPU with tiny models (a few ms per learner step).
"""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import pytest
import torch

import efe_ray.learner as learner_mod
from efe_ray.config import AgentConfig, ConfigError, ExperimentConfig, LearnerConfig, PromptConfig, from_dict
from efe_ray.data.features import task_features
from efe_ray.data.serialize import grid_to_text, prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.efe import efe_loss
from efe_ray.learner import EFELearner
from efe_ray.models.agent import to_canvas
from efe_ray.models.prompt import QwenHybridPrompt

PROMPT = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, prompt_dim=32)
AGENT = dict(canvas=6, d_model=32, num_layers=1, num_heads=2)


def make_learner(tasks=None, prompt=None, **learner_kw) -> EFELearner:
    tasks = tasks if tasks is not None else synthetic_tasks(side=4, num_train=4, num_test=1, seed=0)
    return EFELearner(tasks, PromptConfig(**{**PROMPT, **(prompt or {})}), AgentConfig(**AGENT),
                      LearnerConfig(**learner_kw))


def all_tensors(obj):
    """Every tensor inside nested dicts/lists/tuples."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from all_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from all_tensors(v)


def total_grad_norm(params) -> float:
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


# ------------------------------------------------------------------------------------------------
# 1. The prompt never sees the target grid


def with_test_output(task: Task, output: np.ndarray) -> Task:
    """``task`` with its first test output replaced."""
    test = (Pair(task.test[0].input, as_grid(output)),) + task.test[1:]
    return Task(task.task_id, task.train, test, task.source)


def test_prompt_and_features_ignore_the_target():
    task = synthetic_tasks(side=4, num_train=4, num_test=2, seed=0)[0]
    learner = make_learner([task])
    prompt, feats = learner.observe(task)

    # Another test output, even of another size, changes neither the prompt nor the features.
    for other in (np.full((2, 3), 9), 9 - task.test[0].output):
        p2, f2 = learner.observe(with_test_output(task, other))
        assert np.array_equal(p2, prompt) and np.array_equal(f2, feats)
    # ...nor does dropping it altogether (a Kaggle challenge without its solution).
    p3, f3 = learner.observe(Task(task.task_id, task.train, (Pair(task.test[0].input, None),), task.source))
    assert np.array_equal(p3, prompt) and np.array_equal(f3, feats)

    # observe() is the prompt model applied to the serialised demos + query input and its features.
    demos, query = task.train[: learner_mod.MAX_DEMOS], task.test[0].input
    assert np.array_equal(feats, task_features(demos, query))
    with torch.no_grad():
        direct = learner.prompt([prompt_text(demos, query)], torch.as_tensor(feats)[None])[0].numpy()
    np.testing.assert_allclose(direct, prompt, rtol=0, atol=1e-6)

    # The test is not vacuous: a demonstration output does reach the prompt and the features.
    changed = Pair(task.train[0].input, as_grid(np.full((2, 2), 7)))
    p4, f4 = learner.observe(Task(task.task_id, (changed,) + task.train[1:], task.test, task.source))
    assert not np.allclose(p4, prompt) and not np.array_equal(f4, feats)


def test_prompt_functions_take_no_output():
    assert list(inspect.signature(prompt_text).parameters) == ["demos", "query"]
    assert list(inspect.signature(task_features).parameters) == ["demos", "query"]
    assert list(inspect.signature(QwenHybridPrompt.forward).parameters) == ["self", "texts", "features", "text_emb"]
    pair = synthetic_tasks(side=4, seed=0)[0].train[0]
    with pytest.raises(TypeError, match="leak"):
        prompt_text((pair,), pair)  # a Pair (with its output) is refused as the query


def test_learner_step_prompts_never_contain_the_query_target(monkeypatch):
    """Inside a step (leave-one-out samples of the task, rehearsal samples of the others), no
    sample's own target reaches prompt_text or task_features."""
    tasks = synthetic_tasks(side=4, num_train=5, num_test=1, seed=3)  # distinct outputs per task
    learner = make_learner(tasks, batch_size=8, augment=True, cache_every=1)  # a text on every step
    samples, text_calls, feature_calls = [], [], []
    real_make, real_text, real_feats = learner.make_samples, learner_mod.prompt_text, learner_mod.task_features

    def spy_make(task, n):
        out = real_make(task, n)
        samples.extend(out)
        return out

    def spy_text(demos, query):
        text = real_text(demos, query)
        text_calls.append((demos, query, text))
        return text

    def spy_feats(demos, query):
        feature_calls.append((demos, query, None))
        return real_feats(demos, query)

    monkeypatch.setattr(learner, "make_samples", spy_make)
    monkeypatch.setattr(learner_mod, "prompt_text", spy_text)
    monkeypatch.setattr(learner_mod, "task_features", spy_feats)
    for i in range(4):
        learner.step(tasks[i % 3])
    assert len(samples) >= 32 and len(text_calls) >= 32 and len(feature_calls) == len(samples)
    for demos, query, text in text_calls + feature_calls:
        (s,) = [s for s in samples if s.demos is demos]  # the sample this call was made for
        assert query is s.query
        assert not any(np.array_equal(d.output, s.target) for d in demos)
        assert text is None or "O\n" + grid_to_text(s.target) + "\n" not in text


# ------------------------------------------------------------------------------------------------
# 2. Gradients reach Qwen


def test_gradients_reach_qwen_on_fresh_steps_only():
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks, cache_every=10, grad_clip=0.0)
    qwen = learner.prompt.qwen_parameters()
    assert qwen and all(p.requires_grad for p in qwen)
    before = [p.detach().clone() for p in qwen]

    m1 = learner.step(tasks[0])
    assert m1["qwen_fresh"] == 1.0
    assert m1["qwen_grad_norm"] > 0
    assert all(p.grad is not None for p in qwen)  # every Qwen parameter got a gradient
    assert m1["qwen_grad_norm"] == pytest.approx(total_grad_norm(qwen), rel=1e-6)  # no clipping here
    assert sum(int((p.grad != 0).any()) for p in qwen) >= len(qwen) - 1
    assert any(not torch.equal(b, p) for b, p in zip(before, qwen))  # and the optimizer moved Qwen

    # Second step on the same task: the cached (detached) embedding is reused.
    m2 = learner.step(tasks[0])
    assert m2["qwen_fresh"] == 0.0
    assert m2["qwen_grad_norm"] == 0.0
    assert all(p.grad is None for p in qwen)
    assert m2["agent_grad_norm"] > 0
    assert all(p.grad is not None for p in learner.agent.parameters())


# ------------------------------------------------------------------------------------------------
# 3. Parameters are always fp32


@pytest.mark.parametrize("precision,compute_dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                                     ("fp16", torch.float16)])
def test_parameters_stay_fp32(precision, compute_dtype, monkeypatch):
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks, precision=precision)
    assert learner.scaler.is_enabled() == (precision == "fp16")
    seen = []

    def spy(logits, target, *args, **kwargs):
        seen.append(logits.dtype)
        return efe_loss(logits, target, *args, **kwargs)

    monkeypatch.setattr(learner, "efe_loss", spy)
    for i in range(3):
        m = learner.step(tasks[i % 3], np.full(32, 0.01, np.float32))
        assert m["skipped"] == 0.0 and math.isfinite(m["loss"])
    assert seen == [compute_dtype] * 3  # autocast did run in that precision...

    params = list(learner.prompt.parameters()) + list(learner.agent.parameters())
    assert all(p.dtype == torch.float32 for p in params)  # ...on fp32 parameters
    assert all(p.grad.dtype == torch.float32 for p in params if p.grad is not None)
    opt_tensors = list(all_tensors(list(learner.optimizer.state.values())))
    assert len(opt_tensors) == 3 * len(learner.optimizer.state) > 0  # step, exp_avg, exp_avg_sq
    assert all(t.dtype == torch.float32 for t in opt_tensors)

    # A checkpoint-like round trip keeps fp32.
    buf = io.BytesIO()
    torch.save(learner.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    floats = [t for key in ("agent", "prompt", "optimizer", "text_cache") for t in all_tensors(state[key])
              if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    fresh = make_learner(tasks, precision=precision, seed=1)
    fresh.load_state_dict(state)
    for p, q in zip(params, list(fresh.prompt.parameters()) + list(fresh.agent.parameters())):
        assert q.dtype == torch.float32 and torch.equal(p, q)


def test_prompt_dtype_other_than_float32_is_rejected():
    for dtype in ("bfloat16", "float16"):
        with pytest.raises(ConfigError, match="prompt.dtype"):
            from_dict(ExperimentConfig, {"prompt": {"dtype": dtype}})
        with pytest.raises(ValueError, match="float32"):
            QwenHybridPrompt(PromptConfig(**PROMPT, dtype=dtype))
    assert from_dict(PromptConfig, {"dtype": "float32"}).dtype == "float32"


# ------------------------------------------------------------------------------------------------
# 4. Targets are long


def test_targets_passed_to_the_loss_are_long(monkeypatch):
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks)
    seen = []

    def spy(logits, target, loss_mask, target_mask, **kwargs):
        seen.append((target.dtype, int(target.min()), int(target.max()), target.shape))
        return efe_loss(logits, target, loss_mask, target_mask, **kwargs)

    monkeypatch.setattr(learner, "efe_loss", spy)
    learner.step(tasks[0])
    learner.step(tasks[2], np.zeros(32, np.float32))
    assert [s[0] for s in seen] == [torch.int64, torch.int64]
    # class indices 0..10 (10 = OUTSIDE) on (batch [+ rehearsal], 6, 6) canvases
    assert all(0 <= lo and hi == 10 and shape[0] >= 8 and shape[1:] == (6, 6) for _, lo, hi, shape in seen)
    assert to_canvas(np.zeros((2, 3), np.int32), 6).dtype == np.int64


def test_loss_rejects_int32_targets():
    logits = torch.randn(2, 3, 3, 11)
    target = torch.randint(0, 11, (2, 3, 3))
    ones = torch.ones(2, 3, 3)
    assert torch.isfinite(efe_loss(logits, target, ones, ones).loss)
    for dtype in (torch.int32, torch.float32):
        with pytest.raises(TypeError, match="long"):
            efe_loss(logits, target.to(dtype), ones, ones)


# ------------------------------------------------------------------------------------------------
# 5. The RL update and the learner update never share a graph


def test_learner_never_backpropagates_into_the_delta(monkeypatch):
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks)

    # A torch tensor that could carry the policy's graph is refused outright (the contract is numpy).
    live = torch.full((32,), 0.1, requires_grad=True)
    weights = [p.detach().clone() for p in learner.agent.parameters()]
    with pytest.raises(TypeError, match="numpy"):
        learner.step(tasks[0], live)
    assert live.grad is None
    assert all(torch.equal(w, p) for w, p in zip(weights, learner.agent.parameters()))
    with pytest.raises(TypeError, match="numpy"):
        learner.predict(tasks[0], live.detach())

    # A numpy delta becomes a constant: no gradient is ever asked of it, and it is not written to.
    made, refined_seen = [], []
    real_delta = learner._delta

    def spy_delta(delta, batch):
        t = real_delta(delta, batch)
        made.append(t)
        return t

    monkeypatch.setattr(learner, "_delta", spy_delta)
    hook = learner.agent.register_forward_pre_hook(lambda mod, args: refined_seen.append(args[1]))
    delta = np.linspace(-0.5, 0.5, 32)  # float64 on purpose
    kept = delta.copy()
    metrics = learner.step(tasks[0], delta)
    hook.remove()
    assert np.array_equal(delta, kept)
    (d,) = made
    assert d.dtype == torch.float32 and not d.requires_grad and d.grad_fn is None and d.grad is None
    refined, unrefined = refined_seen  # agent(refined) with gradient, agent(prompt.detach()) without
    assert refined.requires_grad and not unrefined.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        torch.autograd.grad(refined.sum(), d, allow_unused=False)
    assert all(type(v) is float for v in metrics.values())  # nothing with a graph leaves step()


def test_observe_returns_plain_numpy():
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks)
    for task in (tasks[0], tasks[1]):
        learner.step(task)
    for task in tasks:  # cached (0, 1) and uncached (2) Qwen embeddings
        prompt, feats = learner.observe(task)
        assert type(prompt) is np.ndarray and type(feats) is np.ndarray
        assert prompt.dtype == np.float32 and prompt.shape == (32,) and feats.shape == (15,)
        assert np.isfinite(prompt).all()


# ------------------------------------------------------------------------------------------------
# 6. Clipping only on unscaled gradients


REAL_CLIP = learner_mod.clip_gradients


def clip_norms_of_one_step(precision: str, monkeypatch, grad_clip: float = 1.0):
    tasks = synthetic_tasks(side=4, seed=0)
    learner = make_learner(tasks, precision=precision, grad_clip=grad_clip, seed=0)
    if precision == "fp16":
        learner.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        assert learner.scaler.get_scale() == 65536.0
    recorded = []
    real_clip = REAL_CLIP

    def spy(params, total_norm, max_norm):
        params = list(params)
        measured = total_grad_norm(params)  # the gradients as clipping finds them
        assert float(total_norm) == pytest.approx(measured, rel=1e-5)  # the norm it is handed is theirs
        recorded.append(measured)
        return real_clip(params, total_norm, max_norm)

    monkeypatch.setattr(learner_mod, "clip_gradients", spy)
    metrics = learner.step(tasks[0])
    all_params = [p for g in learner.optimizer.param_groups for p in g["params"]]
    return metrics, recorded, total_grad_norm(all_params), learner


def test_clipping_sees_unscaled_gradients(monkeypatch):
    m16, rec16, after16, l16 = clip_norms_of_one_step("fp16", monkeypatch)
    m32, rec32, after32, _ = clip_norms_of_one_step("fp32", monkeypatch)
    assert m16["skipped"] == 0.0 and l16.scaler.get_scale() == 65536.0  # a real step at scale 2**16
    assert len(rec16) == len(rec32) == 1
    reported = math.hypot(m16["agent_grad_norm"], m16["qwen_grad_norm"])
    assert rec16[0] == pytest.approx(reported, rel=1e-5)  # clip saw the unscaled norm
    assert 0.5 < rec16[0] / rec32[0] < 2.0  # same magnitude as fp32 (not x65536)
    assert rec32[0] == pytest.approx(math.hypot(m32["agent_grad_norm"], m32["qwen_grad_norm"]), rel=1e-5)
    # The norm exceeded the limit, so the gradients the optimizer used were clipped to 1.0.
    assert rec16[0] > 1.0 and after16 == pytest.approx(1.0, rel=1e-4)
    assert rec32[0] > 1.0 and after32 == pytest.approx(1.0, rel=1e-4)


def test_no_clipping_when_disabled(monkeypatch):
    metrics, recorded, after, _ = clip_norms_of_one_step("fp16", monkeypatch, grad_clip=0.0)
    assert recorded == []
    assert after == pytest.approx(math.hypot(metrics["agent_grad_norm"], metrics["qwen_grad_norm"]), rel=1e-5)
