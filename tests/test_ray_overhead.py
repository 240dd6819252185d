"""bench/ray_overhead.py: its two loops compare by the agent's work, not only by steps."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ray_overhead import WorkMeter  # noqa: E402  (a script of bench/)

from efe_ray.config import AgentConfig  # noqa: E402
from efe_ray.models.agent import GridAgent  # noqa: E402


def test_the_meter_counts_each_batch_at_its_own_canvas_side():
    cfg = AgentConfig(canvas=10, d_model=8, num_layers=2, num_heads=2, passes=2)
    agent = GridAgent(cfg, prompt_dim=4)
    params = sum(p.numel() for p in agent.parameters())
    sides = iter([3, 5])
    sampler = SimpleNamespace(batch=lambda task, side=None: SimpleNamespace(size=4, side=next(sides)))
    trainee = SimpleNamespace(cfg=SimpleNamespace(agent=cfg), learner=SimpleNamespace(agent=agent), sampler=sampler)
    meter = WorkMeter(trainee)
    assert trainee.sampler.batch("t").side == 3  # the sampler's own batch comes back
    trainee.sampler.batch("t")

    def flops(side: int) -> float:  # 4 views of side*side+1 tokens, 2 passes, 6N + 12 L T d a token
        t = side * side + 1
        return 4 * t * 2 * (6 * params + 12 * 2 * t * 8)
    assert meter.flops == pytest.approx(flops(3) + flops(5))
    w = meter.window(steps=2, seconds=0.5, graphs=0)
    assert (w.steps_per_s, w.mean_side, w.graphs) == (4.0, 4.0, 0)
    assert w.tflops == pytest.approx((flops(3) + flops(5)) / 0.5 / 1e12)
    meter.reset()
    assert meter.flops == 0 and meter.window(1, 1.0, 0).mean_side == 0.0
