"""Learning from the evaluation tasks' demonstrations without ever reading their test outputs.

Every strong small-model ARC result trains on the evaluation tasks' demonstration pairs (TRM, HRM)
or adapts to them at test time (the ARChitects, the MIT test-time-training paper): a task's
demonstrations are part of its input. Its test outputs never are. With ``data.transductive`` the
evaluation tasks are therefore read **blinded** (:func:`efe_ray.data.task.blind`, right after
loading: nothing downstream ever holds a test output) and split, per task, by :func:`split`:

- a **training** version: the demonstrations, minus one held out where there are three or more,
  trained on like any training task (leave-one-out views); a checkpoint records it with exposure
  ``"demonstrations"`` and the hashes of its pairs (efe_ray/checkpoint.py);
- a **held-out** version: the remaining demonstrations as demonstrations and the held-out one as
  the query, scored in-trial (``eval/score``: exact grid first, cell accuracy second) in place of
  the test outputs, which only ``python -m efe_ray.evaluate`` reads.

Which demonstration is held out depends only on ``(seed, task id)``.
"""

from __future__ import annotations

import zlib

import numpy as np

from efe_ray.data.task import Task

__all__ = ["held_out_index", "split"]


def held_out_index(task: Task, seed: int) -> int | None:
    """The demonstration of ``task`` held out of training (None with fewer than three)."""
    if len(task.train) < 3:
        return None
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.task_id.encode())])
    return int(rng.integers(len(task.train)))


def split(tasks: list[Task], seed: int) -> tuple[list[Task], list[Task]]:
    """(training versions, held-out versions) of blinded ``tasks`` (see the module docstring)."""
    train, held = [], []
    for task in tasks:
        if not task.blinded or any(p.output is not None for p in task.test):
            raise ValueError(f"task {task.task_id!r} ({task.source}) is not blinded: transductive training reads "
                             "evaluation tasks only without their test outputs")
        h = held_out_index(task, seed)
        demos = tuple(p for i, p in enumerate(task.train) if i != h)
        train.append(Task(task.task_id, demos, (), task.source, blinded=True))
        if h is not None:
            held.append(Task(task.task_id, demos, (task.train[h],), task.source, blinded=True))
    return train, held
