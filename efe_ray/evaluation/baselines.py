"""Rule baselines, scored in the same harness as the model.

Each baseline is a function ``task -> [(attempt_1, attempt_2), ...]``, one pair of ``(H, W)``
int64 grids per test input, that reads only the demonstrations and the test *inputs*.

* :func:`copy_input`: both attempts are the test input. On ARC-AGI-1 evaluation it solves no
  task but reaches a high cell accuracy on same-size outputs: the floor to report beside.
* :func:`demo_rule`: tries a small, fixed list of whole-grid rules and keeps those that
  reproduce *every* demonstration output exactly; ``attempt_1`` applies the first, ``attempt_2``
  the next one that predicts a different grid (or copies the input). The rules, in order:

  1. the 8 D8 transforms (identity, rot90, rot180, rot270, transpose, flipud, antitranspose,
     fliplr);
  2. each D8 transform followed by a colour map learned from the demonstrations (consistent: each
     input colour always becomes the same output colour; colours never seen map to themselves);
  3. a constant output, when every demonstration output is the same grid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from efe_ray.data.augment import D8_NAMES, Augmentation
from efe_ray.data.task import NUM_COLOURS, Task

__all__ = ["BASELINES", "Attempts", "Baseline", "Rule", "copy_input", "demo_rule", "fitting_rules"]

Attempts = tuple[np.ndarray, np.ndarray]
"""(attempt_1, attempt_2) for one test input, each ``(H, W)`` int64."""
Baseline = Callable[[Task], list[Attempts]]


def copy_input(task: Task) -> list[Attempts]:
    """Both attempts copy the test input."""
    return [(p.input.copy(), p.input.copy()) for p in task.test]


@dataclass(frozen=True)
class Rule:
    """A whole-grid rule: a D8 transform, then an optional colour lookup; or a constant grid."""

    name: str
    d8: int = 0
    lut: tuple[int, ...] | None = None
    """``lut[c]`` = output colour of input colour ``c`` (10 entries), or ``None`` for no colour map."""
    constant: np.ndarray | None = None
    """When set, the rule ignores its input and returns this grid."""

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """The rule's output for one ``(H, W)`` grid."""
        if self.constant is not None:
            return self.constant.copy()
        out = Augmentation(self.d8).apply(grid)  # (H, W) or (W, H)
        if self.lut is not None:
            out = np.asarray(self.lut, dtype=np.int64)[out]
        return out


def _learn_colour_map(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[int, ...] | None:
    """A consistent colour lookup mapping each input grid onto its output cell by cell, or None."""
    lut = list(range(NUM_COLOURS))
    seen: dict[int, int] = {}
    for x, y in pairs:
        if x.shape != y.shape:
            return None
        for a, b in zip(x.ravel().tolist(), y.ravel().tolist()):
            if seen.setdefault(a, b) != b:
                return None
    for a, b in seen.items():
        lut[a] = b
    return tuple(lut)


def fitting_rules(task: Task) -> list[Rule]:
    """Every rule of the list (see the module docstring) that reproduces all demo outputs, in order."""
    demos = [(p.input, p.output) for p in task.train]
    found: list[Rule] = []
    for d8 in range(8):
        rule = Rule(D8_NAMES[d8], d8)
        if all(np.array_equal(rule.apply(x), y) for x, y in demos):
            found.append(rule)
    for d8 in range(8):
        moved = [(Augmentation(d8).apply(x), y) for x, y in demos]
        lut = _learn_colour_map(moved)
        if lut is not None and lut != tuple(range(NUM_COLOURS)):
            found.append(Rule(f"{D8_NAMES[d8]}+colour_map", d8, lut))
    first = demos[0][1]
    if all(np.array_equal(y, first) for _, y in demos):
        found.append(Rule("constant", constant=np.array(first, dtype=np.int64)))
    return found


def demo_rule(task: Task) -> list[Attempts]:
    """Apply the first fitting rule (attempt 1) and the next distinct one or a copy (attempt 2)."""
    rules = fitting_rules(task)
    out: list[Attempts] = []
    for pair in task.test:
        preds = [r.apply(pair.input) for r in rules]
        if not preds:
            out.append((pair.input.copy(), pair.input.copy()))
            continue
        first = preds[0]
        second = next((p for p in preds[1:] if not np.array_equal(p, first)), pair.input.copy())
        out.append((first, second))
    return out


BASELINES: dict[str, Baseline] = {"copy_input": copy_input, "demo_rule": demo_rule}
"""Baselines by the name the CLI accepts."""
