"""Where the GPU waits: idle gaps between kernels in a PyTorch profiler trace, and their cause.

Run (from the repository root, on a trace written by ``learner_step.py --profile --trace``):

    python bench/learner_step.py --device cuda --profile --trace /tmp/t.json ...
    python bench/gpu_idle.py /tmp/t.json --steps 8

What it prints: the GPU-busy and idle time per step; the idle time split by the learner phase
(``learner/prepare``, ``learner/forward``, ...) in which the kernel that ended each gap was
launched, and by the CPU operator that launched it; and the host calls that blocked on the GPU
(stream or device synchronisation, pageable copies) with the operator they ran in. A gap is
time in which no kernel, copy or memset runs on any stream. The kernel after a gap was launched
late, so the CPU work before its launch is what the GPU waited for.
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections import defaultdict
from command import command_line

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
BLOCKING = ("Synchronize", "cudaMemcpy", "cudaStreamWaitEvent", "cudaEventSynchronize")


def load_events(path: str) -> list[dict]:
    """The complete ("X") events of a Chrome trace file."""
    with open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def busy_intervals(gpu: list[dict]) -> list[tuple[float, float, dict]]:
    """Merged (start, end, first event) intervals in which some GPU work runs, in µs, by start."""
    merged: list[list] = []
    for e in sorted(gpu, key=lambda e: e["ts"]):
        start, end = float(e["ts"]), float(e["ts"]) + float(e["dur"])
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end, e])
    return [(s, t, e) for s, t, e in merged]


class Enclosing:
    """The innermost (or outermost) event of a set that contains a time, per thread, by binary search."""

    def __init__(self, events: list[dict]):
        self.by_tid: dict = defaultdict(list)
        for e in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            self.by_tid[e.get("tid")].append(e)
        self.starts = {tid: [e["ts"] for e in es] for tid, es in self.by_tid.items()}
        self.top: dict = {}  # per thread: the events no other event encloses
        for tid, es in self.by_tid.items():
            top, end = [], float("-inf")
            for e in es:
                if e["ts"] >= end:
                    top.append(e)
                    end = e["ts"] + e["dur"]
            self.top[tid] = (top, [e["ts"] for e in top])

    def at(self, ts: float, tid=None, outermost: bool = False) -> dict | None:
        found = []
        for t in ([tid] if tid is not None else list(self.by_tid)):
            if outermost:
                top, starts = self.top.get(t, ([], []))
                i = bisect.bisect_right(starts, ts) - 1
                if i >= 0 and top[i]["ts"] + top[i]["dur"] >= ts:
                    found.append(top[i])
                continue
            es, starts = self.by_tid.get(t, []), self.starts.get(t, [])
            for e in reversed(es[max(0, bisect.bisect_right(starts, ts) - 2000): bisect.bisect_right(starts, ts)]):
                if e["ts"] + e["dur"] >= ts:  # the latest-starting event that contains ts is the innermost
                    found.append(e)
                    break
        if not found:
            return None
        return max(found, key=lambda e: e["dur"]) if outermost else min(found, key=lambda e: e["dur"])


def analyse(path: str, steps: int, min_gap_us: float = 2.0, top: int = 12) -> str:
    events = load_events(path)
    gpu = [e for e in events if e.get("cat") in GPU_CATS]
    if not gpu:
        return "no GPU events in the trace (profiled on CPU?)"
    runtime = [e for e in events if e.get("cat") in ("cuda_runtime", "cuda_driver")]  # driver: Triton launches
    launch_of = {e["args"]["correlation"]: e for e in runtime if "correlation" in e.get("args", {})}
    phases = Enclosing([e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("learner/")])
    ops = Enclosing([e for e in events if e.get("cat") == "cpu_op"])

    busy = busy_intervals(gpu)
    wall = busy[-1][1] - busy[0][0]
    busy_us = sum(t - s for s, t, _ in busy)
    by_phase: dict[str, float] = defaultdict(float)
    by_op: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for (_, end, _), (start, _, nxt) in zip(busy, busy[1:]):
        gap = start - end
        if gap < min_gap_us:
            continue
        launch = launch_of.get(nxt.get("args", {}).get("correlation"))
        if launch is None:
            by_phase["(launch not found)"] += gap
            continue
        phase = phases.at(launch["ts"])
        by_phase[phase["name"] if phase else "(outside the step)"] += gap
        outer = ops.at(launch["ts"], launch.get("tid"), outermost=True)
        inner = ops.at(launch["ts"], launch.get("tid"))
        key = f"{outer['name'] if outer else '-'} > {inner['name'] if inner else launch['name']}"
        by_op[key][0] += gap
        by_op[key][1] += 1

    blocking: dict[str, list] = defaultdict(lambda: [0.0, 0])
    for e in runtime:
        if any(b in e["name"] for b in BLOCKING) and e["dur"] >= 20:
            outer = ops.at(e["ts"], e.get("tid"), outermost=True)
            phase = phases.at(e["ts"])
            key = f"{phase['name'] if phase else '-'}: {outer['name'] if outer else '-'} > {e['name']}"
            blocking[key][0] += e["dur"]
            blocking[key][1] += 1

    idle = wall - busy_us
    lines = [f"GPU span {wall / 1000 / steps:.1f} ms/step: busy {busy_us / 1000 / steps:.1f}, "
             f"idle {idle / 1000 / steps:.1f} ms/step ({100 * idle / wall:.0f}%)",
             "idle time by the phase that launched the kernel after the gap (ms/step):"]
    for name, us in sorted(by_phase.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {us / 1000 / steps:7.2f}  {name}")
    lines.append(f"idle time by launching operator (outermost > innermost), top {top} (ms/step, gaps/step):")
    for name, (us, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {us / 1000 / steps:7.2f} {n / steps:6.1f}  {name[:120]}")
    lines.append("host calls that waited >= 20 us (ms/step, calls/step):")
    for name, (us, n) in sorted(blocking.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"  {us / 1000 / steps:7.2f} {n / steps:6.1f}  {name[:120]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", help="Chrome trace JSON from torch.profiler (learner_step.py --trace)")
    ap.add_argument("--steps", type=int, default=1, help="learner steps in the trace (for per-step figures)")
    ap.add_argument("--top", type=int, default=12, help="rows per table (default 12)")
    args = ap.parse_args(argv)
    print(analyse(args.trace, args.steps, top=args.top))
    print("command: " + command_line("gpu_idle.py", argv))


if __name__ == "__main__":
    main()
