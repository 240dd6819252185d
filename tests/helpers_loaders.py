"""Task JSON shared by the loader tests: a good task, copies of it with one thing changed, a writer,
and a Kaggle challenges/solutions pair."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

GOOD: dict[str, Any] = {
    "train": [
        {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]},
        {"input": [[0]], "output": [[5]]},
    ],
    "test": [{"input": [[7, 8]], "output": [[8, 7]]}],
}


def good(**changes: Any) -> dict[str, Any]:
    """A deep copy of GOOD with top-level keys replaced (a value of None deletes the key)."""
    raw = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def with_grid(section: str, index: int, field: str, grid: Any) -> dict[str, Any]:
    """A copy of GOOD with one grid, GOOD[section][index][field], replaced."""
    raw = good()
    raw[section][index][field] = grid
    return raw


def write(path: Path, raw: Any) -> Path:
    """Writes ``raw`` to ``path``: text as it is, anything else as JSON; returns ``path``."""
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


CHALLENGES = {
    "bbb": {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2, 2]]}]},
    "aaa": {"train": GOOD["train"], "test": [{"input": [[3]]}]},
}
"""Two tasks of a Kaggle challenges file, keyed by id, out of order; "bbb" has two test inputs."""
SOLUTIONS = {"aaa": [[[4]]], "bbb": [[[5]], [[6, 6]]]}
"""The matching Kaggle solutions file: per task, one output grid per test input."""
