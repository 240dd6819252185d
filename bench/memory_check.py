"""Measured against estimated peak GPU memory of one trial's learner (efe_ray/memory.py).

Run (from the repository root, on a machine with a CUDA GPU):

    python bench/memory_check.py
    python bench/memory_check.py --configs gpu,qwen2.5-1.5b-bf16 --steps 3

What it does, for each named config: builds the learner on that config's training tasks, then
runs ``--steps`` learner steps on the task with the longest prompt, recomputing the Qwen
embedding every step (``cache_every=1``) so that each step holds the largest activations. It
prints the estimate (allocator peak and the planning figure with margin and CUDA context), the
measured allocator peak (``torch.cuda.max_memory_allocated``) and the measured process peak (the
allocator's reserved peak plus the CUDA context), and how many trials ``tune.share_gpus`` would
put on this card. The exit status is 1 if any measured peak exceeds its estimate.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from efe_ray.data.batching import MAX_DEMOS, TaskSampler  # noqa: E402
from efe_ray.data.serialize import prompt_text  # noqa: E402
from efe_ray.data.sources import resolve_tasks  # noqa: E402
from efe_ray.learner import EFELearner  # noqa: E402
from efe_ray.memory import GIB, estimate_trial_memory, trials_per_gpu  # noqa: E402
from tuning.presets import build_config  # noqa: E402

from learner_step import SHAPES  # noqa: E402  (bench/ is the script's folder)
from command import command_line  # noqa: E402  (bench/)


def qwen_shape(shape: str, batch: int, rehearsal: int) -> list[str]:
    """Overrides for a Qwen2.5-shaped prompt encoder, 4096-token prompts, all training tasks."""
    return ([f"prompt.{k}={v}" for k, v in SHAPES[shape].items()]
            + ["prompt.max_tokens=4096", f"learner.batch_size={batch}", f"learner.rehearsal={rehearsal}",
               "data.max_train_tasks=0"])


QWEN_1_5B = qwen_shape("qwen2.5-1.5b", batch=1, rehearsal=0)
CONFIGS = {  # name -> (preset, overrides)
    "default": ("default", []),
    "gpu": ("gpu", []),
    "qwen2.5-0.5b-bf16": ("gpu", qwen_shape("qwen2.5-0.5b", batch=2, rehearsal=2)),
    "qwen2.5-1.5b-bf16": ("gpu", QWEN_1_5B),
    "qwen2.5-1.5b-fp32": ("gpu", QWEN_1_5B + ["learner.precision=fp32"]),
}
"""The configs checked: the two shipped presets and Qwen2.5-shaped prompt encoders."""


def measure(name: str, steps: int, device: torch.device) -> dict:
    preset, overrides = CONFIGS[name]
    cfg = build_config(preset, overrides + ["learner.cache_every=1"])
    train, _ = resolve_tasks(cfg.data, cfg.agent.canvas)
    est = estimate_trial_memory(cfg, train)
    longest = max(train, key=lambda t: len(prompt_text(t.train[:MAX_DEMOS], t.test[0].input)))
    torch.cuda.reset_peak_memory_stats(device)
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner, device=device)
    sampler = TaskSampler(train, cfg.learner, cfg.agent.canvas)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        delta = (0.05 * rng.standard_normal(cfg.prompt.prompt_dim)).astype(np.float32)
        learner.step(sampler.batch(longest), delta)
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    context = (total - free) - torch.cuda.memory_reserved(device)  # CUDA context and library workspaces
    out = {
        "name": name, "est": est, "allocated": torch.cuda.max_memory_allocated(device),
        "process": torch.cuda.max_memory_reserved(device) + context, "card_gib": total / GIB,
    }
    del learner
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from {', '.join(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=3, help="learner steps per config (default 3)")
    ap.add_argument("--device", default="cuda", help="a CUDA device (default cuda)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit("memory_check needs a CUDA device")
    device = torch.device("cuda", device.index or 0)
    torch.cuda.set_device(device)
    print(f"== peak GPU memory of one trial: estimate vs measured, {torch.cuda.get_device_name(device)}, "
          f"torch {torch.__version__} ==")
    print(f"{'config':20s} {'tokens':>6s} {'est alloc MiB':>13s} {'meas alloc MiB':>14s} {'ratio':>6s} "
          f"{'est total GiB':>13s} {'meas total GiB':>14s} {'trials/GPU':>10s}")
    bad = 0
    for name in args.configs.split(","):
        r = measure(name, args.steps, device)
        est = r["est"]
        ratio = r["allocated"] / est.allocated
        bad += r["allocated"] > est.allocated or r["process"] / GIB > est.total_gib
        print(f"{name:20s} {est.tokens:6d} {est.allocated / 2**20:13.0f} {r['allocated'] / 2**20:14.0f} "
              f"{ratio:6.2f} {est.total_gib:13.2f} {r['process'] / GIB:14.2f} "
              f"{trials_per_gpu(est.total_gib, r['card_gib']):10d}", flush=True)
    print("every measured peak is below its estimate" if not bad else f"{bad} config(s) exceeded the estimate")
    print("command: " + command_line("memory_check.py", argv))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
