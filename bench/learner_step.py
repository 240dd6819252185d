"""Benchmark one EFE learner step of the embedded default on real ARC-AGI-1 training tasks.

Run (from the repository root):

    python bench/learner_step.py                       # CPU, fp32, 24 timed steps after 2 warm-up
    python bench/learner_step.py --steps 40 --device cuda --precision bf16

What it measures: the prompt, agent and learner configs of the default ``ExperimentConfig``
(embedded Qwen2 body, canvas 30), trained on a handful of ``arc1-train`` tasks (spread over the
sorted task list, keeping those whose grids fit the canvas). Steps run in episodes of
``EnvConfig.steps_per_episode`` consecutive steps on one task, as the environment runs them, so
the Qwen embedding is recomputed on the first step of a task and every ``cache_every`` steps
("fresh" steps) and reused in between ("cached" steps). Warm-up steps are not timed.

What it prints: a block of figures (steps/s; tasks/s = task samples per second = steps/s x
batch_size; samples/s including the rehearsal samples from other tasks; mean fresh and cached
step times; peak resident memory from ``resource.getrusage`` max RSS, and on CUDA
``torch.cuda.max_memory_allocated`` over the timed steps), then, on the last line, the exact
command that produced them.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from efe_ray.config import ExperimentConfig  # noqa: E402
from efe_ray.data.loaders import load_tasks  # noqa: E402
from efe_ray.learner import EFELearner, known_pairs  # noqa: E402


def pick_tasks(source: str, n: int, side: int) -> list:
    """``n`` tasks spread evenly over the sorted list, among those whose every grid fits ``side``."""
    fits = [t for t in load_tasks(source)
            if all(max(g.shape) <= side for p in t.train + t.test for g in (p.input, p.output) if g is not None)
            and len(known_pairs(t)) >= 2]
    if len(fits) < n:
        raise SystemExit(f"only {len(fits)} tasks of {source} fit a {side}x{side} canvas; asked for {n}")
    idx = np.linspace(0, len(fits) - 1, n).round().astype(int)
    return [fits[i] for i in idx]


def main(argv: list[str] | None = None) -> None:
    defaults = ExperimentConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24, help="timed learner steps (default 24)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--precision", default=defaults.learner.precision, choices=["fp32", "bf16", "fp16"],
                    help=f"learner precision (default {defaults.learner.precision})")
    ap.add_argument("--tasks", type=int, default=6, help="number of arc1-train tasks (default 6)")
    ap.add_argument("--source", default="arc1-train", help="task source (default arc1-train)")
    ap.add_argument("--seed", type=int, default=0, help="learner seed (default 0)")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.tasks < 1:
        ap.error("need --steps >= 1, --warmup >= 0 and --tasks >= 1")

    cfg = ExperimentConfig()
    cfg.learner.precision = args.precision
    cfg.learner.seed = args.seed
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
        torch.cuda.set_device(device)
    tasks = pick_tasks(args.source, args.tasks, cfg.agent.canvas)

    t0 = time.perf_counter()
    learner = EFELearner(tasks, cfg.prompt, cfg.agent, cfg.learner, device=device)
    build_s = time.perf_counter() - t0
    episode = cfg.env.steps_per_episode
    rng = np.random.default_rng(args.seed)
    delta = (0.05 * rng.standard_normal(cfg.prompt.prompt_dim)).astype(np.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[tuple[float, bool]] = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and device.type == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats(device)
        task = tasks[(i // episode) % len(tasks)]
        sync()
        start = time.perf_counter()
        m = learner.step(task, delta)
        sync()
        if i >= args.warmup:
            times.append((time.perf_counter() - start, m["qwen_fresh"] == 1.0))

    total = sum(t for t, _ in times)
    fresh = [t for t, f in times if f]
    cached = [t for t, f in times if not f]
    steps_per_s = len(times) / total
    batch, rehearsal = cfg.learner.batch_size, cfg.learner.rehearsal if len(tasks) > 1 else 0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    cells = [g.size for t in tasks for p in known_pairs(t) for g in (p.input, p.output)]
    p, a = cfg.prompt, cfg.agent
    n_params = sum(x.numel() for x in learner.prompt.parameters()) + sum(x.numel() for x in learner.agent.parameters())

    def ms(xs: list[float]) -> str:
        return f"{1000 * float(np.mean(xs)):.0f} ms (n={len(xs)})" if xs else "n/a"

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        "== learner_step benchmark ==",
        f"device               {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"precision            {args.precision}",
        f"model                embedded Qwen2 {p.num_layers}x{p.hidden_size} (max_tokens {p.max_tokens}), "
        f"prompt_dim {p.prompt_dim}, agent canvas {a.canvas} d_model {a.d_model} x{a.num_layers}; "
        f"{n_params / 1e6:.2f} M parameters",
        f"tasks                {len(tasks)} of {args.source}: {', '.join(t.task_id for t in tasks)} "
        f"(mean grid {np.mean(cells):.0f} cells)",
        f"batch                {batch} task samples + {rehearsal} rehearsal samples per step; "
        f"episodes of {episode} steps, cache_every {cfg.learner.cache_every}",
        f"steps                {len(times)} timed after {args.warmup} warm-up (build {build_s:.1f} s)",
        f"steps/s              {steps_per_s:.3f}",
        f"tasks/s              {steps_per_s * batch:.2f}  (task samples/s = steps/s x batch_size {batch})",
        f"samples/s            {steps_per_s * (batch + rehearsal):.2f}  (including rehearsal)",
        f"step time            fresh Qwen {ms(fresh)}, cached Qwen {ms(cached)}",
        f"peak RSS             {rss_mib:.0f} MiB (getrusage max RSS, whole process)",
    ]
    if device.type == "cuda":
        lines.append(f"peak CUDA allocated  {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB (timed steps)")
    lines.append(f"skipped steps        {learner.skipped_steps}")
    print("\n".join(lines))
    cmd = (f"python bench/learner_step.py --steps {args.steps} --warmup {args.warmup} --device {args.device} "
           f"--precision {args.precision} --tasks {args.tasks} --source {args.source} --seed {args.seed}")
    print(cmd)


if __name__ == "__main__":
    main()
