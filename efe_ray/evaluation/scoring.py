"""Scores for ARC predictions: exact grids (two attempts), cell accuracy, and a size floor.

A test output is **solved** when ``attempt_1`` or ``attempt_2`` equals the target exactly: the
same shape and every cell equal. Two conventions aggregate that:

* **task score** (the ARC Prize convention): per task, the fraction of its test outputs solved;
  averaged over tasks. A task with 2 outputs of which 1 is solved counts 0.5.
* **output score**: solved outputs / all outputs, every output weighing the same.

**Cell accuracy** of one output is the fraction of target cells that ``attempt_1`` gets right
*when its shape equals the target's*, and ``0.0`` when the shape differs (there is no sound
cell-to-cell alignment between grids of different sizes, and a wrong size is a wrong answer). It
is averaged over outputs (not over cells). Cell accuracy flatters (copying the input scores high
on outputs that keep the input's size), so it is reported beside two pieces of context:

* ``copy_shape_outputs``: how many outputs have the same shape as their test input (where
  copying the input is at least the right size), and
* ``cell_acc_same_shape``: the mean cell accuracy over just those outputs.

``cell_acc_pooled`` and ``cell_acc_same_shape_pooled`` pool right cells over target cells instead
(large grids weigh more); the latter is the "81.6% on 277 of 419 outputs" floor of copying the
input on ARC-AGI-1 evaluation (docs/design.md).

Outputs whose target is unknown (``None``) are not scored; a task with no known target is left
out of the task score. All functions take plain data: grids as numpy arrays or lists of lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from efe_ray.data.task import as_grid

__all__ = ["OutputScore", "Summary", "TaskScore", "cell_accuracy", "grids_equal", "score_output",
           "score_task", "summarise"]

GridLike = Any
"""A ``(H, W)`` numpy array or a list of lists of ints."""


def grids_equal(a: GridLike, b: GridLike) -> bool:
    """Whether two grids have the same shape and the same cells."""
    ga, gb = as_grid(a), as_grid(b)
    return ga.shape == gb.shape and bool((ga == gb).all())


def cell_accuracy(pred: GridLike, target: GridLike) -> float:
    """Fraction of target cells equal in ``pred``; ``0.0`` if the shapes differ (see module doc)."""
    gp, gt = as_grid(pred), as_grid(target)
    if gp.shape != gt.shape:
        return 0.0
    return float((gp == gt).mean())


@dataclass(frozen=True)
class OutputScore:
    """The score of one test output."""

    index: int
    """Index of the test input within its task."""
    solved: bool
    """Attempt 1 or attempt 2 equals the target exactly."""
    solved_by: int
    """1 or 2: the first attempt that solved it; 0 if unsolved."""
    cell_acc: float
    """Cell accuracy of attempt 1 (0.0 on a shape mismatch)."""
    shape_ok: bool
    """Attempt 1 has the target's shape."""
    copy_shape_ok: bool
    """The test input has the target's shape (copying it is at least the right size)."""
    cells: int = 0
    """Cells of the target (for cell accuracy pooled over cells)."""


def score_output(attempt_1: GridLike, attempt_2: GridLike, target: GridLike, input_grid: GridLike,
                 index: int = 0) -> OutputScore:
    """Score the two attempts at one test output against its ``target``."""
    if grids_equal(attempt_1, target):
        by = 1
    elif grids_equal(attempt_2, target):
        by = 2
    else:
        by = 0
    t = as_grid(target)
    return OutputScore(
        index=index,
        solved=by > 0,
        solved_by=by,
        cell_acc=cell_accuracy(attempt_1, t),
        shape_ok=as_grid(attempt_1).shape == t.shape,
        copy_shape_ok=as_grid(input_grid).shape == t.shape,
        cells=int(t.size),
    )


@dataclass(frozen=True)
class TaskScore:
    """The scores of one task's test outputs (only those with a known target)."""

    task_id: str
    outputs: tuple[OutputScore, ...]
    """One entry per scored test output, in test order."""

    @property
    def num_outputs(self) -> int:
        """Scored outputs."""
        return len(self.outputs)

    @property
    def num_solved(self) -> int:
        """Solved outputs."""
        return sum(o.solved for o in self.outputs)

    @property
    def score(self) -> float:
        """Fraction of the task's scored outputs solved (0.0 if none are scored)."""
        return self.num_solved / self.num_outputs if self.outputs else 0.0

    @property
    def cell_acc(self) -> float:
        """Mean cell accuracy over the task's scored outputs (0.0 if none)."""
        return float(np.mean([o.cell_acc for o in self.outputs])) if self.outputs else 0.0


def score_task(task_id: str, attempts: Sequence[tuple[GridLike, GridLike]],
               targets: Sequence[GridLike | None], inputs: Sequence[GridLike]) -> TaskScore:
    """Score one task: ``attempts[i]`` = (attempt_1, attempt_2) for test input ``inputs[i]``.

    Outputs whose target is ``None`` are skipped. Raises ``ValueError`` if the lengths differ.
    """
    if not len(attempts) == len(targets) == len(inputs):
        raise ValueError(f"task {task_id!r}: {len(attempts)} attempt pairs, {len(targets)} targets and "
                         f"{len(inputs)} inputs; expected one of each per test input")
    outputs = tuple(
        score_output(a1, a2, t, x, index=i)
        for i, ((a1, a2), t, x) in enumerate(zip(attempts, targets, inputs))
        if t is not None
    )
    return TaskScore(task_id, outputs)


@dataclass(frozen=True)
class Summary:
    """Aggregate scores of one method over a set of tasks."""

    task_score: float
    """Mean over scored tasks of the fraction of their outputs solved (ARC Prize convention)."""
    output_score: float
    """Solved outputs / scored outputs."""
    cell_acc: float
    """Mean cell accuracy of attempt 1 over scored outputs (0 for a shape mismatch)."""
    tasks: int
    """Tasks with at least one scored output."""
    outputs: int
    """Scored outputs."""
    solved_outputs: int
    """Outputs solved by attempt 1 or 2."""
    solved_tasks: int
    """Tasks with every scored output solved."""
    solved_by_attempt_2: int
    """Outputs solved only by attempt 2."""
    shape_ok: int
    """Outputs whose attempt 1 has the right shape."""
    copy_shape_outputs: int
    """Outputs with the same shape as their test input (context for cell accuracy)."""
    cell_acc_same_shape: float
    """Mean cell accuracy over those ``copy_shape_outputs`` outputs (0.0 if there are none)."""
    cell_acc_pooled: float = 0.0
    """Right cells / target cells over all scored outputs (big grids weigh more)."""
    cell_acc_same_shape_pooled: float = 0.0
    """The same, pooled over the ``copy_shape_outputs`` outputs only."""
    extra: dict = field(default_factory=dict)
    """Free-form additions (e.g. counts of errors), copied into reports."""

    def to_dict(self) -> dict:
        """A JSON-safe dict."""
        return asdict(self)


def summarise(task_scores: Sequence[TaskScore]) -> Summary:
    """Aggregate per-task scores (tasks with no scored output are left out)."""
    scored = [t for t in task_scores if t.outputs]
    outs = [o for t in scored for o in t.outputs]
    same = [o for o in outs if o.copy_shape_ok]
    return Summary(
        task_score=float(np.mean([t.score for t in scored])) if scored else 0.0,
        output_score=sum(o.solved for o in outs) / len(outs) if outs else 0.0,
        cell_acc=float(np.mean([o.cell_acc for o in outs])) if outs else 0.0,
        tasks=len(scored),
        outputs=len(outs),
        solved_outputs=sum(o.solved for o in outs),
        solved_tasks=sum(t.num_solved == t.num_outputs for t in scored),
        solved_by_attempt_2=sum(o.solved_by == 2 for o in outs),
        shape_ok=sum(o.shape_ok for o in outs),
        copy_shape_outputs=len(same),
        cell_acc_same_shape=float(np.mean([o.cell_acc for o in same])) if same else 0.0,
        cell_acc_pooled=_pooled(outs),
        cell_acc_same_shape_pooled=_pooled(same),
    )


def _pooled(outs: Sequence[OutputScore]) -> float:
    """Right cells / target cells over ``outs`` (0.0 if there are no cells)."""
    cells = sum(o.cells for o in outs)
    return sum(o.cell_acc * o.cells for o in outs) / cells if cells else 0.0
