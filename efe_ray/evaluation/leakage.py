"""Find evaluation tasks a checkpoint was trained on.

Leakage in ARC is easy: most ARC-AGI-1 evaluation ids reappear in ARC-AGI-2's training set
(with the same set of pairs in another order), and at least one ARC-AGI-1 training task is an
evaluation task under another id. A task therefore leaks when its **id** or its **pair-set
signature** (:meth:`efe_ray.data.task.Task.pair_set_signature`: a hash of the set of all its
pairs, order ignored) matches a trained task.

The signature covers test pairs too: an evaluation task whose test outputs are unknown (a Kaggle
challenges file without solutions) cannot match a trained task by signature, only by id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from efe_ray.data.task import Task

__all__ = ["LeakageRefused", "apply_leak_rule", "find_leaks"]


class LeakageRefused(Exception):
    """Leaked tasks were found and neither dropping nor evaluating them was allowed; the message lists them."""


def find_leaks(eval_tasks: Sequence[Task], trained: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``[(task_id, reason), ...]`` for every evaluation task that matches a trained task.

    ``trained`` holds ``{"id": str, "signature": str}`` records (as stored in a checkpoint's
    ``efe_meta.json``). ``reason`` says which match was found: ``"id"``, ``"signature (as trained
    task 'X')"``, or both joined by ``"; "``. Results follow the order of ``eval_tasks``.
    """
    ids: set[str] = set()
    by_signature: dict[str, str] = {}
    for record in trained:
        if "id" in record:
            ids.add(str(record["id"]))
        sig = record.get("signature")
        if sig:
            by_signature.setdefault(str(sig), str(record.get("id", "?")))
    leaks: list[tuple[str, str]] = []
    for task in eval_tasks:
        reasons = []
        if task.task_id in ids:
            reasons.append("id")
        other = by_signature.get(task.pair_set_signature())
        if other is not None:
            reasons.append(f"signature (as trained task {other!r})")
        if reasons:
            leaks.append((task.task_id, "; ".join(reasons)))
    return leaks


def apply_leak_rule(tasks: list[Task], trained: Iterable[Mapping[str, Any]], *, drop: bool, allow: bool,
                    report: dict) -> tuple[list[Task], str]:
    """(the tasks to evaluate, a message for the terminal) under the leakage rule.

    Leaked tasks are dropped with ``drop``, evaluated with ``allow``, and otherwise refused
    (:class:`LeakageRefused`, listing them). ``report`` gets ``leaks`` (and ``dropped_leaked``).
    Raises ValueError when dropping leaves nothing.
    """
    leaks = find_leaks(tasks, trained)
    report["leaks"] = [{"task_id": t, "reason": r} for t, r in leaks]
    if not leaks:
        return tasks, ""
    shown = "\n  ".join(f"{t}: {r}" for t, r in leaks[:10]) + (
        f"\n  ... and {len(leaks) - 10} more" if len(leaks) > 10 else "")
    if drop:
        leaked_ids = {t for t, _ in leaks}
        kept = [t for t in tasks if t.task_id not in leaked_ids]
        report["dropped_leaked"] = sorted(leaked_ids)
        if not kept:
            raise ValueError("every task was trained on by this checkpoint; nothing left to evaluate")
        return kept, f"dropped {len(leaked_ids)} leaked task(s) (--drop-leaked), {len(kept)} left:\n  {shown}"
    if allow:
        return tasks, f"warning: {len(leaks)} leaked task(s) evaluated (--allow-leakage):\n  {shown}"
    raise LeakageRefused(f"refused: {len(leaks)} of {len(tasks)} tasks were trained on by this checkpoint:\n  "
                         f"{shown}\npass --drop-leaked to score the others, or --allow-leakage to evaluate them anyway")
