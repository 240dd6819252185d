"""Reliability: a killed search resumes from its checkpoints, a failing trial is retried unless
retrying cannot help, and the summary names trials that failed for good. Each test starts Ray
(tens of seconds)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from efe_ray.tune import main as tune_main
from tuning.presets import build_config
from tests.fault_injection import FailingEnv

pytestmark = pytest.mark.slow

SMOKE = ["--preset", "smoke", "--no-dashboard", "--num-cpus", "2", "--set", "tune.grace_period=100"]
_SMOKE_CFG = build_config("smoke", [])
STEPS_PER_ITER = _SMOKE_CFG.rl.train_batch_size * _SMOKE_CFG.env.learner_steps_per_action  # learner steps


def results(path):
    """Each trial's result rows."""
    out = []
    for f in sorted(glob.glob(str(path / "EFEPPO_*" / "result.json"))):
        out.append([json.loads(line) for line in open(f)])
    return out


def saved_iterations(path):
    """Each trial's last iteration as the newest experiment state file records it (empty while none
    is readable): the state a resumed search starts from. A trial's checkpoint is registered with
    the result that carries it, so an iteration here has its checkpoint in the state too."""
    states = sorted(glob.glob(str(path / "experiment_state-*.json")), key=os.path.getmtime)
    if not states:
        return []
    try:
        with open(states[-1]) as f:
            trials = json.load(f)["trial_data"]
        return [json.loads(runtime).get("last_result", {}).get("training_iteration", 0) for _, runtime in trials]
    except (KeyError, ValueError):  # being written (json.JSONDecodeError is a ValueError): read again later
        return []


def test_kill_9_then_resume_continues_from_checkpoints_and_fails_a_corrupt_trial_once(tmp_path, capsys):
    iterations = 10
    cmd = [sys.executable, "-m", "efe_ray.tune", *SMOKE, "--iterations", str(iterations),
           "--set", "tune.max_failures=100", "--storage-path", str(tmp_path), "--name", "crash"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        # Wait until the saved experiment state holds two iterations of every trial (and so their
        # checkpoints), then kill everything at once. Waiting on the trials' own result files is
        # not enough: the state is snapshotted every few seconds, later under load, and a trial
        # the state knows no checkpoint of starts afresh on resume instead of failing.
        while time.time() < deadline and proc.poll() is None:
            saved = saved_iterations(tmp_path / "crash")
            if len(saved) == 2 and min(saved) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    intact, corrupt = sorted(glob.glob(str(tmp_path / "crash" / "EFEPPO_*")))
    for learner_file in glob.glob(os.path.join(corrupt, "checkpoint_*", "efe_learner.pt")):
        with open(learner_file, "r+b") as f:
            f.truncate(1000)  # as by a disk that filled up

    start = time.time()
    rc = tune_main(["--resume", "--name", "crash", "--storage-path", str(tmp_path), "--no-dashboard", "--num-cpus", "2"])
    out = capsys.readouterr().out
    assert rc == 1
    rows = results(tmp_path / "crash")[0]
    assert rows[-1]["training_iteration"] == iterations
    # Restored from a checkpoint, not restarted: the iteration count went on ...
    assert any(r["iterations_since_restore"] < r["training_iteration"] for r in rows)
    # ... and so did the learner (a fresh learner would have counted fewer steps).
    assert rows[-1]["learner/steps"] == iterations * STEPS_PER_ITER
    # The corrupt trial failed once (tune.max_failures=100 would retry it 100 times), with the cause.
    assert open(os.path.join(corrupt, "error.txt")).read().count("Failure #") == 1
    assert "1 finished, 1 failed" in out
    assert f"failed trial {os.path.basename(corrupt)}: CheckpointError: " in out
    assert "(not retried: retrying cannot fix this)" in out
    assert f"python -m efe_ray.tune --resume --name crash --storage-path {tmp_path}" in out
    assert time.time() - start < 150
    # Old checkpoints were removed as the trial went on: its best and its latest remain.
    kept = sorted(os.path.basename(f) for f in glob.glob(os.path.join(intact, "checkpoint_*")))
    assert 1 <= len(kept) <= 2 and kept[-1] == f"checkpoint_{iterations - 1:06d}", kept


def test_a_failing_trial_is_retried_from_its_last_checkpoint(tmp_path, capsys):
    rc = tune_main([*SMOKE, "--iterations", "4", "--storage-path", str(tmp_path), "--name", "retry",
                    "--set", "tune.max_failures=1"], env_cls=FailingEnv)
    assert rc == 0
    for rows in results(tmp_path / "retry"):
        assert rows[-1]["training_iteration"] == 4
        assert rows[-1]["learner/steps"] == 4 * STEPS_PER_ITER
    assert "0 failed" in capsys.readouterr().out


def test_summary_names_trials_that_failed_for_good(tmp_path, capsys):
    rc = tune_main([*SMOKE, "--iterations", "4", "--storage-path", str(tmp_path), "--name", "fail",
                    "--set", "tune.max_failures=0"], env_cls=FailingEnv)
    assert rc == 1
    out = capsys.readouterr().out
    assert "2 failed" in out
    assert out.count("failed trial EFEPPO_") == 2
    assert "injected failure at learner step 40" in out
