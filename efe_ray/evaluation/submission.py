"""Build, validate and write ``submission.json`` in the ARC Prize format.

The format::

    {
      "<task_id>": [
        {"attempt_1": [[0, 1], [2, 3]], "attempt_2": [[0, 1], [2, 3]]},   # test input 0
        ...                                                               # one per test input
      ],
      ...                                                                 # every task
    }

A grid is a non-empty list of non-empty, equally long lists of Python ``int`` colours 0..9 (not
numpy integers, not ``bool``), at most 30x30. :func:`validate_submission` reports every defect
as a :class:`SubmissionProblem` naming the task, the test index, the key and what is wrong;
:func:`write_submission` refuses to write an invalid submission and writes a valid one
atomically (a temporary file, fsync, rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from efe_ray.data.files import atomic_write
from efe_ray.data.task import MAX_SIDE, NUM_COLOURS, Task, as_grid

__all__ = ["ATTEMPT_KEYS", "SubmissionError", "SubmissionProblem", "atomic_write_text", "build_submission",
           "grid_to_list", "validate_submission", "write_submission"]

ATTEMPT_KEYS = ("attempt_1", "attempt_2")
"""The two keys of every entry."""
_MAX_CELL_PROBLEMS = 3


@dataclass(frozen=True)
class SubmissionProblem:
    """One defect of a submission. ``index``/``key`` are ``None`` above that level."""

    task_id: str
    index: int | None
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f"task {self.task_id!r}"
        if self.index is not None:
            where += f" [{self.index}]"
        if self.key is not None:
            where += f" {self.key}"
        return f"{where}: {self.message}"


class SubmissionError(ValueError):
    """A submission failed validation; ``problems`` lists every defect."""

    def __init__(self, problems: Sequence[SubmissionProblem]) -> None:
        self.problems = list(problems)
        lines = [f"invalid submission: {len(self.problems)} problem(s)"] + [f"  {p}" for p in self.problems[:50]]
        if len(self.problems) > 50:
            lines.append(f"  ... and {len(self.problems) - 50} more")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keep the problems when pickled
        return (type(self), (self.problems,))


def grid_to_list(grid: Any) -> list[list[int]]:
    """A grid (numpy array or nested lists) as a list of lists of Python ints."""
    arr = as_grid(grid)
    return [[int(c) for c in row] for row in arr.tolist()]


def build_submission(predictions: Mapping[str, Sequence[tuple[Any, Any]]]) -> dict[str, list[dict[str, list]]]:
    """``{task_id: [(attempt_1, attempt_2), ...]}`` -> the submission dict (grids as Python ints)."""
    return {
        task_id: [{"attempt_1": grid_to_list(a1), "attempt_2": grid_to_list(a2)} for a1, a2 in attempts]
        for task_id, attempts in predictions.items()
    }


def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def _grid_problems(grid: Any) -> list[str]:
    """What is wrong with one grid (empty if it is valid)."""
    if not isinstance(grid, list):
        return [f"expected a grid (list of rows), got {_type_name(grid)}"]
    if not grid:
        return ["grid is empty"]
    problems: list[str] = []
    width: int | None = None
    bad_cells = 0
    for r, row in enumerate(grid):
        if not isinstance(row, list):
            problems.append(f"row {r} is a {_type_name(row)}, expected a list")
            continue
        if not row:
            problems.append(f"row {r} is empty")
            continue
        if width is None:
            width = len(row)
        elif len(row) != width:
            problems.append(f"row {r} has length {len(row)}, expected {width} (ragged rows)")
        for c, cell in enumerate(row):
            if type(cell) is not int:  # rejects bool, float and numpy integers alike
                msg = f"cell ({r}, {c}) is a {_type_name(cell)} ({cell!r}), expected a Python int"
            elif not 0 <= cell < NUM_COLOURS:
                msg = f"cell ({r}, {c}) is {cell}, outside 0..{NUM_COLOURS - 1}"
            else:
                continue
            bad_cells += 1
            if bad_cells <= _MAX_CELL_PROBLEMS:
                problems.append(msg)
    if bad_cells > _MAX_CELL_PROBLEMS:
        problems.append(f"{bad_cells - _MAX_CELL_PROBLEMS} more bad cell(s)")
    if len(grid) > MAX_SIDE or (width or 0) > MAX_SIDE:
        problems.append(f"grid is {len(grid)}x{width}, larger than {MAX_SIDE}x{MAX_SIDE}")
    return problems


def validate_submission(sub: Any, tasks: Sequence[Task]) -> list[SubmissionProblem]:
    """Every problem of ``sub`` as a submission for ``tasks`` (an empty list if it is valid).

    Checks: ``sub`` is a dict; every task id is present and no other; each value is a list with
    one entry per test input; each entry is a dict with exactly ``attempt_1`` and ``attempt_2``;
    each grid is valid (see the module docstring).
    """
    if not isinstance(sub, dict):
        return [SubmissionProblem("", None, None, f"a submission must be a dict, got {_type_name(sub)}")]
    problems: list[SubmissionProblem] = []
    expected = {t.task_id: len(t.test) for t in tasks}
    for task_id in sub:
        if task_id not in expected:
            problems.append(SubmissionProblem(str(task_id), None, None, "unknown task id (not among the tasks)"))
    for task_id, n_tests in expected.items():
        if task_id not in sub:
            problems.append(SubmissionProblem(task_id, None, None, "task is missing from the submission"))
            continue
        entries = sub[task_id]
        if not isinstance(entries, list):
            problems.append(SubmissionProblem(task_id, None, None,
                                              f"expected a list of attempt dicts, got {_type_name(entries)}"))
            continue
        if len(entries) != n_tests:
            problems.append(SubmissionProblem(
                task_id, None, None, f"{len(entries)} entries for {n_tests} test input(s); expected one per input"))
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                problems.append(SubmissionProblem(task_id, i, None, f"expected a dict, got {_type_name(entry)}"))
                continue
            for key in entry:
                if key not in ATTEMPT_KEYS:
                    problems.append(SubmissionProblem(task_id, i, str(key), "unknown key (expected attempt_1, attempt_2)"))
            for key in ATTEMPT_KEYS:
                if key not in entry:
                    problems.append(SubmissionProblem(task_id, i, key, "missing"))
                    continue
                problems += [SubmissionProblem(task_id, i, key, m) for m in _grid_problems(entry[key])]
    return problems


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that readers see the old file or the whole new one."""
    atomic_write(path, text.encode("utf-8"))


def write_submission(path: str | os.PathLike[str], sub: dict, tasks: Sequence[Task]) -> None:
    """Validate ``sub`` against ``tasks`` and write it to ``path`` atomically.

    Raises :class:`SubmissionError` (and writes nothing) if it is invalid.
    """
    problems = validate_submission(sub, tasks)
    if problems:
        raise SubmissionError(problems)
    atomic_write_text(path, json.dumps(sub, separators=(",", ":")))
