"""Small ARC tasks shared by the evaluation and export tests: tasks from literal grids, rule tasks on
random grids, the synthetic evaluation split, and a folder of task files to pass as ``--split``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid

G = as_grid


def make_task(task_id: str, train: list[tuple], test: list[tuple]) -> Task:
    """A task from lists of (input rows, output rows or None)."""
    def pairs(items):
        return tuple(Pair(G(i), None if o is None else G(o)) for i, o in items)
    return Task(task_id, pairs(train), pairs(test))


def random_grid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w) grid of random colours 0..9."""
    return rng.integers(0, 10, size=(h, w))


def rule_task(task_id: str, fn, *, seed: int = 0, n_train: int = 3, n_test: int = 1, shape=(3, 4)) -> Task:
    """A task whose outputs are ``fn(input)`` on random grids of ``shape``, test outputs included."""
    rng = np.random.default_rng(seed)
    items = [(g, fn(g)) for g in (random_grid(rng, *shape) for _ in range(n_train + n_test))]
    return make_task(task_id, items[:n_train], items[n_train:])


def eval_tasks() -> list[Task]:
    """The evaluation split: the synthetic rules on 4x4 grids, two test inputs each, ids "ev...";
    none of them is among the tasks the test checkpoints trained on (ids "tr...")."""
    return synthetic_tasks(side=4, seed=1, prefix="ev", num_test=2)


def write_tasks(folder: Path, tasks: list[Task]) -> Path:
    """``folder`` holding one ``<task id>.json`` per task; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (folder / f"{t.task_id}.json").write_text(json.dumps(t.to_json()))
    return folder
