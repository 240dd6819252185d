"""Benchmark one EFE learner step of the embedded default on real ARC-AGI-1 training tasks.

Run (from the repository root):

    python bench/learner_step.py                       # CPU, fp32, 24 timed steps after 2 warm-up
    python bench/learner_step.py --steps 40 --device cuda --precision bf16
    python bench/learner_step.py --device cuda --compare --shapes embedded,qwen2.5-0.5b,qwen2.5-1.5b \
        --precisions fp32,tf32,bf16 --max-tokens 4096 --batch 1 --rehearsal 0 --cache-every 1

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
command that produced them. ``--compare`` runs several Qwen2 shapes (``embedded``, and the
Qwen2.5-0.5B / 1.5B layer shapes with random weights and the grid tokenizer's vocabulary: the
shape decides the speed) in several precisions (``fp32``, ``tf32``: fp32 with TF32 matmuls,
``bf16`` autocast) and prints one row each, with Qwen tokens/s, grid cells/s and model FLOPs
utilisation (MFU: 6·N + 12·L·T·d FLOPs per token for Qwen and the agent, against the card's
dense peak for the dtype). ``--bare`` adds, per shape and precision, a bare ``Qwen2Model`` loop
(random tokens, pooled output, fused AdamW: Qwen alone, the reference); ``--compile`` and
``--sdpa`` set ``learner.compile`` and ``prompt.sdpa_backend``; ``--profile`` prints the GPU
kernel time per step by kind (matmul, attention, optimizer, copies/casts, ...), the share of the
wall time the GPU was busy and the top kernels, and ``--trace t.json`` writes a Chrome trace with
the step's phases (``learner/forward``, ``learner/backward``, ...) as named ranges.
``--sync-debug`` (CUDA) counts the timed steps' synchronising calls, each a wait of the host for the
GPU's queue to drain, by the line of the project's code that made them (the benchmark's own read of
the metrics, once per ``--steps-per-read`` steps, among them).

A run whose timed steps compiled a graph (with ``--compile``, a task whose canvas side or prompt
length the warm-up had not seen) prints ``INVALID TIMING``, writes its record with
``compiled_in_timed`` > 0 and exits with status 3: its figures include compile time.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _code_dir(argv: list[str]) -> str | None:
    """The ``--code DIR`` argument, read before efe_ray is imported (it decides which one is)."""
    for i, a in enumerate(argv):
        if a == "--code" and i + 1 < len(argv):
            return os.path.abspath(argv[i + 1])
        if a.startswith("--code="):
            return os.path.abspath(a.split("=", 1)[1])
    return None


CODE = _code_dir(sys.argv[1:]) or ROOT
sys.path.insert(0, CODE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from efe_ray.config import ExperimentConfig  # noqa: E402
from efe_ray.data.loaders import load_tasks  # noqa: E402
from efe_ray.data.serialize import prompt_text  # noqa: E402
from efe_ray.data.batching import MAX_DEMOS, TaskSampler, known_pairs  # noqa: E402
from efe_ray.learner import EFELearner  # noqa: E402
from tuning.presets import build_config  # noqa: E402

try:  # the device path (an older revision's tree has only the host sampler)
    from efe_ray.data.device_sampler import DeviceSampler  # noqa: E402
except ImportError:
    DeviceSampler = None

from flops import agent_train_flops, peak_tflops, train_flops_per_token  # noqa: E402  (bench/)
from step_profile import bare_qwen_step_time, kernel_breakdown, kernel_summary, profiler_activities  # noqa: E402
from command import command_line  # noqa: E402  (bench/)
from compiled import compiled_graphs  # noqa: E402  (bench/)


def pick_tasks(source: str, n: int, side: int, min_tokens: int = 0) -> list:
    """``n`` tasks spread evenly over the sorted list, among those whose every grid fits ``side``
    and whose prompt text (demonstrations + first test input) has at least ``min_tokens`` characters
    (one grid-tokenizer token each)."""
    fits = [t for t in load_tasks(source)
            if all(max(g.shape) <= side for p in t.train + t.test for g in (p.input, p.output) if g is not None)
            and len(known_pairs(t)) >= 2
            and len(prompt_text(t.train[:MAX_DEMOS], t.test[0].input)) >= min_tokens]
    if len(fits) < n:
        raise SystemExit(f"only {len(fits)} tasks of {source} fit a {side}x{side} canvas; asked for {n}")
    idx = np.linspace(0, len(fits) - 1, n).round().astype(int)
    return [fits[i] for i in idx]


SHAPES = {
    "embedded": {},
    # Qwen2.5 layer shapes (config.json of the released models); the vocabulary is the grid tokenizer's.
    "qwen2.5-0.5b": dict(hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, intermediate_size=4864),
    "qwen2.5-1.5b": dict(hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960),
}
"""Prompt-encoder shapes the benchmark knows."""


def _project(filename: str, root: str) -> str | None:
    """A frame's file as the repository names it (efe_ray/..., bench/...) where it is the project's
    code: this tree's (whatever its folder is called), or an older tree's package given with
    ``--code``; None for anything else, libraries installed inside the tree included."""
    if filename.startswith(root + os.sep):
        rel = os.path.relpath(filename, root)
        return rel if rel.split(os.sep, 1)[0] in ("efe_ray", "bench") else None
    if "/efe_ray/" in filename and "-packages/" not in filename:
        return "efe_ray/" + filename.rsplit("/efe_ray/", 1)[1]
    return None


def sync_site(stack: list[traceback.FrameSummary], root: str = ROOT) -> str:
    """Where a synchronising CUDA call came from (``stack``: outermost first, as
    ``traceback.extract_stack`` gives it): the innermost frame of the project's code (efe_ray/, also
    an older tree's given with ``--code``, or bench/) and, where a library made the call below it,
    that innermost line too."""
    mine = [f for f in stack if _project(f.filename, root)]
    f = mine[-1] if mine else stack[-1]
    site = f"{_project(f.filename, root) or f.filename}:{f.lineno} {f.name}"
    if f is not stack[-1]:
        site += f" (via {_project(stack[-1].filename, root) or stack[-1].filename}:{stack[-1].lineno})"
    return site


class SyncCounter:
    """Counts the synchronising CUDA calls made while it is entered, by :func:`sync_site`: each one
    makes the host wait until the GPU's queue drains. ``cuda``: switch torch's sync debug mode to
    "warn" (what reports them) while entered; other warnings pass through as they were."""

    def __init__(self, cuda: bool = True) -> None:
        self.cuda = cuda
        self.sites: Counter[str] = Counter()

    def __enter__(self) -> "SyncCounter":
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()  # restores the filters and showwarning on exit
        warnings.simplefilter("always")
        shown = warnings.showwarning

        def count(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" not in str(message):
                return shown(message, category, filename, lineno, file, line)
            stack = [f for f in traceback.extract_stack()[:-1] if not f.filename.endswith("warnings.py")]
            self.sites[sync_site(stack)] += 1
        warnings.showwarning = count
        if self.cuda:
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)


def run(shape: str, precision: str, args, device: torch.device) -> dict:
    """Time ``args.steps`` learner steps of one shape and precision; return the figures."""
    cfg = build_config(args.preset or "default", args.overrides) if args.preset or args.overrides else ExperimentConfig()
    for k, v in SHAPES[shape].items():
        setattr(cfg.prompt, k, v)
    cfg.prompt.max_tokens = args.max_tokens or cfg.prompt.max_tokens
    cfg.learner.precision = "fp32" if precision == "tf32" else precision
    cfg.learner.seed = args.seed
    cfg.learner.batch_size = args.batch or cfg.learner.batch_size
    cfg.learner.rehearsal = cfg.learner.rehearsal if args.rehearsal is None else args.rehearsal
    cfg.learner.cache_every = args.cache_every or cfg.learner.cache_every
    cfg.learner.compile = args.compile or cfg.learner.compile
    cfg.prompt.sdpa_backend = args.sdpa
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    tasks = pick_tasks(args.source, args.tasks, cfg.agent.canvas, args.min_tokens)

    t0 = time.perf_counter()
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner, device=device, task_ids=tuple(t.task_id for t in tasks))
    on_device = args.sampler == "device"
    if on_device and DeviceSampler is None:
        raise SystemExit(f"--sampler device: the code in {CODE} has no device sampler; use --sampler host")
    sampler = (DeviceSampler(tasks, cfg.learner, cfg.agent.canvas, device) if on_device
               else TaskSampler(tasks, cfg.learner, cfg.agent.canvas))
    build_s = time.perf_counter() - t0
    cells: list[tuple[int, int]] = []  # (views, canvas side) of each timed step's batch
    tokens = [torch.zeros((), dtype=torch.long, device=device)]  # counted on the device: no read per step
    seqs = [0]  # prompts encoded
    encode = getattr(learner.prompt, "encode_tokens", None)
    if encode is not None:
        def counting_encode(enc):
            tokens[0] = tokens[0] + enc["attention_mask"].sum()
            seqs[0] += enc["attention_mask"].shape[0]
            return encode(enc)
        learner.prompt.encode_tokens = counting_encode
    else:  # an older revision tokenizes texts inside encode_text
        tokenize = learner.prompt.tokenize

        def counting_tokenize(texts, dev):
            enc = tokenize(texts, dev)
            tokens[0] = tokens[0] + enc["attention_mask"].sum()
            seqs[0] += enc["attention_mask"].shape[0]
            return enc
        learner.prompt.tokenize = counting_tokenize
    per_read = args.steps_per_read or getattr(cfg.env, "learner_steps_per_action", 1)
    episode = cfg.env.steps_per_episode * per_read  # learner steps on one task, as the env runs them
    rng = np.random.default_rng(args.seed)
    delta = (0.05 * rng.standard_normal(cfg.prompt.prompt_dim)).astype(np.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: list[tuple[float, bool]] = []  # host path: (s, fresh) of each step, synchronised
    compiled0 = 0
    pending: list[torch.Tensor] = []  # device path: metrics not read yet
    host_s, skipped, profiler, start, syncs = 0.0, 0, None, 0.0, None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if pending:
                torch.stack(pending).cpu()
                pending.clear()
            sync()
            tokens[0], seqs[0] = torch.zeros((), dtype=torch.long, device=device), 0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if args.profile:
                profiler = torch.profiler.profile(activities=profiler_activities(device))
                profiler.__enter__()
            if args.sync_debug:
                syncs = SyncCounter().__enter__()
            compiled0 = compiled_graphs()
            host_s, start = 0.0, time.perf_counter()
        task = tasks[(i // episode) % len(tasks)]
        if on_device:  # as the env drives it: per_read steps queued, then one read of their metrics
            h0 = time.perf_counter()
            batch = sampler.batch(task)
            pending.append(learner.train_step(batch, delta))
            host_s += time.perf_counter() - h0
            if len(pending) == per_read:
                skipped += int(torch.stack(pending)[:, -1].sum().cpu())
                pending.clear()
        else:  # each step synchronises (its metrics are read inside), timed one by one
            sync()
            h0 = time.perf_counter()
            batch = sampler.batch(task)
            m = learner.step(batch, delta)
            sync()
            host_s += time.perf_counter() - h0
            skipped += int(m["skipped"])
            if i >= args.warmup:
                times.append((time.perf_counter() - h0, m["qwen_fresh"] == 1.0))
        if i >= args.warmup:
            cells.append((batch.size if on_device else len(batch.samples) + len(batch.rehearsal), batch.side))
    if pending:
        skipped += int(torch.stack(pending)[:, -1].sum().cpu())
    if syncs is not None:
        syncs.__exit__(None, None, None)
    sync()
    total = time.perf_counter() - start
    compiled = compiled_graphs() - compiled0
    if profiler is not None:
        profiler.__exit__(None, None, None)
        if args.trace:
            profiler.export_chrome_trace(args.trace)  # open in chrome://tracing or ui.perfetto.dev
    tokens = int(tokens[0])
    n = len(cells)

    steps_per_s = n / total
    batch = cfg.learner.batch_size
    p, a = cfg.prompt, cfg.agent
    qwen_params = sum(x.numel() for x in learner.prompt.qwen_parameters()
                      if x is not learner.prompt.qwen.get_input_embeddings().weight)
    agent_params = sum(x.numel() for x in learner.agent.parameters())
    fresh_steps = sum(1 for _, f in times if f)
    views = sum(v for v, _ in cells)
    mean_seq = tokens / max(seqs[0], 1)
    # Each step's batch has its own canvas side S (its largest view): S*S+1 tokens per view, passes
    # times over, and the forward without the refinement that prices the reward (a third of a step).
    agent_flops = sum(agent_train_flops(v, s, agent_params, a) * (1 + batch / v / 3) for v, s in cells)
    flops = tokens * train_flops_per_token(qwen_params, p.num_layers, p.hidden_size, mean_seq) + agent_flops
    peak = peak_tflops(device, precision)
    return {
        "shape": shape, "precision": precision, "steps_per_s": steps_per_s, "tasks_per_s": steps_per_s * batch,
        "samples_per_s": views / total, "host_ms": 1000 * host_s / n, "sampler": args.sampler,
        "tokens_per_s": tokens / total, "cells_per_s": sum(v * s * s for v, s in cells) / total,
        "tflops": flops / total / 1e12, "mfu": (flops / total / 1e12 / peak) if peak else None,
        "peak_mib": (torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "build_s": build_s,
        "fresh": [t for t, f in times if f], "cached": [t for t, f in times if not f], "mean_seq": mean_seq,
        "qwen_params": qwen_params, "agent_params": agent_params, "tasks": tasks, "cfg": cfg,
        "skipped": skipped, "n": n, "per_read": per_read,
        "profile": None if profiler is None else kernel_summary(profiler, total, n),
        "syncs": None if syncs is None else syncs.sites.most_common(),  # (site, count) over the n steps
        "syncs_per_step": None if syncs is None else sum(syncs.sites.values()) / n,
        "compiled_in_timed": compiled,
    }


def compile_warning(r: dict) -> str:
    """A line saying that the timed steps compiled graphs (their figure includes compile time), or ""."""
    if not r["compiled_in_timed"]:
        return ""
    return (f"INVALID TIMING       {r['compiled_in_timed']} graph(s) compiled during the timed steps (a task with "
            "another canvas side or prompt length came after the warm-up): the figures include compile time; "
            "raise --warmup until every task has been seen twice")


def revision(args) -> str:
    """``--revision``, else the short git revision of the code, else "unknown"."""
    if args.revision:
        return args.revision
    try:
        out = subprocess.run(["git", "-C", CODE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def record(r: dict, args, device: torch.device, where: str, command: str) -> dict:
    """The machine-readable record of one measured configuration (bench/step_results.json)."""
    cfg, prof = r["cfg"], r["profile"] or {}
    return {
        "revision": revision(args), "card": where, "date": datetime.date.today().isoformat(),
        "preset": args.preset or "default", "d_model": cfg.agent.d_model, "agent_layers": cfg.agent.num_layers,
        "batch_views": cfg.learner.batch_size + cfg.learner.rehearsal, "precision": r["precision"],
        "heads": cfg.agent.num_heads, "compile": bool(cfg.learner.compile),
        "cuda_graphs": bool(getattr(cfg.learner, "cuda_graphs", False)),  # an older tree has no such setting
        "sampler": r["sampler"], "samples_per_s": r["samples_per_s"],
        "steps_per_s": r["steps_per_s"], "mfu": r["mfu"], "gpu_busy": prof.get("gpu_busy"),
        "kernels_per_step": prof.get("kernels_per_step"), "host_ms_per_step": r["host_ms"],
        "kernel_ms_per_step": prof.get("kernel_ms"),
        "top_kernels": [[name[:120], round(ms, 3), round(c, 1)] for name, ms, c in prof.get("top_kernels", [])[:5]],
        "runtime_calls": [[name, round(ms, 3), round(c, 1)] for name, ms, c in prof.get("runtime_calls", [])[:5]],
        "compiled_in_timed": r["compiled_in_timed"],
        **({} if r["syncs"] is None else {"syncs_per_step": r["syncs_per_step"],
                                           "sync_sites": [[site, round(c / r["n"], 2)] for site, c in r["syncs"][:8]]}),
        "command": command,
    }


def append_record(path: str, rec: dict) -> None:
    """Append ``rec`` to the JSON list in ``path`` (created if missing)."""
    records = json.load(open(path)) if os.path.exists(path) else []
    records.append(rec)
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")
    print(f"record appended to {path}")


def main(argv: list[str] | None = None) -> None:
    defaults = ExperimentConfig()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=24, help="timed learner steps (default 24)")
    ap.add_argument("--preset", default="", help="take the prompt, agent and learner configs from this preset "
                    "(e.g. arc) instead of the defaults")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override on the preset, as python -m efe_ray.tune --set takes it (repeatable)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (default 2)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--precision", default=defaults.learner.precision, choices=["fp32", "tf32", "bf16", "fp16"],
                    help=f"learner precision (default {defaults.learner.precision})")
    ap.add_argument("--tasks", type=int, default=6, help="number of arc1-train tasks (default 6)")
    ap.add_argument("--source", default="arc1-train", help="task source (default arc1-train)")
    ap.add_argument("--seed", type=int, default=0, help="learner seed (default 0)")
    ap.add_argument("--shape", default="embedded", choices=sorted(SHAPES), help="Qwen2 shape (default embedded)")
    ap.add_argument("--compare", action="store_true", help="one row per --shapes x --precisions")
    ap.add_argument("--shapes", default="embedded", help="comma-separated shapes for --compare")
    ap.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated precisions for --compare")
    ap.add_argument("--max-tokens", type=int, default=0, help="prompt.max_tokens (0: the default)")
    ap.add_argument("--batch", type=int, default=0, help="learner.batch_size (0: the default)")
    ap.add_argument("--rehearsal", type=int, default=None, help="learner.rehearsal (default: the default)")
    ap.add_argument("--cache-every", type=int, default=0, help="learner.cache_every (1: Qwen on every step)")
    ap.add_argument("--min-tokens", type=int, default=0, help="only tasks whose prompt has at least this many tokens")
    ap.add_argument("--compile", action="store_true", help="learner.compile: torch.compile Qwen layers, agent and loss")
    ap.add_argument("--sdpa", default="auto", choices=["auto", "cudnn", "flash", "efficient", "math"],
                    help="prompt.sdpa_backend: the SDPA kernel tried first on CUDA (default auto)")
    ap.add_argument("--profile", action="store_true", help="print where the GPU time of the timed steps goes")
    ap.add_argument("--sync-debug", action="store_true",
                    help="count the timed steps' synchronising CUDA calls (each makes the host wait for the GPU) "
                    "by the line of code that made them (torch.cuda.set_sync_debug_mode); CUDA only")
    ap.add_argument("--trace", default="", help="with --profile: also write a Chrome trace of the timed steps here")
    ap.add_argument("--bare", action="store_true",
                    help="with --compare: also time a bare Qwen2Model loop of each shape (the reference)")
    ap.add_argument("--sampler", default="device" if DeviceSampler is not None else "host", choices=["device", "host"],
                    help="device: views drawn and built on the device, metrics read once per --steps-per-read steps "
                    "(as the env runs); host: the host sampler, each step read at once (an older revision's only "
                    "path; default: device where the code has it)")
    ap.add_argument("--steps-per-read", type=int, default=0,
                    help="device sampler: learner steps between reads (0: env.learner_steps_per_action)")
    ap.add_argument("--code", default="", help="benchmark the efe_ray of this folder (e.g. an older revision's "
                    "tree from git archive) with this script, for a before/after on the same machine")
    ap.add_argument("--revision", default="", help="the revision the record names (default: git's HEAD of the code)")
    ap.add_argument("--json", default="", help="append this run's record to a JSON list in this file")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.tasks < 1:
        ap.error("need --steps >= 1, --warmup >= 0 and --tasks >= 1")
    device = torch.device(args.device)
    if args.sync_debug and device.type != "cuda":
        ap.error(f"--sync-debug counts CUDA synchronisations: it needs --device cuda, not {args.device}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
        device = torch.device("cuda", device.index or 0)
        torch.cuda.set_device(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    command = command_line("learner_step.py", argv)
    invalid = 0  # runs whose timed steps compiled: their records are written, and the exit status is 3

    if args.compare:
        print(f"== learner_step comparison on {device} ({where}), torch {torch.__version__} ==")
        print(f"{'shape':14s} {'prec':5s} {'steps/s':>8s} {'tasks/s':>8s} {'tok/s':>10s} {'cells/s':>10s} "
              f"{'TFLOP/s':>8s} {'MFU':>6s} {'peak MiB':>9s} {'seq':>6s}")
        for shape in args.shapes.split(","):
            for precision in args.precisions.split(","):
                if args.bare:
                    sec, peak = bare_qwen_step_time(SHAPES[shape], precision, args, device)
                    print(f"{shape:14s} {precision:5s} {1 / sec:8.3f}  bare Qwen2Model loop, "
                          f"{1000 * sec:.1f} ms/step, peak {peak:.0f} MiB", flush=True)
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                try:
                    r = run(shape, precision, args, device)
                except torch.OutOfMemoryError:
                    print(f"{shape:14s} {precision:5s} out of memory")
                    torch.cuda.empty_cache()
                    continue
                mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "   n/a"
                peak = f"{r['peak_mib']:9.0f}" if r["peak_mib"] is not None else f"{r['rss_mib']:9.0f}"
                print(f"{shape:14s} {precision:5s} {r['steps_per_s']:8.3f} {r['tasks_per_s']:8.2f} "
                      f"{r['tokens_per_s']:10.0f} {r['cells_per_s']:10.0f} {r['tflops']:8.2f} {mfu} {peak} "
                      f"{r['mean_seq']:6.0f}", flush=True)
                if r["profile"]:
                    print(kernel_breakdown(r["profile"]), flush=True)
                warning = compile_warning(r)
                if warning:
                    print(warning, flush=True)
                    invalid += 1
                if args.json:
                    append_record(args.json, record(r, args, device, where, command))
                del r
                gc.collect()  # the previous learner must be gone before the next one's peak is read
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        print(command)
        if invalid:
            raise SystemExit(3)
        return

    r = run(args.shape, args.precision, args, device)
    cfg, p, a = r["cfg"], r["cfg"].prompt, r["cfg"].agent
    batch, rehearsal = cfg.learner.batch_size, cfg.learner.rehearsal if len(r["tasks"]) > 1 else 0
    cells = [g.size for t in r["tasks"] for q in known_pairs(t) for g in (q.input, q.output)]

    def ms(xs: list[float]) -> str:
        return f"{1000 * float(np.mean(xs)):.0f} ms (n={len(xs)})" if xs else "n/a"

    lines = [
        "== learner_step benchmark ==",
        f"device               {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads",
        f"precision            {args.precision}",
        f"model                {args.shape} Qwen2 {p.num_layers}x{p.hidden_size} (max_tokens {p.max_tokens}), "
        f"prompt_dim {p.prompt_dim}, agent canvas {a.canvas} d_model {a.d_model} x{a.num_layers}; "
        f"{(r['qwen_params'] + r['agent_params']) / 1e6:.2f} M parameters",
        f"tasks                {len(r['tasks'])} of {args.source}: {', '.join(t.task_id for t in r['tasks'])} "
        f"(mean grid {np.mean(cells):.0f} cells)",
        f"batch                {batch} task samples + {rehearsal} rehearsal samples per step; "
        f"episodes of {cfg.env.steps_per_episode} steps, cache_every {cfg.learner.cache_every}",
        f"steps                {r['n']} timed after {args.warmup} warm-up (build {r['build_s']:.1f} s)",
        f"code                 {CODE} (revision {revision(args)}), {r['sampler']} sampler, "
        f"metrics read every {r['per_read'] if r['sampler'] == 'device' else 1} step(s)",
        f"steps/s              {r['steps_per_s']:.3f}",
        f"tasks/s              {r['tasks_per_s']:.2f}  (task samples/s = steps/s x batch_size {batch})",
        f"samples/s            {r['samples_per_s']:.2f}  (every view, rehearsal included)",
        f"host time            {r['host_ms']:.1f} ms/step (the host busy building and queuing a step"
        + (", its read included)" if r["sampler"] == "host" else "; reads excluded)"),
        f"Qwen tokens/s        {r['tokens_per_s']:.0f}  (mean prompt {r['mean_seq']:.0f} tokens)",
        f"grid cells/s         {r['cells_per_s']:.0f}",
        f"model TFLOP/s        {r['tflops']:.3f}" + (f"  (MFU {100 * r['mfu']:.1f}%)" if r["mfu"] is not None else ""),
        f"step time            fresh Qwen {ms(r['fresh'])}, cached Qwen {ms(r['cached'])}",
        f"peak RSS             {r['rss_mib']:.0f} MiB (getrusage max RSS, whole process)",
    ]
    if r["peak_mib"] is not None:
        lines.append(f"peak CUDA allocated  {r['peak_mib']:.0f} MiB (timed steps)")
    lines.append(f"skipped steps        {r['skipped']}")
    if r["profile"]:
        lines.append("where the time goes\n" + kernel_breakdown(r["profile"]))
    if r["syncs"] is not None:
        lines.append(f"synchronising calls  {r['syncs_per_step']:.2f} per step"
                     + "".join(f"\n  {c / r['n']:6.2f}/step  {site}" for site, c in r["syncs"]))
    warning = compile_warning(r)
    if warning:
        lines.append(warning)
    print("\n".join(lines))
    print(command)
    if args.json:
        append_record(args.json, record(r, args, device, where, command))
    if warning:
        raise SystemExit(3)


if __name__ == "__main__":
    main()
