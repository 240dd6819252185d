"""Running a method over tasks (efe_ray.evaluation.runner): the progress bar, Ray's wrapped errors,
the time budget, a group that raises answered again task by task, and run_parallel on a local Ray
(the one slow test here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from efe_ray.data.task import Task
from efe_ray.evaluation.baselines import copy_input
from efe_ray.evaluation.report import EXIT_PARTIAL, run_status, score_method
from efe_ray.evaluation.runner import GroupFallback, failed, root_cause, run_parallel, run_serial

from helpers_eval import rule_task


def test_progress_is_a_tqdm_bar_on_stderr(capsys):
    tasks = [rule_task(f"t{i}", lambda g: g, seed=i) for i in range(3)]
    run_serial(tasks, copy_input, progress=True, desc="copy")
    err = capsys.readouterr().err
    assert "copy: 100%" in err and "3/3" in err
    run_serial(tasks, copy_input, progress=False, desc="quiet")
    assert "quiet" not in capsys.readouterr().err


def test_root_cause_unwraps_ray_task_errors():
    from ray.exceptions import RayTaskError

    inner = KeyError("missing")
    outer = RayTaskError("f", "traceback", RayTaskError("g", "traceback", inner))
    assert root_cause(outer) is inner
    assert failed(rule_task("a", lambda g: g), root_cause(outer)).error == "KeyError: 'missing'"
    from ray.exceptions import RaySystemError

    assert root_cause(RaySystemError(inner, "traceback")) is inner
    assert root_cause(RaySystemError("a string", "traceback")).client_exc == "a string"  # nothing to unwrap


def test_a_task_not_started_by_the_deadline_fails_and_scores_zero():
    tasks = [rule_task(k, lambda g: g) for k in "abc"]
    seen = []

    def slow(task: Task):
        seen.append(task.task_id)
        time.sleep(0.3)
        return copy_input(task)

    results = run_serial(tasks, slow, progress=False, deadline=time.monotonic() + 0.1)
    assert seen == ["a"]  # started before the deadline, finished; the others never started
    assert [bool(r.error) for r in results] == [False, True, True]
    assert results[1].error == "TimeBudgetEnded: the time budget ended before this task was answered"
    method = score_method("model", tasks, results, 1.0)
    assert method.summary.solved_outputs == 1 and len(method.errors) == 2
    assert run_status([method])[1] == EXIT_PARTIAL


def grouped(size: int, bad: frozenset = frozenset(), most: int = 0, pause: float = 0.0):
    """A group predictor (copy_input; groups of ``size`` in task order) that raises for a group
    holding a task of ``bad`` and for one of more than ``most`` tasks (0: any size); a task answered
    alone takes ``pause`` seconds. Its ``calls`` lists the groups it was given. Made in a function, so
    that Ray ships it by value."""

    class Grouped:
        def __init__(self):
            self.calls = []

        def groups(self, tasks):
            return [list(range(i, min(i + size, len(tasks)))) for i in range(0, len(tasks), size)]

        def predict_group(self, tasks):
            self.calls.append([t.task_id for t in tasks])
            time.sleep(pause if len(tasks) == 1 else 0.0)
            for t in tasks:
                if t.task_id in bad:
                    raise RuntimeError(f"cannot answer {t.task_id}")
            if most and len(tasks) > most:
                raise MemoryError(f"{len(tasks)} tasks at once")
            return [copy_input(t) for t in tasks]

    return Grouped()


def test_a_group_that_raises_is_answered_again_task_by_task():
    tasks = [rule_task(k, lambda g: g, seed=i) for i, k in enumerate("abcd")]
    fn = grouped(2, bad=frozenset("c"))
    results = run_serial(tasks, fn, progress=False)
    assert fn.calls == [["a", "b"], ["c", "d"], ["c"], ["d"]]
    assert [r.error for r in results] == ["", "", "RuntimeError: cannot answer c", ""]
    assert results[2].attempts == [] and "Traceback" in results[2].traceback
    np.testing.assert_array_equal(results[3].attempts[0][0], tasks[3].test[0].input)
    group = GroupFallback(("c", "d"), "RuntimeError: cannot answer c")
    assert [r.fallback for r in results] == [None, None, group, group]
    method = score_method("model", tasks, results, 1.0)
    assert method.summary.solved_outputs == 3
    report = method.to_dict()
    assert report["errors"] == [{"task_id": "c", "error": "RuntimeError: cannot answer c"}]
    assert report["group_fallbacks"] == 1
    assert report["fallback_groups"] == [{"tasks": ["c", "d"], "error": "RuntimeError: cannot answer c"}]
    assert run_status([method]) == ("partial: failed (model on 1 of 4 tasks); those tasks score 0", EXIT_PARTIAL)

    fn = grouped(4, most=1)  # only the group raises: every task is answered, the run is ok
    results = run_serial(tasks, fn, progress=False)
    assert fn.calls == [["a", "b", "c", "d"], ["a"], ["b"], ["c"], ["d"]]
    method = score_method("model", tasks, results, 1.0)
    assert not method.errors and method.summary.solved_outputs == 4 and run_status([method]) == ("ok", 0)
    assert method.to_dict()["fallback_groups"] == [{"tasks": list("abcd"), "error": "MemoryError: 4 tasks at once"}]


def test_answering_a_group_again_stops_at_the_deadline():
    tasks = [rule_task(k, lambda g: g) for k in "abc"]
    fn = grouped(3, most=1, pause=0.6)
    results = run_serial(tasks, fn, progress=False, deadline=time.monotonic() + 0.3)
    assert fn.calls == [["a", "b", "c"], ["a"]]  # the group raised at once, "a" alone took 0.6 s: the rest are late
    assert [r.error.split(":")[0] for r in results] == ["", "TimeBudgetEnded", "TimeBudgetEnded"]
    assert all(r.fallback is not None for r in results)


@pytest.mark.slow
def test_run_parallel_on_a_local_ray():
    import ray

    tasks = [rule_task("a", lambda g: g), rule_task("b", lambda g: g[:, ::-1])]

    def flaky(task: Task):  # defined here: shipped by value (workers cannot import this test module)
        if task.task_id == "b":
            raise RuntimeError("boom")
        return copy_input(task)

    class Unshippable:
        """A predictor that cannot be rebuilt in a worker: the Ray task fails outside run_task."""

        def __call__(self, task):
            return copy_input(task)

        def __reduce__(self):
            return (int, ("cannot be rebuilt here",))  # int("...") raises ValueError when unpickled

    def slow_on_b(task: Task):
        if task.task_id == "b":
            time.sleep(60)
        return copy_input(task)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_parallel(tasks, flaky, num_cpus_per_task=1, progress=False)
        broken = run_parallel(tasks[:1], Unshippable(), num_cpus_per_task=1, progress=False)
        isolated = run_parallel(tasks, grouped(2, bad=frozenset("b")), num_cpus_per_task=1, progress=False)
        start = time.monotonic()
        late = run_parallel(tasks, slow_on_b, num_cpus_per_task=1, progress=False, deadline=start + 8)
        waited = time.monotonic() - start
    finally:
        ray.shutdown()
    assert waited < 30  # "b" was cancelled at the deadline, not awaited
    assert not late[0].error and late[1].error.startswith("TimeBudgetEnded: ") and late[1].attempts == []
    assert [r.task_id for r in results] == ["a", "b"]
    np.testing.assert_array_equal(results[0].attempts[0][0], tasks[0].test[0].input)
    assert not results[0].error and results[1].error == "RuntimeError: boom" and results[1].attempts == []
    assert broken[0].error == "ValueError: invalid literal for int() with base 10: 'cannot be rebuilt here'"
    assert broken[0].attempts == [] and "Traceback" in broken[0].traceback
    # A group that raises in a worker is answered again there, task by task: only "b" fails.
    assert [r.error for r in isolated] == ["", "RuntimeError: cannot answer b"]
    assert isolated[0].attempts and isolated[0].fallback == GroupFallback(("a", "b"), "RuntimeError: cannot answer b")
