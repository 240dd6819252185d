"""Checks a search passes before Ray starts, beyond the config's own bounds.

:func:`preflight` (called by ``python -m efe_ray.tune`` after the config, tasks and GPU plan):

* the storage path can be written: it, or the nearest folder above it that exists, is a folder in
  which a file can be created (a read-only or mistyped path is found now, not after Ray starts);
* CPU trials fit in this machine's memory: ``efe_ray/memory.py``'s estimate of one trial's peak
  (the same one that plans GPU sharing) times the trials that run at once, against the memory
  available now. Skipped when joining a cluster (``--address``): its nodes' memory is not known here.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from efe_ray.config import ConfigError, ExperimentConfig
from efe_ray.data.task import Task

__all__ = ["available_memory_gib", "check_cpu_memory", "check_storage", "concurrent_trials", "preflight"]


def check_storage(path: str | os.PathLike[str]) -> Path:
    """The absolute storage path, once a file could be created in it (or in its nearest existing parent).

    Raises ConfigError naming the path when that is impossible. Creates nothing that stays.
    """
    target = Path(path).expanduser().absolute()
    existing = target
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: creating the folder would fail
            raise ConfigError(f"--storage-path {str(path)!r}: {existing} is a dangling link")
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--storage-path {str(path)!r}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(f"--storage-path {str(path)!r}: cannot create files in {existing} "
                          f"({err.strerror or err})") from err
    return target


def available_memory_gib() -> float | None:
    """Memory available to new processes now (``MemAvailable``), or None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20  # kB -> GiB
    except OSError:
        pass
    return None


def concurrent_trials(cfg: ExperimentConfig, num_cpus: int | None) -> int:
    """How many trials a local Ray runs at once: CPUs / CPUs per trial, capped by the samples and
    ``tune.max_concurrent``."""
    cpus = num_cpus or os.cpu_count() or 1
    t = cfg.tune
    k = min(t.num_samples, max(1, cpus // t.cpus_per_trial))
    return min(k, t.max_concurrent) if t.max_concurrent else k


def check_cpu_memory(cfg: ExperimentConfig, tasks: list[Task], num_cpus: int | None,
                     available_gib: float | None) -> str:
    """A one-line account of CPU trials' memory; raises ConfigError when they cannot fit."""
    from efe_ray.memory import estimate_trial_memory, learner_desc

    if available_gib is None:
        return "CPU memory not checked (available memory unknown)"
    try:
        est = estimate_trial_memory(cfg, tasks)
    except ConfigError as err:
        return f"CPU memory not checked: {err}"
    k = concurrent_trials(cfg, num_cpus)
    what = (f"one CPU trial needs ~{est.total_gib:.1f} GiB (canvas {cfg.agent.canvas}, prompts up to "
            f"{est.tokens} tokens, {learner_desc(cfg)})")
    if est.total_gib > available_gib:
        raise ConfigError(f"{what} but this machine has {available_gib:.1f} GiB available: lower agent.canvas, "
                          "learner.batch_size or prompt.max_tokens")
    if k * est.total_gib > available_gib:
        fit = max(1, math.floor(available_gib / est.total_gib))
        raise ConfigError(f"{what}; {k} would run at once but only {fit} fit in the {available_gib:.1f} GiB "
                          f"available: --set tune.max_concurrent={fit}")
    return f"{what}; {k} at once fit in the {available_gib:.1f} GiB available"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def preflight(cfg: ExperimentConfig, tasks: list[Task], storage_path: str | os.PathLike[str], *,
              address: str | None = None, num_cpus: int | None = None, say: Callable[[str], None] = _stderr) -> None:
    """Run every check above (raising ConfigError on the first failure); findings go to ``say``."""
    check_storage(storage_path)
    if cfg.tune.gpus_per_trial == 0 and not address:
        say(f"CPU memory: {check_cpu_memory(cfg, tasks, num_cpus, available_memory_gib())}")
