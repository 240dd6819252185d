"""Soak test: a CPU search for a long time, resident memory and disk use sampled over time.

Run::

    python bench/soak.py                      # 30 minutes, default preset, samples every 30 s
    python bench/soak.py --minutes 5 --every 10

It starts ``python -m efe_ray.tune`` (default preset, 2 trials that never stop early, checkpoints
every 5 iterations, no dashboard) in its own process group, samples the resident set size (RSS)
of that whole process tree (driver, Ray's daemons, trial actors) every ``--every`` seconds, and
stops the search after ``--minutes``. Each sample also holds the bytes under the experiment's
storage folder (checkpoints, results, TensorBoard files: what pruning keeps bounded). It prints the
samples, the RSS at the end of the warm-up (the first quarter of the run, at least 2 minutes), the
peak after it, and the growth ``(last - warm-up) / warm-up``, the storage folder's size at the end
and its largest, then the command line.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from command import command_line

PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process (Linux /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    out[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Ray's daemons and workers)."""
    parents = _parents()
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for p in tree:
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def disk_bytes(folder: str) -> int:
    """Bytes of the regular files under ``folder`` (files that vanish while walking are skipped)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                continue
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--preset", default="default")
    args = ap.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="efe-soak-")
    budget = args.minutes * 60
    cmd = [sys.executable, "-m", "efe_ray.tune", "--preset", args.preset, "--no-dashboard",
           "--storage-path", storage, "--name", "soak", "--iterations", "1000000",
           "--time-budget-s", str(budget), "--set", "tune.grace_period=1000000", "--set", "tune.checkpoint_every=5"]
    log = open(os.path.join(storage, "tune.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    samples: list[tuple[float, int]] = []
    disk: list[int] = []
    start = time.time()
    try:
        while proc.poll() is None and time.time() - start < budget + 120:
            samples.append((time.time() - start, tree_rss(proc.pid)))
            disk.append(disk_bytes(storage))
            print(f"t={samples[-1][0]:7.0f} s  RSS={samples[-1][1] / 2**20:8.0f} MiB  disk={disk[-1] / 2**20:7.1f} MiB",
                  flush=True)
            time.sleep(args.every)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
    warm_t = max(120.0, 0.25 * budget)
    after = [(t, r) for t, r in samples if t >= warm_t and r > 0]
    if not after:
        raise SystemExit("the search ended before the warm-up did; see " + os.path.join(storage, "tune.log"))
    warm, last = after[0][1], after[-1][1]
    peak = max(r for _, r in after)
    print(f"warm-up RSS (t={after[0][0]:.0f} s): {warm / 2**20:.0f} MiB; peak after: {peak / 2**20:.0f} MiB; "
          f"last: {last / 2**20:.0f} MiB")
    print(f"growth after warm-up: {100 * (last - warm) / warm:+.1f}%  (peak {100 * (peak - warm) / warm:+.1f}%)")
    print(f"storage folder: {disk_bytes(storage) / 2**20:.1f} MiB at the end, {max(disk) / 2**20:.1f} MiB at most")
    print(f"search exit code: {proc.returncode}; log: {os.path.join(storage, 'tune.log')}")
    print("command: " + command_line("soak.py", argv))


if __name__ == "__main__":
    main()
