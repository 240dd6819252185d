"""Ray overhead: the same learner updates driven by a bare PyTorch loop and by RLlib.

Run::

    python bench/ray_overhead.py                       # default preset, CPU
    python bench/ray_overhead.py --preset gpu --device cuda --iterations 4

(a) a bare loop over the same Trainee the env would get (envs/trainee.py): ``trainee.act(task,
delta)`` (``env.learner_steps_per_action`` learner steps, one read) with random deltas, one task
per episode, as the env would run it without RLlib; (b) the
same under RLlib PPO: ArcPromptEnv in the algorithm process (``num_env_runners=0``), counting
learner steps per second of ``algo.train()`` (sampling, PPO update, the per-step metrics
callbacks; held-out evaluation pushed past the timed iterations). Prints both rates, the ratio
b/a, and the command line. The two loops draw their own tasks, and a step's cost grows with its
canvas side, so each also prints the agent's training TFLOP/s of the batches it drew (views x
(S*S+1) tokens at side S, bench/flops.py) and the ratio of those: the work-normalised ratio, which
a different mix of task sizes does not move. With ``learner.compile=true``, each loop first acts once
on a task of every task side its sampler holds (:func:`warm_every_side`), so that a canvas side is
compiled before the timed window; a timed window in which TorchDynamo still compiled a graph (a side
the warm-up had not met) is named, and the run exits with status 3: that rate includes compile time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from efe_ray.config import ExperimentConfig
from efe_ray.data.task import task_side
from tuning.presets import build_config
from command import command_line
from compiled import compiled_graphs
from flops import agent_train_flops


@dataclass
class Window:
    """What one timed window measured."""

    steps_per_s: float
    """Learner steps per second."""
    tflops: float
    """The agent's training TFLOP/s of the batches drawn (:class:`WorkMeter`)."""
    mean_side: float
    """Mean canvas side of those batches."""
    graphs: int
    """Graphs TorchDynamo compiled during the window (0 for a valid timing)."""


class WorkMeter:
    """Counts the agent's training FLOPs of every batch a trainee's sampler draws (it wraps
    ``trainee.sampler.batch``): bench/flops.py's ``agent_train_flops`` at the batch's canvas side."""

    def __init__(self, trainee) -> None:
        params = sum(p.numel() for p in trainee.learner.agent.parameters())
        self.flops, self.sides = 0.0, []
        draw = trainee.sampler.batch

        def batch(task, side=None):
            b = draw(task, side)
            self.flops += agent_train_flops(b.size, b.side, params, trainee.cfg.agent)
            self.sides.append(b.side)
            return b
        trainee.sampler.batch = batch

    def reset(self) -> None:
        self.flops, self.sides = 0.0, []

    def window(self, steps: int, seconds: float, graphs: int) -> Window:
        return Window(steps / seconds, self.flops / seconds / 1e12, float(np.mean(self.sides)) if self.sides else 0.0,
                      graphs)


def random_delta(trainee, rng: np.random.Generator) -> torch.Tensor:
    """The refiner's prompt delta for a uniformly random action, as the loops act with."""
    return trainee.refiner.delta(rng.uniform(-1, 1, trainee.cfg.env.action_dim))


def warm_every_side(trainee, rng: np.random.Generator) -> list[int]:
    """One action (``trainee.act``) on a task of each task side the trainee's sampler holds, smallest
    first, each with a fresh :func:`random_delta`: the compiled step meets every canvas side before a
    timed window does. Returns the sides, in the order they were met."""
    by_side = {}
    for t in trainee.sampler.tasks:
        by_side.setdefault(task_side(t), t)
    sides = sorted(by_side)
    for side in sides:
        trainee.act(by_side[side], random_delta(trainee, rng))
    return sides


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(cfg: ExperimentConfig, steps: int, warmup: int, device: torch.device) -> Window:
    """The timed window of a plain loop."""
    from envs.trainee import build_trainee

    trainee = build_trainee(cfg)
    meter = WorkMeter(trainee)
    learner, sampler = trainee.learner, trainee.sampler
    rng = np.random.default_rng(0)
    if cfg.learner.compile:
        warm_every_side(trainee, rng)
    task, steps0 = None, 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            meter.reset()
            steps0, graphs0, start = learner.steps, compiled_graphs(), time.perf_counter()
        if i % cfg.env.steps_per_episode == 0:
            task = sampler.sample_task()
        trainee.act(task, random_delta(trainee, rng))
    sync(device)
    return meter.window(learner.steps - steps0, time.perf_counter() - start, compiled_graphs() - graphs0)


def through_rllib(cfg: ExperimentConfig, iterations: int, device: torch.device) -> Window:
    """The timed window of ``algo.train()`` with the env in the algorithm process."""
    import ray

    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config

    gpus = 1 if device.type == "cuda" else 0
    ray.init(num_cpus=max(2, cfg.tune.cpus_per_trial), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        pc = ppo_config(cfg).learners(num_learners=0, num_gpus_per_learner=gpus)
        algo = EFEPPO(config=pc)
        meter = WorkMeter(algo.trainee)
        if cfg.learner.compile:
            warm_every_side(algo.trainee, np.random.default_rng(1))
        algo.train()  # warm-up (and the first held-out evaluation)
        learner = algo.trainee.learner
        sync(device)
        meter.reset()
        steps0, graphs0, start = learner.steps, compiled_graphs(), time.perf_counter()
        for _ in range(iterations):
            algo.train()
        sync(device)
        window = meter.window(learner.steps - steps0, time.perf_counter() - start, compiled_graphs() - graphs0)
        algo.stop()
        return window
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iterations", type=int, default=4, help="RLlib iterations timed")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args(argv)
    cfg = build_config(args.preset, args.overrides)
    # Held-out evaluation is not part of the update path: push it past the timed iterations.
    cfg = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, eval_every=10_000),
                              env=dataclasses.replace(cfg.env, device=args.device))
    device = torch.device(args.device)
    steps = args.iterations * cfg.rl.train_batch_size  # env steps (actions)
    a = bare_loop(cfg, steps, warmup=cfg.rl.train_batch_size, device=device)
    b = through_rllib(cfg, args.iterations, device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    k = cfg.env.learner_steps_per_action
    print(f"device: {card}   preset: {args.preset}   env steps timed: {steps} ({k} learner step(s) each)")
    for name, w in (("(a) bare PyTorch loop", a), ("(b) RLlib PPO + env  ", b)):
        print(f"{name} : {w.steps_per_s:8.2f} learner steps/s, agent {w.tflops:8.3f} TFLOP/s "
              f"(mean canvas side {w.mean_side:.1f})")
    print(f"ratio b/a             : {b.steps_per_s / a.steps_per_s:8.3f} (learner steps)")
    print(f"ratio b/a, by work    : {b.tflops / a.tflops:8.3f} (the agent's FLOPs: the mix of task sizes taken out)")
    for name, w in (("(a)", a), ("(b)", b)):
        if w.graphs:
            print(f"INVALID TIMING: {w.graphs} graph(s) compiled while {name} was timed: its rate includes compile time")
    print("command: " + command_line("ray_overhead.py", argv))
    if a.graphs or b.graphs:
        raise SystemExit(3)


if __name__ == "__main__":
    main()
