"""learner.compile: it changes how the step runs, never what it computes (the slow inductor tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.config import LearnerConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.evaluation.predict import predict_logits
from efe_ray.learner import EFELearner


def weights(learner: EFELearner) -> list[torch.Tensor]:
    return [t.detach() for t in list(learner.prompt.state_dict().values()) + list(learner.agent.state_dict().values())]


@pytest.mark.slow
def test_compiled_learner_matches_eager(make_learner):
    """Every Qwen layer, the agent and the EFE loss compiled (inductor on CPU): the same losses and
    weights as eager, step for step, through fresh and cached Qwen steps; the agent's forward does
    run through the compiler; checkpoints load into an eager learner."""
    tasks = synthetic_tasks(side=4, seed=0)
    runs = []
    for compiled in (False, True):
        learner, sampler = make_learner(tasks, compile=compiled, seed=0, cache_every=2)
        traced = []
        learner.agent.register_forward_pre_hook(lambda mod, args: traced.append(torch.compiler.is_compiling()))
        metrics = [learner.step(sampler.batch(tasks[i % 2]), np.full(32, 0.01, np.float32)) for i in range(4)]
        runs.append((learner, metrics, traced))
    (eager, m_eager, t_eager), (comp, m_comp, t_comp) = runs
    assert t_comp and all(t_comp) and not any(t_eager)
    for a, b in zip(m_eager, m_comp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["qwen_grad_norm"] == pytest.approx(a["qwen_grad_norm"], rel=1e-3, abs=1e-6)
    moved = max(float((x - y).abs().max()) for x, y in zip(weights(eager), weights(make_learner(tasks, seed=0)[0])))
    assert moved > 5e-3
    for x, y in zip(weights(eager), weights(comp)):  # fused kernels round differently: Adam makes that ~1% of a step
        torch.testing.assert_close(y, x, rtol=1e-3, atol=2e-4)
    fresh, _ = make_learner(tasks, seed=1)
    fresh.load_state_dict(comp.state_dict())  # no "_orig_mod." prefixes
    assert all(torch.equal(x, y) for x, y in zip(weights(fresh), weights(comp)))


@pytest.mark.slow
def test_compiled_learner_with_the_arc_recipe_matches_eager(tiny_prompt, tiny_agent):
    """The schedule, the average of the weights and the task table's sign-SGD under learner.compile:
    the same losses, weights and average as eager; scoring the average in the compiled learner
    gives the same log-probabilities as eager, and its training weights back."""
    tasks = synthetic_tasks(side=4, seed=0)
    runs = []
    for compiled in (False, True):
        cfg = LearnerConfig(compile=compiled, seed=0, cache_every=2, warmup_steps=2, lr_schedule="cosine",
                            schedule_steps=6, ema_decay=0.7, task_lr=0.01)
        learner = EFELearner(tiny_prompt(task_embedding=True), tiny_agent(), cfg,
                             task_ids=tuple(t.task_id for t in tasks))
        sampler = TaskSampler(tasks, cfg, 6)
        metrics = [learner.step(sampler.batch(tasks[i % 3]), np.full(32, 0.01, np.float32)) for i in range(4)]
        kept = [t.clone() for t in weights(learner)]
        with learner.ema_weights():
            logp = predict_logits(learner, tasks[0].train, [p.input for p in tasks[0].test])
        assert all(torch.equal(x, y) for x, y in zip(kept, weights(learner)))  # the training weights are back
        metrics.append(learner.step(sampler.batch(tasks[1])))
        runs.append((learner, metrics, logp))
    (eager, m_eager, lp_eager), (comp, m_comp, lp_comp) = runs
    for a, b in zip(m_eager, m_comp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    for x, y in zip(weights(eager), weights(comp)):
        torch.testing.assert_close(y, x, rtol=1e-3, atol=2e-4)
    for m in ("agent", "prompt"):
        for name, x in eager.ema.state_dict()[m].items():
            torch.testing.assert_close(comp.ema.state_dict()[m][name], x, rtol=1e-3, atol=2e-4, msg=name)
    torch.testing.assert_close(lp_comp, lp_eager, rtol=1e-3, atol=1e-3)
    assert eager.prompt.task_table[:3].abs().sum() > 0


@pytest.mark.parametrize("cuda_graphs", [False, True])
def test_every_compiled_module_turns_mix_order_reductions_off(make_learner, monkeypatch, cuda_graphs):
    """learner.compile hands Inductor ``triton.mix_order_reduction=False`` for the Qwen layers, the
    agent and the loss: on CUDA that fused kernel returns (d,) gradients for (1, 1, d) parameters or
    wrong ones (efe_ray/models/inductor.py). learner.cuda_graphs adds ``triton.cudagraphs`` for the
    agent and the loss alone. Compiling is lazy, so recording the calls runs nothing."""
    from torch._inductor import config

    assert hasattr(config.triton, "mix_order_reduction")  # this torch has the option the project turns off
    before = (config.triton.mix_order_reduction, config.triton.cudagraphs)
    calls = []
    real = torch.compile

    def recording(model=None, **kwargs):
        calls.append(kwargs.get("options"))
        return real(model, **kwargs)

    monkeypatch.setattr(torch, "compile", recording)
    learner, _ = make_learner(synthetic_tasks(side=4, seed=0), compile=True, cuda_graphs=cuda_graphs, seed=0)
    n_layers = len(learner.prompt.qwen.layers)
    assert len(calls) == n_layers + 2  # every Qwen layer, the agent, the loss
    assert all(options == {"triton.mix_order_reduction": False} for options in calls[:n_layers])
    graphs = {"triton.cudagraphs": True} if cuda_graphs else {}
    assert calls[n_layers:] == [{"triton.mix_order_reduction": False, **graphs}] * 2
    assert (config.triton.mix_order_reduction, config.triton.cudagraphs) == before  # the global settings are untouched


def test_cuda_graphs_need_compile():
    from efe_ray.config import ConfigError, ExperimentConfig, from_dict

    with pytest.raises(ConfigError, match=r"learner.cuda_graphs: true needs compile=true"):
        from_dict(ExperimentConfig, {"learner": {"cuda_graphs": True}})
    assert from_dict(ExperimentConfig, {"learner": {"cuda_graphs": True, "compile": True}}).learner.cuda_graphs


@pytest.mark.slow
def test_cuda_graphs_mark_every_step_and_change_nothing_on_a_cpu(make_learner, monkeypatch):
    """With learner.cuda_graphs every training step and every prediction tells the graphs that a new
    step begins (the last step's outputs may be overwritten); on a CPU there is nothing to capture,
    so the compiled learner computes what it computes without."""
    marks = []
    real = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: (marks.append(1), real())[1])
    tasks = synthetic_tasks(side=4, seed=0)
    runs = []
    for graphs in (False, True):
        learner, sampler = make_learner(tasks, compile=True, cuda_graphs=graphs, seed=0)
        metrics = [learner.step(sampler.batch(tasks[i % 2]), np.full(32, 0.01, np.float32)) for i in range(3)]
        logp = predict_logits(learner, tasks[0].train, [p.input for p in tasks[0].test])
        runs.append((metrics, logp, weights(learner)))
        assert len(marks) == (4 if graphs else 0)  # three steps, one prediction
    (m_plain, lp_plain, w_plain), (m_graphs, lp_graphs, w_graphs) = runs
    assert [m["loss"] for m in m_graphs] == [m["loss"] for m in m_plain]
    torch.testing.assert_close(lp_graphs, lp_plain, rtol=0, atol=0)
    assert all(torch.equal(x, y) for x, y in zip(w_plain, w_graphs))


def test_evaluation_runs_a_compiled_trial_eager(make_learner):
    """build_learner (what evaluate loads) leaves learner.compile and learner.cuda_graphs to training:
    the same weights, no compiled module, so test-time adaptation pays no compile time."""
    from efe_ray.config import ExperimentConfig
    from efe_ray.evaluation.model import build_learner

    trained, _ = make_learner(synthetic_tasks(side=4, seed=0), compile=True, cuda_graphs=True, seed=0)
    assert trained.agent._compiled_call_impl is not None
    cfg = ExperimentConfig(prompt=trained.prompt.cfg, agent=trained.agent_cfg, learner=trained.cfg)
    loaded = build_learner(trained.state_dict(), cfg)
    assert loaded.cfg.compile is False and loaded.cfg.cuda_graphs is False and loaded.agent._compiled_call_impl is None
    assert all(layer._compiled_call_impl is None for layer in loaded.prompt.qwen.layers)
    assert all(torch.equal(x, y) for x, y in zip(weights(loaded), weights(trained)))
