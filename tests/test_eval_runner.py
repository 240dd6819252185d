"""Running a method over tasks (efe_ray.evaluation.runner): the progress bar, Ray's wrapped errors,
the time budget, and run_parallel on a local Ray (the one slow test here)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from efe_ray.data.task import Task
from efe_ray.evaluation.baselines import copy_input
from efe_ray.evaluation.report import EXIT_PARTIAL, run_status, score_method
from efe_ray.evaluation.runner import failed, root_cause, run_parallel, run_serial

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
