"""efe_ray/rl/retention.py: after a crash, a trial's record of checkpoints is brought to its folder
before the trial restores (gone folders dropped, newer ones registered and pruned as any other)."""

from __future__ import annotations

import json
import shutil
import warnings
from types import SimpleNamespace

import pyarrow.fs
import pytest
from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult
from ray.tune import CheckpointConfig, Checkpoint

from efe_ray import checkpoint as ckpt
from efe_ray.rl.retention import CheckpointRecord, reconcile

SCORES = {1: 0.1, 2: 0.1, 3: 0.2, 4: 0.5, 5: 0.1, 6: 0.2, 7: 0.3, 8: 0.9}  # training iteration -> eval/score


def folder(trial, index: int, iteration: int):
    """A checkpoint folder as EFEPPO writes it, as far as the record goes: its metadata's progress."""
    path = trial / f"checkpoint_{index:06d}"
    path.mkdir()
    (path / ckpt.META_FILE).write_text(json.dumps({"format": ckpt.FORMAT,
                                                   "progress": {"training_iteration": iteration, "time_total_s": 1.0}}))
    return path


def result(path, iteration: int) -> _TrainingResult:
    return _TrainingResult(checkpoint=Checkpoint.from_directory(str(path)),
                           metrics={"training_iteration": iteration, "eval/score": SCORES[iteration]})


def manager() -> _CheckpointManager:  # as efe_ray/rl/search.py configures Tune's: the best by the metric, plus the latest
    return _CheckpointManager(CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="eval/score",
                                               checkpoint_score_order="max"))


def test_a_record_behind_its_folder_is_reconciled_and_pruned(tmp_path):
    trial = tmp_path / "trial"
    trial.mkdir()
    (trial / "result.json").write_text("".join(json.dumps({"training_iteration": i, "eval/score": s}) + "\n"
                                               for i, s in SCORES.items()) + '{"training_iter')  # cut by the crash
    older = folder(trial, 1, 2)  # not in the record and older than its latest: left alone
    best = folder(trial, 3, 4)
    latest = folder(trial, 5, 6)
    m = manager()
    m.register_checkpoint(result(best, 4))
    m.register_checkpoint(result(latest, 6))  # the record, as the last snapshot before the crash held it
    # After the snapshot the crashed search deleted its latest and wrote two more.
    shutil.rmtree(latest)
    newer, newest = folder(trial, 6, 7), folder(trial, 7, 8)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Tune's pruning no longer meets a folder that is gone
        dropped, added = reconcile(m, trial)
    assert (dropped, added) == (["checkpoint_000005"], ["checkpoint_000006", "checkpoint_000007"])
    assert m.latest_checkpoint_result.checkpoint.path == str(newest)  # what the trial restores from
    assert m.latest_checkpoint_result.metrics["eval/score"] == 0.9  # its reported result, from result.json
    # Pruned as any other: the best (iteration 8, also the latest) remains, and the older folder
    # the record never named.
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [older.name, newest.name]
    assert not best.exists() and not newer.exists()
    assert reconcile(m, trial) == ([], [])  # reconciled: the next start changes nothing


def test_a_record_that_matches_its_folder_is_left_as_it_is(tmp_path):
    trial = tmp_path / "trial"
    trial.mkdir()
    m = manager()
    for index, iteration in ((0, 1), (1, 2), (2, 3)):
        m.register_checkpoint(result(folder(trial, index, iteration), iteration))
    before = (list(m._checkpoint_results), m.latest_checkpoint_result)
    assert reconcile(m, trial) == ([], [])
    assert (list(m._checkpoint_results), m.latest_checkpoint_result) == before
    assert [p.name for p in trial.glob("checkpoint_*")] == ["checkpoint_000002"]  # the best is the latest


def test_a_newer_folder_without_a_reported_result_still_joins_the_record(tmp_path):
    trial = tmp_path / "trial"
    trial.mkdir()
    m = manager()
    m.register_checkpoint(result(folder(trial, 0, 1), 1))
    unreadable = trial / "checkpoint_000002"  # not an efe_ray checkpoint: not registered, not deleted
    unreadable.mkdir()
    newer = folder(trial, 1, 2)  # no result.json row for it (the crash came first)
    assert reconcile(m, trial) == ([], ["checkpoint_000001"])
    assert m.latest_checkpoint_result.checkpoint.path == str(newer)
    assert m.latest_checkpoint_result.metrics == {"training_iteration": 2}
    assert unreadable.exists()


def test_the_callback_reconciles_a_local_trial_as_it_starts_and_leaves_remote_storage_to_tune(tmp_path):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    m = manager()
    m.register_checkpoint(result(folder(trial_dir, 0, 1), 1))
    newer = folder(trial_dir, 1, 2)

    def trial(fs):
        return SimpleNamespace(storage=SimpleNamespace(storage_filesystem=fs), path=str(trial_dir),
                               run_metadata=SimpleNamespace(checkpoint_manager=m))

    remote = pyarrow.fs.SubTreeFileSystem(str(tmp_path), pyarrow.fs.LocalFileSystem())  # not "local" to Tune
    CheckpointRecord().on_trial_start(iteration=0, trials=[], trial=trial(remote))
    assert m.latest_checkpoint_result.metrics["training_iteration"] == 1
    with pytest.warns(UserWarning, match=r"dropped none \(gone\), registered \['checkpoint_000001'\]"):
        CheckpointRecord().on_trial_start(iteration=0, trials=[], trial=trial(pyarrow.fs.LocalFileSystem()))
    assert m.latest_checkpoint_result.checkpoint.path == str(newer)


def test_a_restored_trial_numbers_its_next_checkpoint_after_every_folder_of_its_trial(tmp_path):
    """EFEPPO.restore sets the trial's checkpoint count to the newest folder's index (efe_ray/rl/algorithm.py):
    after a crash the experiment state's count can be behind, and a new checkpoint written into an
    older folder would then be pruned with it."""
    from efe_ray.rl.algorithm import newest_index

    for name in ("checkpoint_000001", "checkpoint_000007", "checkpoint_tmp"):
        (tmp_path / name).mkdir()
    restored = tmp_path / "checkpoint_000001"
    assert newest_index(str(restored)) == 7
    assert newest_index(_TrainingResult(checkpoint=Checkpoint.from_directory(str(restored)), metrics={})) == 7
    remote = Checkpoint(str(restored), filesystem=pyarrow.fs.SubTreeFileSystem("/", pyarrow.fs.LocalFileSystem()))
    assert newest_index(remote) == -1  # a folder this process cannot list: Tune's count stands
