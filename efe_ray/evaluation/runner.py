"""Run a predictor over tasks, serially in-process or fanned out as Ray tasks.

A predictor is any picklable callable ``task -> [(attempt_1, attempt_2), ...]`` (the baselines)
or ``task -> Prediction`` (the model, which adds a note, the attempts of ablated methods and the
test inputs it could not answer). A predictor with ``groups(tasks)`` and ``predict_group(tasks)``
(the model) answers groups of tasks at once: a group is then the unit of work. :func:`run_unit`
never lets one unit sink the run, nor one task its neighbours: a group that raises is answered
again task by task (each of its results records the :class:`GroupFallback`, the group's tasks and
error), and a task that raises alone has its exception recorded in :attr:`TaskResult.error` (type
and message) and gets **no** attempts, so a failure can never be scored as an answer
(efe_ray/evaluation/report.py scores it 0 and counts it as an error).

:func:`run_parallel` ships the predictor to the object store once and runs one Ray task per unit
with ``num_cpus_per_task`` CPUs and ``num_gpus_per_task`` GPUs (fractions allowed: 0.25 puts
four units on one GPU). It joins a running cluster with ``address`` (e.g. ``"auto"`` or
``"ray://host:10001"``), or starts a local Ray if none is running (and shuts it down after).
Results come back in the order of ``tasks``; a Ray task that fails outside the predictor (a worker
killed, an argument that cannot be unpickled) is recorded with its root cause
(``RayTaskError.cause``). Progress is a tqdm bar on stderr.

A ``deadline`` (a :func:`time.monotonic` instant) ends a run on time: units still running are
cancelled and every task not answered by then fails with :class:`TimeBudgetEnded`, scored 0 like any
other failure, so that a run under a wall-clock limit still writes its report.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from efe_ray.data.task import Task, as_grid

__all__ = ["GroupFallback", "Predictor", "TaskResult", "TimeBudgetEnded", "failed", "root_cause", "run", "run_parallel",
           "run_serial", "run_task", "run_unit", "units", "worker_gpu_ids"]

Predictor = Callable[[Task], Any]
"""``task -> list[(attempt_1, attempt_2)]`` or an object with ``attempts`` (and ``note``)."""

_WORKER_GPUS: list | None = None
"""GPU ids Ray assigned to the current Ray task; ``None`` outside a Ray worker."""


class TimeBudgetEnded(TimeoutError):
    """The run's time budget ended before this task was answered."""


def _late(task: Task) -> TaskResult:
    return failed(task, TimeBudgetEnded("the time budget ended before this task was answered"))


def worker_gpu_ids() -> list | None:
    """GPU ids Ray assigned to the running evaluation task, or ``None`` when not in a Ray worker."""
    return _WORKER_GPUS


@dataclass(frozen=True)
class GroupFallback:
    """A group whose answering raised, so that its tasks were answered again one by one."""

    tasks: tuple[str, ...]
    """The group's task ids."""
    error: str
    """``"ExceptionType: message"`` the group raised."""


@dataclass
class TaskResult:
    """What a predictor produced for one task."""

    task_id: str
    attempts: list[tuple[np.ndarray, np.ndarray]]
    """(attempt_1, attempt_2) per test input, ``(H, W)`` int64 each; empty when the predictor failed."""
    seconds: float
    """Wall time of the predictor on this task."""
    note: str = ""
    """The predictor's note, if any."""
    error: str = ""
    """``"ExceptionType: message"`` if the predictor failed (there are no attempts then)."""
    traceback: str = ""
    """The failure's traceback (empty if none)."""
    unanswered: tuple[int, ...] = ()
    """Test inputs whose attempts are a stand-in, not the predictor's answer (e.g. larger than the
    model's canvas): scored as unsolved, with cell accuracy 0."""
    methods: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    """Attempts of the predictor's other (ablated) methods, by name, like :attr:`attempts`."""
    info: dict = field(default_factory=dict)
    """The predictor's per-task numbers, if any."""
    fallback: GroupFallback | None = None
    """Set when this task's group raised and the task was answered again alone."""


def failed(task: Task, error: BaseException, seconds: float = 0.0, trace: str = "") -> TaskResult:
    """The result of a task whose prediction failed with ``error``: no attempts."""
    return TaskResult(task.task_id, [], seconds, error=f"{type(error).__name__}: {error}", traceback=trace)


def _checked(task: Task, attempts: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    attempts = list(attempts)
    if len(attempts) != len(task.test):
        raise ValueError(f"predictor returned {len(attempts)} attempt pairs for {len(task.test)} test inputs")
    return [(as_grid(a1, "predicted grid"), as_grid(a2, "predicted grid")) for a1, a2 in attempts]


def _result(task: Task, out: Any, seconds: float) -> TaskResult:
    """A predictor's output for ``task`` as a :class:`TaskResult` (a malformed output is a failure)."""
    try:
        methods = {name: _checked(task, a) for name, a in (getattr(out, "methods", None) or {}).items()}
        return TaskResult(task.task_id, _checked(task, getattr(out, "attempts", out)), seconds,
                          str(getattr(out, "note", "") or ""), unanswered=tuple(getattr(out, "unanswered", ())),
                          methods=methods, info=dict(getattr(out, "info", None) or {}))
    except Exception as err:  # recorded, scored 0, reported
        return failed(task, err, seconds, traceback.format_exc())


def run_task(fn: Predictor, task: Task) -> TaskResult:
    """Run ``fn`` on ``task``; a failure becomes :attr:`TaskResult.error`, with no attempts."""
    return run_unit(fn, [task])[0]


def units(fn: Predictor, tasks: Sequence[Task]) -> list[list[int]]:
    """The units of work: ``fn.groups(tasks)`` for a group predictor, else one task each."""
    grouping = getattr(fn, "groups", None)
    return grouping(list(tasks)) if callable(grouping) else [[i] for i in range(len(tasks))]


def run_unit(fn: Predictor, tasks: Sequence[Task], deadline: float | None = None) -> list[TaskResult]:
    """Run ``fn`` on one unit (a group for a group predictor). A group that raises is answered again
    task by task (:func:`_task_by_task`): only a task that raises alone fails. ``deadline`` (a
    :func:`time.monotonic` instant, this process's clock) is checked before each task of that."""
    start = time.perf_counter()
    try:
        group = getattr(fn, "predict_group", None)
        outs = group(list(tasks)) if callable(group) else [fn(t) for t in tasks]
        if len(outs) != len(tasks):
            raise ValueError(f"predictor returned {len(outs)} predictions for {len(tasks)} tasks")
    except Exception as err:  # the isolation boundary: recorded (type and message), never scored as an answer
        error, trace = f"{type(err).__name__}: {err}", traceback.format_exc()
    else:
        seconds = (time.perf_counter() - start) / max(len(tasks), 1)
        return [_result(t, out, seconds) for t, out in zip(tasks, outs)]
    # Out of the except block: the exception and the frames it holds (a group's tensors) are freed.
    if len(tasks) > 1:
        return _task_by_task(fn, tasks, GroupFallback(tuple(t.task_id for t in tasks), error), deadline)
    seconds = time.perf_counter() - start
    return [TaskResult(t.task_id, [], seconds, error=error, traceback=trace) for t in tasks]


def _task_by_task(fn: Predictor, tasks: Sequence[Task], fallback: GroupFallback,
                  deadline: float | None) -> list[TaskResult]:
    """Each of ``tasks`` answered alone (a unit of one), its result marked with ``fallback``; a task
    not started by ``deadline`` fails with :class:`TimeBudgetEnded`."""
    out = []
    for t in tasks:
        late = deadline is not None and time.monotonic() >= deadline
        out.append(replace(_late(t) if late else run_unit(fn, [t])[0], fallback=fallback))
    return out


def run_serial(tasks: Sequence[Task], fn: Predictor, *, progress: bool = True, desc: str = "eval",
               deadline: float | None = None) -> list[TaskResult]:
    """Run ``fn`` on every unit of ``tasks`` in this process; results in the order of ``tasks``.
    A unit not started by ``deadline`` is not run (its tasks fail with :class:`TimeBudgetEnded`)."""
    results: dict[int, TaskResult] = {}
    with _bar(len(tasks), desc, progress) as bar:
        for unit in units(fn, tasks):
            if deadline is not None and time.monotonic() >= deadline:
                results.update((i, _late(tasks[i])) for i in unit)
                continue
            for i, r in zip(unit, run_unit(fn, [tasks[i] for i in unit], deadline)):
                results[i] = r
            bar.update(len(unit))
    return [results[i] for i in range(len(tasks))]


def _bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True, disable=not enabled)


def _remote_run(fn: Predictor, tasks: list[Task]) -> list[TaskResult]:
    """Body of the Ray task: note the assigned GPUs (for device choice), then :func:`run_unit`."""
    import ray

    global _WORKER_GPUS
    _WORKER_GPUS = list(ray.get_gpu_ids())
    return run_unit(fn, tasks)


def run_parallel(tasks: Sequence[Task], fn: Predictor, *, address: str | None = None,
                 num_gpus_per_task: float = 0.0, num_cpus_per_task: float = 1,
                 max_in_flight: int | None = None, progress: bool = True,
                 desc: str = "eval", deadline: float | None = None) -> list[TaskResult]:
    """Run ``fn`` on every task as Ray remote tasks; results in the order of ``tasks``.

    ``max_in_flight`` bounds the tasks submitted at once (``None``: all). Ray is started
    locally (or joined at ``address``) if it is not running, and shut down again in that case.
    At ``deadline`` the units in flight are cancelled and the rest are not submitted.
    """
    import ray

    if num_gpus_per_task < 0 or num_cpus_per_task <= 0:
        raise ValueError("num_gpus_per_task must be >= 0 and num_cpus_per_task > 0")
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
        started = True
    try:
        if num_gpus_per_task > 0:
            have = ray.cluster_resources().get("GPU", 0.0)
            if have < num_gpus_per_task:
                raise RuntimeError(f"each evaluation task asks for {num_gpus_per_task} GPU(s) but the Ray "
                                   f"cluster has {have}; lower --gpus-per-task or join a cluster with GPUs")
        remote = ray.remote(_remote_run).options(num_cpus=num_cpus_per_task, num_gpus=num_gpus_per_task,
                                                 max_retries=1)
        fn_ref = ray.put(fn)
        work = units(fn, tasks)
        limit = max_in_flight if max_in_flight and max_in_flight > 0 else len(work)
        results: dict[int, TaskResult] = {}
        pending: dict[Any, list[int]] = {}
        next_u = 0
        with _bar(len(tasks), desc, progress) as bar:
            while next_u < len(work) or pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    for ref, unit in pending.items():
                        ray.cancel(ref, force=True)
                        results.update((i, _late(tasks[i])) for i in unit)
                    results.update((i, _late(tasks[i])) for unit in work[next_u:] for i in unit)
                    break
                while next_u < len(work) and len(pending) < limit:
                    unit = work[next_u]
                    pending[remote.remote(fn_ref, [tasks[i] for i in unit])] = unit
                    next_u += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
                for ref in ready:
                    unit = pending.pop(ref)
                    try:
                        got = ray.get(ref)
                    except ray.exceptions.RayError as err:  # e.g. the worker died twice (out of memory)
                        got = [failed(tasks[i], root_cause(err), trace=str(err)) for i in unit]
                    results.update(zip(unit, got))
                    bar.update(len(unit))
        return [results[i] for i in range(len(tasks))]
    finally:
        if started:
            ray.shutdown()


def root_cause(err: BaseException) -> BaseException:
    """The exception inside Ray's wrappers, unwrapped as deep as it goes: ``RayTaskError.cause``, and
    ``RaySystemError.client_exc`` (e.g. an argument that could not be unpickled in the worker)."""
    from ray.exceptions import RaySystemError, RayTaskError

    while True:
        inner = (err.cause if isinstance(err, RayTaskError) else
                 err.client_exc if isinstance(err, RaySystemError) else None)
        if not isinstance(inner, BaseException) or inner is err:
            return err
        err = inner


def run(tasks: Sequence[Task], fn: Predictor, *, workers: int = 0, address: str | None = None,
        num_gpus_per_task: float = 0.0, num_cpus_per_task: float = 1, progress: bool = True,
        desc: str = "eval", deadline: float | None = None) -> list[TaskResult]:
    """``workers == 0``: :func:`run_serial` in this process; otherwise :func:`run_parallel` with at
    most ``workers`` tasks in flight (``workers < 0``: as many as the cluster's resources allow)."""
    if workers == 0:
        if address is not None:
            raise ValueError("workers=0 runs in-process; an address needs workers != 0")
        return run_serial(tasks, fn, progress=progress, desc=desc, deadline=deadline)
    return run_parallel(tasks, fn, address=address, num_gpus_per_task=num_gpus_per_task,
                        num_cpus_per_task=num_cpus_per_task, max_in_flight=workers if workers > 0 else None,
                        progress=progress, desc=desc, deadline=deadline)
