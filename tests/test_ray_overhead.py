"""bench/ray_overhead.py: its two loops compare by the agent's work, not only by steps, and a compiled
loop meets every task side before it is timed."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from ray_overhead import WorkMeter, warm_every_side  # noqa: E402  (a script of bench/)

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


def test_the_warm_up_acts_once_on_a_task_of_every_side_smallest_first():
    from efe_ray.data.task import Pair, Task, as_grid

    def task(tid, side):
        g = as_grid([[1] * side] * side)
        return Task(tid, (Pair(g, g), Pair(g, g)), (Pair(g, None),))
    tasks = [task("a", 5), task("b", 3), task("c", 5), task("d", 9), task("e", 3)]
    acted = []
    refiner = SimpleNamespace(delta=lambda action: float(action[0]))  # the action's first value stands for it
    trainee = SimpleNamespace(sampler=SimpleNamespace(tasks=tasks), refiner=refiner,
                              cfg=SimpleNamespace(env=SimpleNamespace(action_dim=3)),
                              act=lambda t, d: acted.append((t.task_id, d)))
    assert warm_every_side(trainee, np.random.default_rng(7)) == [3, 5, 9]
    assert [tid for tid, _ in acted] == ["b", "a", "d"]  # the first task of each side, smallest side first
    draws = np.random.default_rng(7).uniform(-1, 1, (3, 3))[:, 0].tolist()
    assert [d for _, d in acted] == draws  # a fresh random action each
