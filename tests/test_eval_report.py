"""Reporting an evaluation (efe_ray.evaluation.report): a failed or unanswered prediction is never
scored as an answer, the run's status says so, the per-task CSV holds no formulas, and the
predictor's per-task info (the adaptation's demonstration fit) is written and summed up."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace

from efe_ray.data.task import Task
from efe_ray.evaluation.baselines import copy_input
from efe_ray.evaluation.report import (EXIT_FAILED, EXIT_PARTIAL, MethodResult, format_table, per_task_csv,
                                      run_status, safe_cell, score_method)
from efe_ray.evaluation.runner import failed, run_serial
from efe_ray.evaluation.scoring import TaskScore, summarise

from helpers_eval import rule_task


def _flaky(task: Task):
    """copy_input, except on task "b" (an identity task, where copying would be the right answer)."""
    if task.task_id == "b":
        raise RuntimeError("boom")
    return copy_input(task)


def test_a_failed_prediction_is_never_scored_as_an_answer():
    tasks = [rule_task("a", lambda g: g), rule_task("b", lambda g: g, seed=1)]  # copying solves both
    results = run_serial(tasks, _flaky, progress=False)
    assert results[1].attempts == [] and results[1].error == "RuntimeError: boom"
    m = score_method("flaky", tasks, results, 0.0)
    assert [s.num_solved for s in m.scores] == [1, 0] and m.scores[1].cell_acc == 0.0
    assert m.summary.task_score == 0.5 and m.summary.solved_outputs == 1 and m.unanswered_outputs == 1
    assert run_status([m]) == ("partial: failed (flaky on 1 of 2 tasks); those tasks score 0", EXIT_PARTIAL)
    every = score_method("down", tasks, [failed(t, OSError("disk")) for t in tasks], 0.0)
    assert every.summary.solved_outputs == 0 and every.summary.cell_acc == 0.0
    assert run_status([every]) == ("failed: down failed on every one of 2 tasks", EXIT_FAILED)
    ok = score_method("ok", tasks, run_serial(tasks, copy_input, progress=False), 0.0)
    assert ok.summary.solved_outputs == 2 and run_status([ok]) == ("ok", 0)


def test_unanswered_outputs_score_zero_even_where_the_stand_in_is_right():
    tasks = [rule_task("a", lambda g: g, n_test=2)]
    result = replace(run_serial(tasks, copy_input, progress=False)[0], unanswered=(1,))
    m = score_method("model", tasks, [result], 0.0)
    assert [o.solved for o in m.scores[0].outputs] == [True, False]
    assert m.scores[0].outputs[1].cell_acc == 0.0 and m.unanswered_outputs == 1
    assert "no answer" in format_table([m])
    csv_row = list(csv.DictReader(io.StringIO(per_task_csv([m]))))[0]
    assert csv_row["unanswered"] == "1" and csv_row["solved"] == "1"


def test_csv_cells_never_become_formulas():
    assert [safe_cell(v) for v in ("=HYPERLINK(1)", "+1", "-2", "@x", "\tx", "ok", 3)] == \
        ["'=HYPERLINK(1)", "'+1", "'-2", "'@x", "'\tx", "ok", 3]
    task = rule_task("a", lambda g: g)
    result = replace(failed(task, ValueError("=cmd|' /C calc'!A0")), task_id="=HYPERLINK(\"x\")")
    m = MethodResult("m", [result], [TaskScore(result.task_id, ())], summarise([]), 0.0)
    row = list(csv.reader(io.StringIO(per_task_csv([m]))))[1]
    assert row[0] == "'=HYPERLINK(\"x\")" and row[-2] == "ValueError: =cmd|' /C calc'!A0" and row[-1] == ""
    assert not any(cell.startswith(("=", "+", "@")) for cell in row)


def test_the_adaptation_fit_is_written_per_task_and_summed_up_against_the_solved_tasks():
    """Four identity tasks, all solved by copying: two fit every demonstration view, one fits half,
    one has no adaptation info (a single demonstration). demo_fit counts over the three with info."""
    tasks = [rule_task(c, lambda g: g, seed=i) for i, c in enumerate("abcd")]
    fits = {"a": 1.0, "b": 1.0, "c": 0.5}
    results = [replace(r, info={"tta_demo_exact": fits[r.task_id], "search": "zero"} if r.task_id in fits else {})
               for r in run_serial(tasks, copy_input, progress=False)]
    results[1] = replace(results[1], attempts=[((g + 1) % 10, (g + 1) % 10) for g, _ in results[1].attempts])  # b: wrong
    m = score_method("model", tasks, results, 0.0)
    assert [s.num_solved for s in m.scores] == [1, 0, 1, 1]
    assert m.demo_fit() == {"tasks": 3, "mean_demo_exact": round(2.5 / 3, 4), "all_demos_exact": 2,
                            "all_demos_exact_and_solved": 1, "solved_without_all_demos_exact": 1}
    assert m.to_dict()["demo_fit"] == m.demo_fit()
    rows = {r["task_id"]: r for r in csv.DictReader(io.StringIO(per_task_csv([m])))}
    assert json.loads(rows["c"]["info"]) == {"search": "zero", "tta_demo_exact": 0.5} and rows["d"]["info"] == ""
    assert score_method("copy_input", tasks, run_serial(tasks, copy_input, progress=False), 0.0).demo_fit() is None
