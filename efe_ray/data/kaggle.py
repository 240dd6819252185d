"""Load an ARC Prize (Kaggle) challenges file and, optionally, its solutions file, every task
checked as efe_ray/data/loaders.py checks a folder's (see there for how problems are reported).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from efe_ray.data.assemble import build_task, finish
from efe_ray.data.jsonread import MAX_COLLECTION_FILE_BYTES, read_json
from efe_ray.data.task import Task
from efe_ray.data.validation import (Problem, TaskChecker, TaskValidationError, check_task_id, short_repr,
                                     type_name, validate_task_json)

__all__ = ["load_kaggle"]


def load_kaggle(
    challenges_path: str | os.PathLike[str],
    solutions_path: str | os.PathLike[str] | None = None,
    *,
    skip_invalid: bool = False,
    report: Optional[list[Problem]] = None,
) -> list[Task]:
    """Load an ARC Prize (Kaggle) challenges file and, optionally, its solutions file.

    ``challenges_path`` holds ``{task_id: {"train": [...], "test": [{"input": ...}, ...]}}``;
    ``solutions_path`` holds ``{task_id: [output_grid, ...]}`` with one output per test input,
    in order. A task missing from the solutions, a wrong number of outputs, a bad output grid
    or a solution for an unknown task is a problem of that task (its file being the solutions
    file). Without solutions, test outputs are ``None``.

    A file that is not valid JSON or not a JSON object raises :class:`TaskValidationError`
    even with ``skip_invalid`` (there is no task to skip); bad tasks are handled as in
    :func:`load_folder`.
    """
    challenges_file = Path(challenges_path)
    challenges = _read_mapping(challenges_file)
    solutions: Optional[dict] = None
    solutions_file = ""
    if solutions_path is not None:
        solutions = _read_mapping(Path(solutions_path))
        solutions_file = str(solutions_path)

    tasks: list[Task] = []
    bad: list[list[Problem]] = []
    for task_id in sorted(challenges):
        raw = challenges[task_id]
        problems = check_task_id(task_id, str(challenges_file)) or validate_task_json(
            raw, file=str(challenges_file), task_id=task_id, require_test_outputs=False)
        outputs: Optional[list] = None
        if solutions is not None:
            outputs, solution_problems = _check_solutions(raw, solutions, task_id, solutions_file)
            problems += solution_problems
        if problems:
            bad.append(problems)
        else:
            tasks.append(build_task(raw, task_id, str(challenges_file), outputs))
    if solutions is not None:
        for task_id in sorted(set(solutions) - set(challenges)):
            bad.append(
                [
                    Problem(
                        solutions_file, task_id, None, None, None, "",
                        f"solutions given for a task that is not in {str(challenges_file)!r}",
                    )
                ]
            )
    return finish(tasks, bad, skip_invalid=skip_invalid, report=report)


def _read_mapping(path: Path) -> dict:
    """Read a Kaggle-style ``{task_id: ...}`` file; raise if it is not one."""
    raw, problems = read_json(path, "", MAX_COLLECTION_FILE_BYTES)
    if not problems and not isinstance(raw, dict):
        problems = [
            Problem(
                str(path), "", None, None, None, short_repr(raw),
                f"expected an object keyed by task id, got {type_name(raw)}",
            )
        ]
    if problems:
        raise TaskValidationError(problems)
    return raw


def _check_solutions(raw: Any, solutions: dict, task_id: str, file: str) -> tuple[Optional[list], list[Problem]]:
    """Validate ``solutions[task_id]`` against the task's test inputs; return (outputs, problems)."""
    check = TaskChecker(file, task_id)
    if task_id not in solutions:
        check.add("test", None, "output", "no solutions entry for this task", has_value=False)
        return None, check.problems
    outputs = solutions[task_id]
    if not isinstance(outputs, list):
        check.add("test", None, "output", f"expected a list of output grids, got {type_name(outputs)}", outputs)
        return None, check.problems
    tests = raw.get("test") if isinstance(raw, dict) else None
    if isinstance(tests, list) and len(outputs) != len(tests):
        check.add(
            "test", None, "output",
            f"{len(outputs)} solution grid(s) for {len(tests)} test input(s); expected one per test input",
            has_value=False,
        )
    for i, grid in enumerate(outputs):
        check.grid(grid, "test", i, "output")
    return (None if check.problems else outputs), check.problems
