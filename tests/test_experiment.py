"""The experiment folder: one search at a time, the newest to resume, and what a resume refuses.
No Ray is started: every refusal happens before Ray would start."""

import json
import os
import subprocess
import sys
import time

import pytest

from efe_ray.rl.experiment import (ExperimentBusyError, ExperimentLock, newest_experiment, save_config,
                                   stored_config)
from efe_ray.tune import main as tune_main
from efe_ray.tune import parse_args

SMOKE = ["--preset", "smoke", "--no-dashboard"]


def fake_experiment(folder, saved_at: float):
    """A folder as Tune leaves it (only the files that mark an experiment)."""
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")
    state = folder / "experiment_state-2026-01-01_00-00-00.json"
    state.write_text("{}")
    os.utime(state, (saved_at, saved_at))
    os.utime(folder / "tuner.pkl", (saved_at, saved_at))


def test_a_lock_file_left_by_a_dead_search_does_not_block(tmp_path):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / ".efe_search.lock").write_text(json.dumps({"pid": 999999, "host": "gone", "started": "x", "command": "y"}))
    with ExperimentLock(folder):
        held = json.loads((folder / ".efe_search.lock").read_text())
        assert held["pid"] == os.getpid()


def test_a_live_search_is_named_and_a_second_one_or_a_resume_refused_at_once(tmp_path, capsys):
    folder = tmp_path / "exp"
    fake_experiment(folder, time.time())
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from efe_ray.rl.experiment import ExperimentLock; "
         "ExperimentLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", str(folder)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ExperimentBusyError, match=rf"in use by pid {holder.pid} on host "):
            ExperimentLock(folder).acquire()
        for argv in ([*SMOKE, "--name", "exp"], ["--resume", "--name", "exp", "--no-dashboard"]):
            start = time.time()
            assert tune_main([*argv, "--storage-path", str(tmp_path)]) == 2
            assert time.time() - start < 30
            err = capsys.readouterr().err
            assert f"error: experiment {folder} is in use by pid {holder.pid}" in err, err
    finally:
        holder.kill()
        holder.wait()
    with ExperimentLock(folder):  # the holder is gone: the lock is free again
        pass


def test_bare_resume_takes_the_newest_experiment(tmp_path, capsys):
    now = time.time()
    fake_experiment(tmp_path / "older", now - 100)
    fake_experiment(tmp_path / "newer", now - 10)
    (tmp_path / "not-an-experiment").mkdir()
    assert newest_experiment(tmp_path) == tmp_path / "newer"
    with pytest.raises(FileNotFoundError, match="no experiment to resume under"):
        newest_experiment(tmp_path / "not-an-experiment")
    assert tune_main(["--resume", "--storage-path", str(tmp_path / "empty")]) == 2
    assert "no experiment to resume under" in capsys.readouterr().err


def test_a_new_search_does_not_reuse_an_experiment_folder(tmp_path, capsys):
    fake_experiment(tmp_path / "exp", time.time())
    assert tune_main([*SMOKE, "--name", "exp", "--storage-path", str(tmp_path)]) == 2
    assert "already holds a search; continue it with --resume --name exp" in capsys.readouterr().err


def test_resume_keeps_the_experiments_own_settings(tmp_path, capsys):
    for option in (["--iterations", "3"], ["--set", "learner.agent_lr=0.001"], ["--preset", "smoke"],
                   ["--keep-checkpoints", "0"], ["--seed", "3"]):
        with pytest.raises(SystemExit) as stop:
            parse_args(["--resume", *option])
        assert stop.value.code == 2
        assert f"drop {option[0]}" in capsys.readouterr().err
    config = {"tune": {"iterations": 7}, "learner": {"agent_lr": 0.002}}
    save_config(tmp_path, config)
    assert stored_config(tmp_path) == config


def test_resume_of_a_folder_without_an_experiment_is_refused(tmp_path, capsys):
    (tmp_path / "exp").mkdir()
    assert tune_main(["--resume", "--name", "exp", "--storage-path", str(tmp_path)]) == 2
    assert f"--resume: {tmp_path / 'exp'} holds no experiment to continue" in capsys.readouterr().err


def test_the_seed_is_the_searchs_and_a_learner_seed_of_its_own_is_refused(tmp_path, capsys):
    from tuning.presets import build_config

    cfg = build_config("smoke", ["tune.seed=4"], seed=None)
    assert cfg.tune.seed == cfg.learner.seed == 4
    cfg = build_config("smoke", ["tune.seed=4"], seed=9)  # --seed overrides the key
    assert cfg.tune.seed == cfg.learner.seed == 9
    assert tune_main([*SMOKE, "--set", "learner.seed=3", "--storage-path", str(tmp_path)]) == 2
    assert ("error: --set learner.seed=3 sets learner.seed: a search seeds every trial's learner with tune.seed; "
            "set that instead (--seed N or --set tune.seed=N)") in capsys.readouterr().err
    assert tune_main([*SMOKE, "--seed", "-1", "--storage-path", str(tmp_path)]) == 2
    assert "tune.seed: must be >= 0 and <= 4.29497e+09, got -1" in capsys.readouterr().err
