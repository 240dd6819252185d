"""Turn per-method results into scores, a printed table, ``per_task.csv`` and ``report.json`` data."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from efe_ray.data.task import Task
from efe_ray.evaluation.runner import TaskResult
from efe_ray.evaluation.scoring import Summary, TaskScore, score_task, summarise

__all__ = ["MethodResult", "format_table", "per_task_csv", "score_method"]


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

    def notes(self) -> dict[str, int]:
        """Distinct notes and how many tasks carried each."""
        return dict(Counter(part for r in self.results if r.note for part in r.note.split("; ")))

    def to_dict(self) -> dict:
        """JSON-safe summary for ``report.json``."""
        return {
            "scored": self.summary.outputs > 0,
            **self.summary.to_dict(),
            "seconds": self.seconds,
            "errors": [{"task_id": r.task_id, "error": r.error} for r in self.errors],
            "notes": self.notes(),
        }


def score_method(name: str, tasks: Sequence[Task], results: Sequence[TaskResult], seconds: float) -> MethodResult:
    """Score ``results`` (one per task, same order) against the tasks' known test outputs."""
    if [t.task_id for t in tasks] != [r.task_id for r in results]:
        raise ValueError(f"{name}: results do not follow the task order")
    scores = [
        score_task(t.task_id, r.attempts, [p.output for p in t.test], [p.input for p in t.test])
        for t, r in zip(tasks, results)
    ]
    summary = summarise(scores)
    summary.extra["errors"] = sum(bool(r.error) for r in results)
    return MethodResult(name, list(results), scores, summary, seconds)


def _pct(x: float, scored: bool) -> str:
    return f"{100 * x:6.2f}%" if scored else "    n/a"


def format_table(methods: Sequence[MethodResult]) -> str:
    """A fixed-width table: one row per method."""
    head = f"{'method':<14} {'task score':>10} {'output score':>12} {'cell acc':>9} {'tasks':>6} {'outputs':>8} {'solved':>7} {'errors':>6}"
    lines = [head, "-" * len(head)]
    for m in methods:
        s = m.summary
        ok = s.outputs > 0
        lines.append(
            f"{m.name:<14} {_pct(s.task_score, ok):>10} {_pct(s.output_score, ok):>12} {_pct(s.cell_acc, ok):>9} "
            f"{s.tasks:>6} {s.outputs:>8} {s.solved_outputs:>7} {len(m.errors):>6}"
        )
    if methods:
        s = methods[0].summary
        if s.outputs:
            lines.append(
                f"context: {s.copy_shape_outputs} of {s.outputs} outputs keep their input's shape "
                f"(copying the input is the right size there); cell acc = 0 for a wrong shape."
            )
        else:
            lines.append("no test output is known for these tasks: nothing was scored (the submission is still written)")
    return "\n".join(lines)


def per_task_csv(methods: Sequence[MethodResult], leaked: set[str] = frozenset()) -> str:
    """CSV text: one row per (task, method) with outputs, solved, score, cell acc, time, note, error."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task_id", "method", "outputs", "solved", "score", "cell_acc", "seconds", "leaked", "note", "error"])
    for m in methods:
        for r, s in zip(m.results, m.scores):
            writer.writerow([r.task_id, m.name, s.num_outputs, s.num_solved, f"{s.score:.4f}", f"{s.cell_acc:.4f}",
                             f"{r.seconds:.3f}", int(r.task_id in leaked), r.note, r.error])
    return buf.getvalue()
