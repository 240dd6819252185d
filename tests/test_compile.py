"""learner.compile: it changes how the step runs, never what it computes (the slow inductor test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.data.synthetic import synthetic_tasks
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
