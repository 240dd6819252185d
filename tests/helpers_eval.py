"""Small ARC tasks shared by the evaluation and export tests: tasks from literal grids, rule tasks on
random grids, the synthetic evaluation split, and a folder of task files to pass as ``--split``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid

G = as_grid


def make_task(task_id: str, train: list[tuple], test: list[tuple]) -> Task:
    """A task from lists of (input rows, output rows or None)."""
    def pairs(items):
        return tuple(Pair(G(i), None if o is None else G(o)) for i, o in items)
    return Task(task_id, pairs(train), pairs(test))


def random_grid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An (h, w) grid of random colours 0..9."""
    return rng.integers(0, 10, size=(h, w))


def rule_task(task_id: str, fn, *, seed: int = 0, n_train: int = 3, n_test: int = 1, shape=(3, 4)) -> Task:
    """A task whose outputs are ``fn(input)`` on random grids of ``shape``, test outputs included."""
    rng = np.random.default_rng(seed)
    items = [(g, fn(g)) for g in (random_grid(rng, *shape) for _ in range(n_train + n_test))]
    return make_task(task_id, items[:n_train], items[n_train:])


def eval_tasks() -> list[Task]:
    """The evaluation split: the synthetic rules on 4x4 grids, two test inputs each, ids "ev...";
    none of them is among the tasks the test checkpoints trained on (ids "tr...")."""
    return synthetic_tasks(side=4, seed=1, prefix="ev", num_test=2)


def write_tasks(folder: Path, tasks: list[Task]) -> Path:
    """``folder`` holding one ``<task id>.json`` per task; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (folder / f"{t.task_id}.json").write_text(json.dumps(t.to_json()))
    return folder


def _pairs(rng: np.random.Generator, shapes: list[tuple[tuple[int, int], tuple[int, int]]],
           colours: tuple[int, ...] = tuple(range(10))) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input, output) grids of random ``colours`` of the given (input shape, output shape)s."""
    return [(rng.choice(colours, size=i), rng.choice(colours, size=o)) for i, o in shapes]


def unusual_tasks(canvas: int, seed: int = 0) -> list[Task]:
    """32 valid tasks of unusual shapes, test outputs included: 16 within a ``canvas`` x ``canvas``
    square (``canvas`` >= 4; ids "in-...": one demonstration, with one or three test inputs, or
    ten; 1x1, canvas-sized, 1xN and Nx1 grids; outputs larger and smaller than their inputs; sizes
    that differ from pair to pair; identical demonstrations; a single colour; a test colour that no
    demonstration holds), and 16 with a grid larger than the canvas (ids "out-...", up to 30x30)."""
    rng = np.random.default_rng(seed)
    c = canvas
    sq = lambda n: (n, n)  # noqa: E731
    inside = {
        "one-demo": ([(sq(3), sq(3))], [(sq(2), sq(2))]),
        "one-demo-three-tests": ([((2, 3), (3, 2))], [((2, 3), (3, 2)), (sq(1), sq(1)), ((3, 1), (1, 3))]),
        "one-demo-grows": ([(sq(1), sq(c))], [(sq(1), sq(c))]),
        "ten-demos": ([(sq(2), sq(2))] * 10, [(sq(2), sq(2))]),
        "all-1x1": ([(sq(1), sq(1))] * 3, [(sq(1), sq(1))]),
        "canvas-sized": ([(sq(c), sq(c))] * 2, [(sq(c), sq(c))]),
        "rows-1xN": ([((1, c), (1, c)), ((1, 2), (1, 2))], [((1, c - 1), (1, c - 1))]),
        "columns-Nx1": ([((c, 1), (c, 1)), ((2, 1), (2, 1))], [((c - 1, 1), (c - 1, 1))]),
        "output-larger": ([(sq(2), sq(4)), (sq(1), sq(2))], [(sq(2), sq(4))]),
        "output-smaller": ([(sq(4), sq(1)), (sq(3), sq(1))], [(sq(c), sq(1))]),
        "sizes-differ": ([((1, 3), (2, 2)), ((4, 2), (1, 1)), ((3, 3), (2, 4))], [((2, 4), (3, 1))]),
        "transposed": ([((2, 4), (4, 2)), ((1, 3), (3, 1))], [((3, 4), (4, 3))]),
        "many-tests": ([(sq(3), sq(3))] * 2, [(sq(3), sq(3)), (sq(2), sq(2)), ((1, 4), (1, 4)), (sq(4), sq(4))]),
    }
    tasks = [_task(f"in-{name}", rng, train, test) for name, (train, test) in inside.items()]
    same = _pairs(rng, [(sq(3), sq(3))])[0]
    tasks.append(make_task("in-identical-demos", [same] * 3, [same]))
    tasks.append(_task("in-single-colour", rng, [(sq(2), sq(3))] * 2, [(sq(3), sq(2))], demo_colours=(5,),
                       test_colours=(5,)))
    tasks.append(_task("in-unseen-test-colour", rng, [(sq(3), sq(3))] * 3, [(sq(3), sq(3))],
                       demo_colours=(0, 1, 2), test_colours=(7,)))
    big = [sq(30), (1, 30), (30, 1), sq(c + 1)] + [sq(n) for n in range(c + 2, c + 14)]
    for i, shape in enumerate(big[:16]):
        train = [(shape, shape)] if i % 4 == 0 else [(shape, sq(2)), (sq(2), sq(2))]
        tasks.append(_task(f"out-{i:02d}-{shape[0]}x{shape[1]}", rng, train, [(sq(2), sq(2))]))
    return tasks


def _task(task_id: str, rng: np.random.Generator, train: list, test: list, *,
          demo_colours: tuple[int, ...] = tuple(range(10)), test_colours: tuple[int, ...] = tuple(range(10))) -> Task:
    """A task of random grids of the given (input shape, output shape)s."""
    return make_task(task_id, _pairs(rng, train, demo_colours), _pairs(rng, test, test_colours))


def write_kaggle(folder: Path, tasks: list[Task], name: str = "unusual") -> Path:
    """``folder/<name>_challenges.json`` (the test inputs) and ``<name>_solutions.json`` beside it
    (their outputs), in the ARC Prize format; returns the challenges file."""
    folder.mkdir(parents=True, exist_ok=True)
    challenges = {t.task_id: {"train": t.to_json()["train"], "test": [{"input": p.input.tolist()} for p in t.test]}
                  for t in tasks}
    solutions = {t.task_id: [p.output.tolist() for p in t.test] for t in tasks}
    (folder / f"{name}_solutions.json").write_text(json.dumps(solutions))
    path = folder / f"{name}_challenges.json"
    path.write_text(json.dumps(challenges))
    return path
