"""Reliability: a killed search resumes from its checkpoints, a failing trial is retried, and the
summary names trials that failed for good. Each test starts Ray (tens of seconds)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from efe_ray.tune import main as tune_main

pytestmark = pytest.mark.slow

SMOKE = ["--preset", "smoke", "--no-dashboard", "--num-cpus", "2", "--set", "tune.grace_period=100"]
STEPS_PER_ITER = 16  # tuning/smoke.yaml: rl.train_batch_size


def results(path):
    """Each trial's result rows."""
    out = []
    for f in sorted(glob.glob(str(path / "EFEPPO_*" / "result.json"))):
        out.append([json.loads(line) for line in open(f)])
    return out


def test_kill_9_then_resume_continues_every_trial_from_its_checkpoint(tmp_path):
    iterations = 10
    cmd = [sys.executable, "-m", "efe_ray.tune", *SMOKE, "--iterations", str(iterations),
           "--storage-path", str(tmp_path), "--name", "crash"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        # Wait until every trial has written at least two checkpoints and the experiment state has
        # been snapshotted since (every 2 s), then kill everything at once.
        while time.time() < deadline and proc.poll() is None:
            trials = glob.glob(str(tmp_path / "crash" / "EFEPPO_*"))
            if len(trials) == 2 and all(glob.glob(os.path.join(t, "checkpoint_000001")) for t in trials):
                time.sleep(3)
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # (The driver's result.json may not even be flushed yet: the checkpoints are what counts.)

    rc = tune_main([*SMOKE, "--iterations", str(iterations), "--storage-path", str(tmp_path), "--name", "crash",
                    "--resume"])
    assert rc == 0
    for rows in results(tmp_path / "crash"):
        last = rows[-1]
        assert last["training_iteration"] == iterations
        # Restored from a checkpoint, not restarted: the iteration count went on ...
        assert any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)
        # ... and so did the learner (a fresh learner would have counted fewer steps).
        assert last["learner/steps"] == iterations * STEPS_PER_ITER


def test_a_failing_trial_is_retried_from_its_last_checkpoint(tmp_path, capsys):
    rc = tune_main([*SMOKE, "--iterations", "4", "--storage-path", str(tmp_path), "--name", "retry",
                    "--set", "env.fail_at_step=40", "--set", "tune.max_failures=1"])
    assert rc == 0
    for rows in results(tmp_path / "retry"):
        assert rows[-1]["training_iteration"] == 4
        assert rows[-1]["learner/steps"] == 4 * STEPS_PER_ITER
    assert "0 failed" in capsys.readouterr().out


def test_summary_names_trials_that_failed_for_good(tmp_path, capsys):
    rc = tune_main([*SMOKE, "--iterations", "4", "--storage-path", str(tmp_path), "--name", "fail",
                    "--set", "env.fail_at_step=40", "--set", "tune.max_failures=0"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "2 failed" in out
    assert out.count("failed trial EFEPPO_") == 2
    assert "injected failure at learner step 40" in out
