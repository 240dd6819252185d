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
b/a, and the command line. With ``learner.compile=true``, a timed window in which TorchDynamo
compiled a graph (a canvas side the warm-up had not seen) is named, and the run exits with status 3:
that rate includes compile time.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from efe_ray.config import ExperimentConfig
from tuning.presets import build_config
from command import command_line
from compiled import compiled_graphs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(cfg: ExperimentConfig, steps: int, warmup: int, device: torch.device) -> tuple[float, int]:
    """Learner steps per second of a plain loop, and the graphs compiled while it was timed."""
    from envs.trainee import build_trainee

    trainee = build_trainee(cfg)
    learner, sampler, refiner = trainee.learner, trainee.sampler, trainee.refiner
    rng = np.random.default_rng(0)
    task, steps0 = None, 0
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            steps0, graphs0, start = learner.steps, compiled_graphs(), time.perf_counter()
        if i % cfg.env.steps_per_episode == 0:
            task = sampler.sample_task()
        trainee.act(task, refiner.delta(rng.uniform(-1, 1, cfg.env.action_dim)))
    sync(device)
    return (learner.steps - steps0) / (time.perf_counter() - start), compiled_graphs() - graphs0


def through_rllib(cfg: ExperimentConfig, iterations: int, device: torch.device) -> tuple[float, int]:
    """Learner steps per second of ``algo.train()`` with the env in the algorithm process, and the
    graphs compiled while it was timed."""
    import ray

    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config

    gpus = 1 if device.type == "cuda" else 0
    ray.init(num_cpus=max(2, cfg.tune.cpus_per_trial), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    try:
        pc = ppo_config(cfg).learners(num_learners=0, num_gpus_per_learner=gpus)
        algo = EFEPPO(config=pc)
        algo.train()  # warm-up (and the first held-out evaluation)
        learner = algo.trainee.learner
        sync(device)
        steps0, graphs0, start = learner.steps, compiled_graphs(), time.perf_counter()
        for _ in range(iterations):
            algo.train()
        sync(device)
        rate = (learner.steps - steps0) / (time.perf_counter() - start)
        algo.stop()
        return rate, compiled_graphs() - graphs0
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
    a, graphs_a = bare_loop(cfg, steps, warmup=cfg.rl.train_batch_size, device=device)
    b, graphs_b = through_rllib(cfg, args.iterations, device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    k = cfg.env.learner_steps_per_action
    print(f"device: {card}   preset: {args.preset}   env steps timed: {steps} ({k} learner step(s) each)")
    print(f"(a) bare PyTorch loop : {a:8.2f} learner steps/s")
    print(f"(b) RLlib PPO + env   : {b:8.2f} learner steps/s")
    print(f"ratio b/a             : {b / a:8.3f}")
    for name, graphs in (("(a)", graphs_a), ("(b)", graphs_b)):
        if graphs:
            print(f"INVALID TIMING: {graphs} graph(s) compiled while {name} was timed: its rate includes compile time")
    print("command: " + command_line("ray_overhead.py", argv))
    if graphs_a or graphs_b:
        raise SystemExit(3)


if __name__ == "__main__":
    main()
