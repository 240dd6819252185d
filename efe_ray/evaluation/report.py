"""Turn per-method results into scores, a printed table, ``per_task.csv`` and ``report.json`` data.

A result that is not an answer is never scored as one: a task whose prediction failed (an
error, no attempts) and a test input the predictor could not answer (``TaskResult.unanswered``,
e.g. larger than the model's canvas) score as unsolved with cell accuracy 0, and are counted in
the table's ``errors`` and ``no answer`` columns. A group of tasks that raised and was answered
again task by task (efe_ray/evaluation/runner.py) is counted in ``group_fallbacks`` and listed,
with its tasks and error, in ``fallback_groups``; only those of its tasks that failed alone are
errors. :func:`run_status` turns the counts into the ``status`` of ``report.json`` and the exit
status. CSV cells that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return) are prefixed with ``'``. A predictor's per-task numbers
(``TaskResult.info``, e.g. the adaptation's loss and demonstration fit) go into the CSV's ``info``
column as JSON; :meth:`MethodResult.demo_fit` sums up how far adaptation fit the demonstrations.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from efe_ray.data.task import Task
from efe_ray.evaluation.runner import GroupFallback, TaskResult
from efe_ray.evaluation.scoring import OutputScore, Summary, TaskScore, score_task, summarise

__all__ = ["EXIT_FAILED", "EXIT_PARTIAL", "MethodResult", "format_table", "per_task_csv", "run_status",
           "safe_cell", "score_method"]

EXIT_FAILED = 1
"""Exit status when a method failed on every task, or the model answered none."""
EXIT_PARTIAL = 4
"""Exit status when some tasks failed (each scored 0; the outputs are written)."""


@dataclass
class MethodResult:
    """Everything one method produced and scored."""

    name: str
    results: list[TaskResult]
    """One per task, in task order."""
    scores: list[TaskScore]
    """One per task, in task order."""
    summary: Summary
    seconds: float
    """Wall time of the whole run of this method."""

    @property
    def errors(self) -> list[TaskResult]:
        """Results of tasks on which the predictor failed."""
        return [r for r in self.results if r.error]

    @property
    def unanswered_outputs(self) -> int:
        """Scored outputs without an answer: those of failed tasks and the ``unanswered`` ones."""
        return int(self.summary.extra.get("unanswered_outputs", 0))

    @property
    def fallbacks(self) -> list[GroupFallback]:
        """Groups that raised and were answered again task by task, in the order of their first task."""
        return list(dict.fromkeys(r.fallback for r in self.results if r.fallback is not None))

    def notes(self) -> dict[str, int]:
        """Distinct notes and how many tasks carried each."""
        return dict(Counter(part for r in self.results if r.note for part in r.note.split("; ")))

    def demo_fit(self) -> dict | None:
        """How far adaptation fit the tasks' own demonstrations, over the tasks whose info has
        ``tta_demo_exact`` (the share of a task's leave-one-out views its adapted copy predicts
        exactly): how many, the mean share, how many fit every view, and how many of those this
        method solved (every output). None where no task has it."""
        fit = [(r.info["tta_demo_exact"], s.num_solved == s.num_outputs > 0)
               for r, s in zip(self.results, self.scores) if "tta_demo_exact" in r.info]
        if not fit:
            return None
        full = [solved for x, solved in fit if x >= 1.0]
        return {"tasks": len(fit), "mean_demo_exact": round(sum(x for x, _ in fit) / len(fit), 4),
                "all_demos_exact": len(full), "all_demos_exact_and_solved": sum(full),
                "solved_without_all_demos_exact": sum(solved for x, solved in fit if x < 1.0)}

    def to_dict(self) -> dict:
        """JSON-safe summary for ``report.json``."""
        return {
            "scored": self.summary.outputs > 0,
            **self.summary.to_dict(),
            "seconds": self.seconds,
            "errors": [{"task_id": r.task_id, "error": r.error} for r in self.errors],
            "group_fallbacks": len(self.fallbacks),
            "fallback_groups": [{"tasks": list(g.tasks), "error": g.error} for g in self.fallbacks],
            "unanswered": {r.task_id: list(r.unanswered) for r in self.results if r.unanswered and not r.error},
            "notes": self.notes(),
            "demo_fit": self.demo_fit(),
        }


def _unanswered(task: Task, result: TaskResult) -> TaskScore:
    """Every known test output of ``task`` scored as unanswered, except those ``result`` answered."""
    skip = set(range(len(task.test))) if result.error else set(result.unanswered)
    answered = score_task(task.task_id, [result.attempts[i] if i not in skip else (p.input, p.input)
                                         for i, p in enumerate(task.test)],
                          [p.output for p in task.test], [p.input for p in task.test])
    outputs = tuple(
        OutputScore(o.index, False, 0, 0.0, False, o.copy_shape_ok, o.cells) if o.index in skip else o
        for o in answered.outputs
    )
    return TaskScore(task.task_id, outputs)


def score_method(name: str, tasks: Sequence[Task], results: Sequence[TaskResult], seconds: float) -> MethodResult:
    """Score ``results`` (one per task, same order) against the tasks' known test outputs."""
    if [t.task_id for t in tasks] != [r.task_id for r in results]:
        raise ValueError(f"{name}: results do not follow the task order")
    scores = [_unanswered(t, r) if r.error or r.unanswered else
              score_task(t.task_id, r.attempts, [p.output for p in t.test], [p.input for p in t.test])
              for t, r in zip(tasks, results)]
    summary = summarise(scores)
    summary.extra["errors"] = sum(bool(r.error) for r in results)
    summary.extra["unanswered_outputs"] = sum(
        sum(1 for o in s.outputs if r.error or o.index in r.unanswered) for r, s in zip(results, scores))
    return MethodResult(name, list(results), scores, summary, seconds)


def run_status(methods: Sequence[MethodResult]) -> tuple[str, int]:
    """(``status`` for report.json, exit status) of a finished run; the first method is the primary."""
    for m in methods:
        if m.results and len(m.errors) == len(m.results):
            return f"failed: {m.name} failed on every one of {len(m.results)} tasks", EXIT_FAILED
    primary = methods[0]
    if primary.summary.outputs and primary.unanswered_outputs == primary.summary.outputs:
        return f"failed: {primary.name} answered none of {primary.summary.outputs} test outputs", EXIT_FAILED
    failed = [m for m in methods if m.errors]
    if failed:
        parts = ", ".join(f"{m.name} on {len(m.errors)} of {len(m.results)} tasks" for m in failed)
        return f"partial: failed ({parts}); those tasks score 0", EXIT_PARTIAL
    return "ok", 0


def _pct(x: float, scored: bool) -> str:
    return f"{100 * x:6.2f}%" if scored else "    n/a"


def format_table(methods: Sequence[MethodResult]) -> str:
    """A fixed-width table: one row per method."""
    w = max([14] + [len(m.name) for m in methods])
    head = (f"{'method':<{w}} {'task score':>10} {'output score':>12} {'cell acc':>9} {'tasks':>6} {'outputs':>8} "
            f"{'solved':>7} {'no answer':>9} {'errors':>6}")
    lines = [head, "-" * len(head)]
    for m in methods:
        s = m.summary
        ok = s.outputs > 0
        lines.append(
            f"{m.name:<{w}} {_pct(s.task_score, ok):>10} {_pct(s.output_score, ok):>12} {_pct(s.cell_acc, ok):>9} "
            f"{s.tasks:>6} {s.outputs:>8} {s.solved_outputs:>7} {m.unanswered_outputs:>9} {len(m.errors):>6}"
        )
    if methods:
        s = methods[0].summary
        if s.outputs:
            lines.append(
                f"context: {s.copy_shape_outputs} of {s.outputs} outputs keep their input's shape "
                f"(copying the input is the right size there); cell acc = 0 for a wrong shape or no answer."
            )
        else:
            lines.append("no test output is known for these tasks: nothing was scored (the submission is still written)")
    return "\n".join(lines)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value``, with a ``'`` in front when it is text a spreadsheet would run as a formula."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def per_task_csv(methods: Sequence[MethodResult], leaked: set[str] = frozenset()) -> str:
    """CSV text: one row per (task, method) with outputs, solved, score, cell acc, time, answers, note,
    error and the predictor's per-task info (JSON, empty if none)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task_id", "method", "outputs", "solved", "score", "cell_acc", "seconds", "leaked",
                     "unanswered", "note", "error", "info"])
    for m in methods:
        for r, s in zip(m.results, m.scores):
            unanswered = s.num_outputs if r.error else sum(o.index in r.unanswered for o in s.outputs)
            row = [r.task_id, m.name, s.num_outputs, s.num_solved, f"{s.score:.4f}", f"{s.cell_acc:.4f}",
                   f"{r.seconds:.3f}", int(r.task_id in leaked), unanswered, r.note, r.error,
                   json.dumps(r.info, sort_keys=True) if r.info else ""]
            writer.writerow([safe_cell(c) for c in row])
    return buf.getvalue()
