"""Helpers of bench/learner_step.py: where the GPU time of a step goes, and a bare Qwen2 loop.

Not run on its own: ``python bench/learner_step.py --profile`` prints :func:`kernel_breakdown`
(GPU kernel time per step by kind, the GPU-busy share of the wall time, the top kernels), and
``--compare --bare`` times :func:`bare_qwen_step_time` (Qwen alone: the reference a learner step
is measured against).
"""

from __future__ import annotations

import time

import torch

from efe_ray.config import ExperimentConfig


def profiler_activities(device: torch.device) -> list:
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


KERNEL_KINDS = (  # (kind, substrings of the kernel name), first match wins
    ("attention", ("flash", "fmha", "attention", "cudnn", "sdpa")),
    ("optimizer", ("adam",)),
    ("matmul", ("gemm", "sm90_xmma", "cutlass", "nvjet", "matmul", "ampere_", "sm80_")),
    ("norms/grad-norm", ("norm",)),
    ("copy/cast", ("copy", "convert", "cast", "to_copy")),
    ("reduce", ("reduce",)),
    ("elementwise", ("elementwise", "vectorized", "triton_", "pointwise", "foreach")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    for kind, keys in KERNEL_KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def kernel_summary(profiler, wall_s: float, steps: int) -> dict:
    """Per step: GPU kernel ms by kind, the GPU-busy share of the wall time, kernel launches, the
    top kernels (name, ms/step, launches/step), and the host's CUDA runtime calls by host time (name,
    ms/step, calls/step): a call that waits for the GPU (a synchronisation, a copy to pageable
    memory, a pinned allocation) shows as host time far above a launch's, from a finished profiler."""
    per_kind: dict[str, float] = {}
    per_name: dict[str, list] = {}
    runtime: dict[str, list] = {}
    for evt in profiler.key_averages():
        if evt.device_type == torch.autograd.DeviceType.CPU and evt.key.startswith("cuda"):
            runtime[evt.key] = [runtime.get(evt.key, [0.0, 0])[0] + evt.cpu_time_total, evt.count]
            continue
        us = getattr(evt, "device_time_total", 0.0) if evt.device_type == torch.autograd.DeviceType.CUDA else 0.0
        if us <= 0 or getattr(evt, "is_user_annotation", False) or "#" in evt.key:
            continue  # a range around kernels (e.g. "Optimizer.step#AdamW.step"), not a kernel
        kind = kernel_kind(evt.key)
        per_kind[kind] = per_kind.get(kind, 0.0) + us
        per_name[evt.key] = [per_name.get(evt.key, [0.0, 0])[0] + us, evt.count]
    busy = sum(per_kind.values()) / 1e6
    top = sorted(per_name.items(), key=lambda kv: -kv[1][0])[:12]
    return {"wall_ms": 1000 * wall_s / steps, "kernel_ms": 1000 * busy / steps, "gpu_busy": busy / wall_s,
            "kernels_per_step": sum(c for _, c in per_name.values()) / steps,
            "per_kind_ms": {k: us / 1000 / steps for k, us in sorted(per_kind.items(), key=lambda kv: -kv[1])},
            "top_kernels": [(name, us / 1000 / steps, count / steps) for name, (us, count) in top],
            "runtime_calls": [(name, us / 1000 / steps, count / steps)
                              for name, (us, count) in sorted(runtime.items(), key=lambda kv: -kv[1][0])[:8]]}


def kernel_breakdown(summary: dict) -> str:
    """:func:`kernel_summary` as the lines the benchmark prints."""
    busy = sum(summary["per_kind_ms"].values()) or 1.0
    lines = [f"  wall {summary['wall_ms']:.1f} ms/step, GPU kernels {summary['kernel_ms']:.1f} ms/step "
             f"({100 * summary['gpu_busy']:.0f}% busy), {summary['kernels_per_step']:.0f} kernels/step"]
    for kind, ms in summary["per_kind_ms"].items():
        lines.append(f"  {kind:16s} {ms:8.2f} ms/step  {100 * ms / busy:5.1f}%")
    lines.append("  top kernels (ms/step, launches/step):")
    for name, ms, count in summary["top_kernels"]:
        lines.append(f"    {ms:7.2f} {count:6.0f}  {name[:110]}")
    if summary.get("runtime_calls"):
        lines.append("  CUDA runtime calls on the host (ms/step, calls/step):")
        for name, ms, count in summary["runtime_calls"]:
            lines.append(f"    {ms:7.2f} {count:6.0f}  {name}")
    return "\n".join(lines)


def bare_qwen_step_time(shape: dict, precision: str, args, device: torch.device) -> tuple[float, float]:
    """(s/step, peak MiB) of a bare Qwen2Model loop of ``shape`` (PromptConfig overrides): random tokens (batch 1,
    ``--max-tokens``), mean-pooled output, fused AdamW, SDPA, autocast as ``precision``.

    The reference the learner step is measured against: Qwen alone, nothing of this project.
    """
    from efe_ray.models.prompt import load_qwen_body

    p = ExperimentConfig().prompt
    for k, v in shape.items():
        setattr(p, k, v)
    p.max_tokens = args.max_tokens
    model, tokenizer = load_qwen_body(p)  # the learner's Qwen2Model of that shape, SDPA attention
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(0, tokenizer.vocab_size, (1, args.max_tokens), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = model(input_ids=ids, use_cache=False).last_hidden_state.mean(1).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return seconds, peak
