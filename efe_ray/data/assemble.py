"""From checked JSON to tasks: build a :class:`~efe_ray.data.task.Task` from JSON that passed
:func:`~efe_ray.data.validation.validate_task_json`, and end a load (sort the good tasks; raise
for, or warn about and drop, the bad ones). Shared by every loader (efe_ray/data/loaders.py,
efe_ray/data/kaggle.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.data.validation import Problem, SkippedTasksWarning, TaskValidationError

__all__ = ["build_task", "finish"]


def build_task(raw: dict, task_id: str, source: str, test_outputs: Optional[list] = None) -> Task:
    """Build a :class:`Task` from JSON that passed :func:`validate_task_json`.

    ``test_outputs`` (validated too) replaces the test pairs' outputs when given.
    """

    def pair(p: dict, output: Any) -> Pair:
        return Pair(as_grid(p["input"]), as_grid(output) if output is not None else None)

    train = tuple(pair(p, p["output"]) for p in raw["train"])
    if test_outputs is None:
        test_outputs = [p.get("output") for p in raw["test"]]
    test = tuple(pair(p, out) for p, out in zip(raw["test"], test_outputs))
    return Task(task_id=task_id, train=train, test=test, source=source)



def finish(
    tasks: Iterable[Task],
    bad: Sequence[Sequence[Problem]],
    *,
    skip_invalid: bool,
    report: Optional[list[Problem]],
) -> list[Task]:
    """Sort ``tasks``; raise for, or warn about and drop, the ``bad`` tasks (one list each)."""
    problems = [p for task_problems in bad for p in task_problems]
    if report is not None:
        report.extend(problems)
    if problems and not skip_invalid:
        raise TaskValidationError(problems)
    if problems:
        lines = [f"skipped {len(bad)} invalid task(s):"]
        for task_problems in bad:
            first = task_problems[0]
            more = f" (+{len(task_problems) - 1} more problem(s))" if len(task_problems) > 1 else ""
            lines.append(f"  {first}{more}")  # names the file and the task id
        warnings.warn("\n".join(lines), SkippedTasksWarning, stacklevel=3)
    return sorted(tasks, key=lambda t: t.task_id)
