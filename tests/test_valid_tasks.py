"""Every valid task is answered, whatever its shape (efe_ray/evaluation/solve.py, runner.py and
``python -m efe_ray.evaluate``): one demonstration or ten, several test inputs, 1x1 to canvas-sized
and 1xN grids, outputs larger or smaller than their inputs, sizes that differ from pair to pair,
identical demonstrations, one colour, a test colour the demonstrations never show; with and
without adaptation, under every search. Tasks larger than the canvas get stand-ins, counted as
unanswered; no task's failure reaches another.

Hypothesis draws the tasks (tests/strategies.py), the same examples on every run. ``tiny_checkpoint``
(tests/conftest.py, an 8x8 canvas) is built once for this file. The command runs in-process here
(``--workers 0``); tests/test_eval_runner.py runs a group that raises on Ray workers.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from efe_ray.data.task import Pair, Task, as_grid, task_side
from efe_ray.evaluate import main
from efe_ray.evaluation.model import cached_model
from efe_ray.evaluation.report import EXIT_FAILED
from efe_ray.evaluation.solve import SolveSettings, solve_group

from helpers_eval import unusual_tasks, write_kaggle
from strategies import model_settings, task_groups

SEARCHES = st.sampled_from(["best", "policy", "gradient", "none"])


def stand_in_policy(task, learner, feedback=None, seed=None):
    """A policy's proposals: small deltas that depend on the task and the proposal's seed."""
    rng = np.random.default_rng([len(task.train), len(task.test), seed or 0])
    return (0.05 * rng.standard_normal(learner.prompt.cfg.prompt_dim)).astype(np.float32)


def assert_legal(attempts: list, task: Task, canvas: int) -> None:
    """Two attempts per test input, each a grid of colours 0..9 no larger than the canvas."""
    assert len(attempts) == len(task.test)
    for pair in attempts:
        assert len(pair) == 2
        for grid in pair:
            grid = as_grid(grid, "attempt")  # 2-D, non-empty, int, colours 0..9
            assert grid.shape[0] <= canvas and grid.shape[1] <= canvas


def assert_answered(solutions: list, tasks: list[Task], canvas: int) -> None:
    """Every task within the canvas answered under every method (the same methods for all); the
    others given copies of their inputs, every test input marked unanswered."""
    assert len({frozenset(s.methods) for s in solutions}) == 1
    for sol, task in zip(solutions, tasks):
        assert sol.task_id == task.task_id
        if task_side(task) <= canvas:
            assert sol.unanswered == () and "model" in sol.methods
            for attempts in sol.methods.values():
                assert_legal(attempts, task, canvas)
        else:
            assert sol.unanswered == tuple(range(len(task.test)))
            assert all(np.array_equal(a, p.input) and np.array_equal(b, p.input)
                       for attempts in sol.methods.values() for (a, b), p in zip(attempts, task.test))


@given(group=task_groups(max_tasks=4, max_side=9, max_demos=10, max_tests=3), tta_steps=st.sampled_from([2, 0]),
       search=SEARCHES, ablations=st.booleans(), augmentations=st.integers(1, 3), policy=st.booleans())
@model_settings(100)
def test_solve_group_answers_every_valid_task(tiny_checkpoint, group, tta_steps, search, ablations, augmentations,
                                              policy):
    learner = cached_model(tiny_checkpoint[0], device="cpu", use_policy=False).learner
    settings = SolveSettings(tta_steps=tta_steps, tta_views=4, augmentations=augmentations, search=search,
                             search_rounds=2, search_steps=2, ablations=ablations)
    solutions = solve_group(learner, stand_in_policy if policy else None, group, settings)
    assert_answered(solutions, group, learner.agent_cfg.canvas)


def test_30x30_and_1x30_tasks_on_a_30_canvas(make_learner):
    """The largest ARC grids, a 1x30 row with a single demonstration and a 1x1 task, adapted together."""
    learner, _ = make_learner(agent={"canvas": 30})
    rng = np.random.default_rng(0)
    grid = lambda h, w: rng.integers(0, 10, (h, w))  # noqa: E731
    group = [Task("full", tuple(Pair(as_grid(grid(30, 30)), as_grid(grid(30, 30))) for _ in range(2)),
                  (Pair(as_grid(grid(30, 30)), None),)),
             Task("row", (Pair(as_grid(grid(1, 30)), as_grid(grid(30, 1))),), (Pair(as_grid(grid(1, 30)), None),)),
             Task("dot", (Pair(as_grid(grid(1, 1)), as_grid(grid(1, 1))),) * 2, (Pair(as_grid(grid(1, 1)), None),))]
    settings = SolveSettings(tta_steps=1, tta_views=2, augmentations=2, search="best", search_steps=1)
    solutions = solve_group(learner, None, group, settings)
    assert_answered(solutions, group, 30)
    assert "tta_loss" in solutions[0].info and "tta_loss" not in solutions[1].info


def evaluate(folder: Path, split: Path, out: Path, *extra: str) -> tuple[int, dict, dict | None]:
    """(exit status, report.json, submission.json or None) of ``python -m efe_ray.evaluate`` in-process."""
    code = main(["--checkpoint", str(folder), "--split", str(split), "--workers", "0", "--no-policy",
                 "--out", str(out), "--quiet", *extra])
    sub = out / "submission.json"
    return code, json.loads((out / "report.json").read_text()), json.loads(sub.read_text()) if sub.exists() else None


def assert_report_answers_all(report: dict, sub: dict | None, tasks: list[Task], canvas: int) -> None:
    """No method failed on any task, no group fell back, exactly the tasks beyond the canvas are
    unanswered, and the submission holds two legal attempts per test input."""
    beyond = [t for t in tasks if task_side(t) > canvas]
    for name, method in report["methods"].items():
        assert method["errors"] == [] and method["group_fallbacks"] == 0, name
        assert method["unanswered"] == {t.task_id: list(range(len(t.test))) for t in beyond}, name
    if len(beyond) < len(tasks):
        assert sub is not None and set(sub) == {t.task_id for t in tasks}
        for task in tasks:
            attempts = [(a["attempt_1"], a["attempt_2"]) for a in sub[task.task_id]]
            assert_legal(attempts, task, 30 if task in beyond else canvas)  # a copy of the input beyond it


@given(group=task_groups(max_tasks=5, max_side=9, max_demos=4, max_tests=2), tta_steps=st.sampled_from([2, 0]),
       search=SEARCHES, group_size=st.integers(1, 5), ablations=st.booleans())
@model_settings(40)
def test_evaluate_answers_every_valid_task(tiny_checkpoint, group, tta_steps, search, group_size, ablations):
    with tempfile.TemporaryDirectory() as tmp:
        split = write_kaggle(Path(tmp), group)
        code, report, sub = evaluate(
            tiny_checkpoint[0], split, Path(tmp) / "out", "--augmentations", "2", "--tta-steps", str(tta_steps),
            "--tta-views", "4", "--search", search, "--search-rounds", "2", "--search-steps", "2",
            "--group-size", str(group_size), *(["--ablations"] if ablations else []))
    inside = [t for t in group if task_side(t) <= 8]
    assert code == (0 if inside else EXIT_FAILED)  # 1: the model answered none (every task beyond the canvas)
    outputs = report["methods"]["model"]["outputs"]
    assert report["status"] == ("ok" if inside else f"failed: model answered none of {outputs} test outputs")
    assert_report_answers_all(report, sub, group, 8)


def test_evaluate_answers_single_demonstration_tasks_with_adaptation(tiny_checkpoint, tmp_path, capsys):
    """The reported case: a challenges file of 32 tasks of unusual shapes (three with a single
    demonstration), in groups of 16, with ``--tta-steps 5``: exit 0, none failed (two D8 views
    instead of eight keep it quick; the views play no part in it)."""
    tasks = unusual_tasks(8)
    code, report, sub = evaluate(tiny_checkpoint[0], write_kaggle(tmp_path / "corpus", tasks), tmp_path / "out",
                                 "--tta-steps", "5", "--augmentations", "2")
    assert code == 0 and report["status"] == "ok"
    assert_report_answers_all(report, sub, tasks, 8)
    model = report["methods"]["model"]
    assert model["tasks"] == 32 and model["outputs"] == 37 and model["extra"]["unanswered_outputs"] == 16
    assert model["notes"]["one demonstration: answered by the checkpoint as it is (no search, no adaptation)"] == 3
    assert "16 of 32 tasks (16 of 37 test inputs) are larger than the checkpoint's 8x8 canvas" in capsys.readouterr().err

