"""bench/merge_submissions.py: two evaluations' submissions merged by the rule of ``--tta-lr A B``
and scored; the lease's two adaptation rates give the committed figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import arc_results  # noqa: E402  (scripts of bench/, beside their helper command.py)
import merge_submissions  # noqa: E402

LEASE = BENCH / "arc_lease" / "2026-12-07-g"


def task(tmp: Path, tid: str, outputs: list) -> None:
    pairs = [{"input": [[0]], "output": [[1]]}, {"input": [[0, 0]], "output": [[1, 1]]}]
    (tmp / f"{tid}.json").write_text(json.dumps({"train": pairs, "test": [{"input": [[2]], "output": o}
                                                                         for o in outputs]}))


def sub(*answers) -> dict:
    return {tid: [{"attempt_1": a1, "attempt_2": a2} for a1, a2 in outs] for tid, outs in answers}


def run_folder(tmp: Path, name: str, submission: dict, lr: float, errors=(), **settings) -> str:
    """An evaluation's folder: its submission and the report fields the merge reads."""
    folder = tmp / name
    folder.mkdir()
    (folder / "submission.json").write_text(json.dumps(submission))
    report = {"split": "tasks", "seed": 0, "checkpoint": "/x/export-arc", "methods": {"model": {"errors": list(errors)}},
              "settings": {"checkpoint": "/x/export-arc", "split": "tasks", "tta_steps": 4, "tta_lr": lr,
                           "tta_views": 16, "augmentations": 8, "colours": 8, "search": "none", "baselines": lr < 0.005,
                           "time_budget_s": 300.0, "out": str(folder), **settings}}
    (folder / "report.json").write_text(json.dumps(report))
    return str(folder / "submission.json")


A = sub(("t1", [([[9]], [[3]])]), ("t2", [([[4]], [[8]]), ([[9]], [[9]])]))
B = sub(("t1", [([[9]], [[7]])]), ("t2", [([[6]], [[8]]), ([[5]], [[9]])]))


def tasks_folder(tmp: Path) -> Path:
    tasks = tmp / "tasks"
    tasks.mkdir()
    task(tasks, "t1", [[[3]]])
    task(tasks, "t2", [[[4]], [[5]]])
    return tasks


def test_the_merge_takes_each_runs_first_attempt_and_is_scored(tmp_path, capsys):
    tasks = tasks_folder(tmp_path)
    a, b = run_folder(tmp_path, "a", A, 0.003), run_folder(tmp_path, "b", B, 0.01)
    out = tmp_path / "arc1-eval-merged"
    assert merge_submissions.main([a, b, "--split", str(tasks), "--out", str(out)]) == 0
    # t1: both first attempts are [[9]]: a's second comes next, and solves it; t2: a's [[4]], b's [[6]]
    # for the first output (solved), a's [[9]] and b's [[5]] for the second (solved by b's first)
    assert json.loads((out / "submission.json").read_text()) == \
        sub(("t1", [([[9]], [[3]])]), ("t2", [([[4]], [[6]]), ([[9]], [[5]])]))
    text = capsys.readouterr().out
    assert "100.00% of 2 tasks (2.0 solved), 3 / 3 outputs" in text
    assert "75.00% of 2 tasks (1.5 solved)" in text  # a alone: t1, and half of t2
    assert f"merged against {b}: 2 tasks gained, 0 lost" in text
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["tta_lr"] == [0.003, 0.01] and report["settings"]["time_budget_s"] == 600.0
    assert report["derived_from"] == [str(tmp_path / "a"), str(tmp_path / "b")]
    rows = arc_results.records(tmp_path, "c", "r", "d")  # the folder is the row model-merged
    assert [(r["method"], r["pass2_task"], r["derived_from"]) for r in rows] == [("model-merged", 100.0, ["a", "b"])]
    assert "--tta-lr 0.003 0.01 --tta-views 16" in rows[0]["commands"][0]


def test_runs_that_differ_beyond_the_rate_or_left_tasks_out_are_not_merged_into_a_folder(tmp_path, capsys):
    tasks = tasks_folder(tmp_path)
    a = run_folder(tmp_path, "a", A, 0.003)
    other = run_folder(tmp_path, "b", B, 0.01, tta_steps=8)
    late = run_folder(tmp_path, "c", B, 0.01, errors=[{"task_id": "t2", "error": "TimeBudgetEnded: ..."}])
    for second, why in ((other, "differs from " + a + "'s in tta_steps"), (late, "1 task(s) were not answered")):
        with pytest.raises(SystemExit):
            merge_submissions.main([a, second, "--split", str(tasks), "--out", str(tmp_path / "m")])
        assert why in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    assert merge_submissions.main([a, late, "--split", str(tasks)]) == 0  # scoring alone needs no report


def test_submissions_of_other_tasks_are_refused(tmp_path):
    tasks = tasks_folder(tmp_path)
    a = run_folder(tmp_path, "a", A, 0.003)
    b = run_folder(tmp_path, "b", sub(("t9", [([[3]], [[3]])])), 0.01)
    with pytest.raises(SystemExit):
        merge_submissions.main([a, b, "--split", str(tasks)])


def test_the_lease_of_2026_12_07_merges_its_two_rates_to_45_tasks(capsys):
    assert merge_submissions.main([str(LEASE / "arc1-eval" / "submission.json"),
                                   str(LEASE / "arc1-eval-tta400-lr1e-2" / "submission.json"),
                                   "--split", "arc1-eval"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "9.52% of 399 tasks (38.0 solved), 42 / 418 outputs" in lines[0]
    assert "9.77% of 399 tasks (39.0 solved), 43 / 418 outputs" in lines[1]
    assert "11.28% of 399 tasks (45.0 solved), 49 / 418 outputs" in lines[2]
