"""Read one JSON file defensively: every way it can be unusable becomes a named :class:`Problem`.

:func:`read_json` refuses, each with a problem naming the file (and the key or value where there
is one): a file larger than a cap (:data:`MAX_TASK_FILE_BYTES` for one task,
:data:`MAX_COLLECTION_FILE_BYTES` for a Kaggle file of many), bytes that are not UTF-8, nesting
deeper than :data:`MAX_DEPTH` (before parsing: Python's parser would hit its recursion limit),
invalid JSON, and a key repeated within one object (JSON parsers silently keep the last one). An
integer literal longer than :data:`MAX_INT_DIGITS` digits is kept as a :class:`HugeInt` rather than
converted (Python refuses more than 4300 digits and aborts the whole parse), so that validation
names the task, grid and cell that hold it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from efe_ray.data.validation import HugeInt, Problem, short_repr

__all__ = ["MAX_COLLECTION_FILE_BYTES", "MAX_DEPTH", "MAX_INT_DIGITS", "MAX_TASK_FILE_BYTES", "read_json"]

MAX_TASK_FILE_BYTES = 4 * 2**20
"""One task file: 10 pairs of 30x30 grids are about 40 KB; 4 MiB leaves room for any real task."""
MAX_COLLECTION_FILE_BYTES = 512 * 2**20
"""A Kaggle challenges or solutions file holding many tasks (ARC-AGI-2's 1000 tasks: ~40 MB)."""
MAX_DEPTH = 32
"""Deepest nesting of ``[``/``{`` accepted: a task nests 5 deep, a Kaggle challenges file 6."""
MAX_INT_DIGITS = 20
"""Longest integer literal converted to ``int``; colours need one digit."""

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _parse_int(text: str) -> int | HugeInt:
    digits = len(text.lstrip("-"))
    return HugeInt(digits) if digits > MAX_INT_DIGITS else int(text)


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in JSON text, brackets inside strings ignored."""
    codes = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    steps = ((codes == ord("[")) | (codes == ord("{"))).astype(np.int32) - ((codes == ord("]")) | (codes == ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def read_json(path: Path, task_id: str, max_bytes: int) -> tuple[Any, list[Problem]]:
    """(parsed JSON, []) or (None, [the problem]) for the file at ``path`` (see the module docstring)."""
    file = str(path)

    def problem(message: str, value: str = "") -> tuple[None, list[Problem]]:
        return None, [Problem(file, task_id, None, None, None, value, message)]

    try:
        size = path.stat().st_size
        if size > max_bytes:
            return problem(f"file is {size:,} bytes, more than the {max_bytes:,} allowed")
        data = path.read_bytes()
    except OSError as exc:
        return problem(f"cannot read the file: {exc.strerror or exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problem(f"file is not UTF-8 text: {exc.reason} at byte {exc.start}")
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        return problem(f"JSON nested {depth} deep, more than the {MAX_DEPTH} allowed (a task nests 5 deep)")
    try:
        return json.loads(text, object_pairs_hook=_pairs_without_duplicates, parse_int=_parse_int), []
    except _DuplicateKey as exc:
        return problem(f"key {exc.key!r} appears twice in one JSON object", short_repr(exc.key))
    except json.JSONDecodeError as exc:
        lines = exc.doc.splitlines()
        line = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
        start = max(0, exc.colno - 1 - 20)
        return problem(f"invalid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                       short_repr(line[start: start + 40]))
