"""Find evaluation tasks a checkpoint was trained on.

Leakage in ARC is easy: most ARC-AGI-1 evaluation ids reappear in ARC-AGI-2's training set
(with the same set of pairs in another order), and at least one ARC-AGI-1 training task is an
evaluation task under another id. A task therefore leaks when its **id** or its **pair-set
signature** (:meth:`efe_ray.data.task.Task.pair_set_signature`: a hash of the set of all its
pairs, order ignored) matches a trained task.

The signature covers test pairs too: an evaluation task whose test outputs are unknown (a Kaggle
challenges file without solutions) cannot match a trained task by signature, only by id.

**Exposure.** A checkpoint records, for every task it trained on, what it saw: ``"all"`` (every
known pair, test pairs included: a training task) or ``"demonstrations"`` (a task read blinded,
whose demonstrations it learned from and whose test outputs it never had: transductive training,
``data.transductive``), and the hash of every pair it trained on (:func:`efe_ray.data.task.pair_hash`).
An evaluation task **leaks** when it matches an ``"all"`` record by id or signature, or when one of
its test pairs (input and output) is among the trained pairs, whatever task it came with. An
evaluation task that only shares its id or its demonstrations with what was trained on is
**demonstrations-only**: legitimate (a task's demonstrations are part of its input), and counted in
the report: "trained on the demonstrations of N of these tasks, never on a test output".
Records without an ``exposure`` (older checkpoints) count as ``"all"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from efe_ray.data.task import Task, pair_hash

__all__ = ["LeakageRefused", "apply_leak_rule", "demonstrations_only", "find_leaks"]


class LeakageRefused(Exception):
    """Leaked tasks were found and neither dropping nor evaluating them was allowed; the message lists them."""


def find_leaks(eval_tasks: Sequence[Task], trained: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``[(task_id, reason), ...]`` for every evaluation task that leaks (see the module docstring).

    ``trained`` holds the records of a checkpoint's ``efe_meta.json`` (``id``, ``signature``, and
    where recorded ``exposure`` and ``pairs``). ``reason`` says which match was found: ``"id"``,
    ``"signature (as trained task 'X')"``, ``"test pair i trained on (with task 'X')"``, joined by
    ``"; "``. Results follow the order of ``eval_tasks``.
    """
    ids, by_signature, by_pair, _ = _index(trained)
    leaks: list[tuple[str, str]] = []
    for task in eval_tasks:
        reasons = []
        if task.task_id in ids:
            reasons.append("id")
        other = by_signature.get(task.pair_set_signature())
        if other is not None:
            reasons.append(f"signature (as trained task {other!r})")
        for i, pair in enumerate(task.test):
            if pair.output is not None and pair_hash(pair) in by_pair:
                reasons.append(f"test pair {i} trained on (with task {by_pair[pair_hash(pair)]!r})")
        if reasons:
            leaks.append((task.task_id, "; ".join(reasons)))
    return leaks


def demonstrations_only(eval_tasks: Sequence[Task], trained: Iterable[Mapping[str, Any]]) -> list[str]:
    """Ids of the evaluation tasks that do not leak but whose demonstrations (or id, for a task
    trained on blinded) the checkpoint trained on: legitimate exposure, reported as such."""
    trained = list(trained)
    leaked = {t for t, _ in find_leaks(eval_tasks, trained)}
    _, _, by_pair, demo_ids = _index(trained)
    return [t.task_id for t in eval_tasks if t.task_id not in leaked
            and (t.task_id in demo_ids or any(pair_hash(p) in by_pair for p in t.train))]


def _index(trained: Iterable[Mapping[str, Any]]) -> tuple[set[str], dict[str, str], dict[str, str], set[str]]:
    """(ids of fully seen tasks, their signatures -> id, trained pair hashes -> task id, ids of
    tasks trained on blinded)."""
    ids: set[str] = set()
    demo_ids: set[str] = set()
    by_signature: dict[str, str] = {}
    by_pair: dict[str, str] = {}
    for record in trained:
        task_id = str(record.get("id", "?"))
        for h in record.get("pairs", ()):
            by_pair.setdefault(str(h), task_id)
        if record.get("exposure", "all") == "demonstrations":
            demo_ids.add(task_id)
            continue
        if "id" in record:
            ids.add(task_id)
        sig = record.get("signature")
        if sig:
            by_signature.setdefault(str(sig), task_id)
    return ids, by_signature, by_pair, demo_ids


def apply_leak_rule(tasks: list[Task], trained: Iterable[Mapping[str, Any]], *, drop: bool, allow: bool,
                    report: dict) -> tuple[list[Task], str]:
    """(the tasks to evaluate, a message for the terminal) under the leakage rule.

    Leaked tasks are dropped with ``drop``, evaluated with ``allow``, and otherwise refused
    (:class:`LeakageRefused`, listing them). ``report`` gets ``leaks`` (and ``dropped_leaked``).
    Raises ValueError when dropping leaves nothing.
    """
    trained = list(trained)
    leaks = find_leaks(tasks, trained)
    report["leaks"] = [{"task_id": t, "reason": r} for t, r in leaks]
    demos = demonstrations_only(tasks, trained)
    report["demonstrations_only"] = demos
    note = (f"trained on the demonstrations of {len(demos)} of these tasks, never on a test output"
            if demos else "")
    if not leaks:
        return tasks, note
    shown = "\n  ".join(f"{t}: {r}" for t, r in leaks[:10]) + (
        f"\n  ... and {len(leaks) - 10} more" if len(leaks) > 10 else "")
    if drop:
        leaked_ids = {t for t, _ in leaks}
        kept = [t for t in tasks if t.task_id not in leaked_ids]
        report["dropped_leaked"] = sorted(leaked_ids)
        if not kept:
            raise ValueError("every task was trained on by this checkpoint; nothing left to evaluate")
        return kept, "\n".join(filter(None, (
            f"dropped {len(leaked_ids)} leaked task(s) (--drop-leaked), {len(kept)} left:\n  {shown}", note)))
    if allow:
        return tasks, "\n".join(filter(None, (
            f"warning: {len(leaks)} leaked task(s) evaluated (--allow-leakage):\n  {shown}", note)))
    raise LeakageRefused(f"refused: {len(leaks)} of {len(tasks)} tasks were trained on by this checkpoint:\n  "
                         f"{shown}\npass --drop-leaked to score the others, or --allow-leakage to evaluate them anyway")
