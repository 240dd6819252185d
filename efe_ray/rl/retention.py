"""Tune's record of a trial's checkpoints, brought back to what is on disk when the trial starts.

Tune keeps, per trial, the checkpoints it registered (``trial.run_metadata.checkpoint_manager``)
and prunes them to the K best plus the latest (efe_ray/rl/search.py). A resumed search reads that
record from the last snapshot of the experiment state, and after a crash (kill -9, a lost machine)
the snapshot can be behind the trial's folder:

- checkpoints that the pruning deleted after the snapshot are still named in the record. Ray 2.60
  then fails to delete them again (``FileNotFoundError``, logged as "Error handling checkpoint"),
  and the rest of that round's pruning is skipped;
- checkpoints written after the snapshot are missing from it. They are never pruned, and the trial
  restores from its recorded latest, not from the newest on disk.

:class:`CheckpointRecord` (a Tune callback) reconciles a trial's record as the trial starts, just
before Tune restores it (:func:`reconcile`). Folders that are gone leave the record. ``checkpoint_*``
folders newer than the record's latest join it in the order of the training iteration they recorded
(``efe_meta.json``), each with the trial's reported result of that iteration (``result.json``). So
the newest becomes the latest, which the trial restores from, and the pruning treats them as any
other. The restored trial numbers its next checkpoint after the newest folder
(:meth:`efe_ray.rl.algorithm.EFEPPO.restore`), so that none lands in a folder written before the
crash. This reads and sets the checkpoint manager's private fields: Ray is pinned to 2.60
(pyproject.toml).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ray.train._internal.checkpoint_manager import _CheckpointManager, _TrainingResult
from ray.tune import Callback, Checkpoint

from efe_ray import checkpoint as ckpt

__all__ = ["CheckpointRecord", "reconcile"]


def _iteration(folder: Path) -> int | None:
    """The training iteration an efe_ray checkpoint folder recorded (None: not one, or unreadable)."""
    try:
        progress = ckpt.read_meta(folder).get("progress")
    except (ckpt.CheckpointError, OSError, ValueError):
        return None
    return None if progress is None else int(progress["training_iteration"])


def _reported(trial_dir: Path) -> dict[int, dict]:
    """training iteration -> the trial's last reported result of it (``result.json``; {} without one)."""
    path = trial_dir / "result.json"
    rows: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by the crash
                continue
            if "training_iteration" in row:
                rows[int(row["training_iteration"])] = row
    return rows


def reconcile(manager: _CheckpointManager, trial_dir: Path) -> tuple[list[str], list[str]]:
    """Bring ``manager``'s record of the trial in ``trial_dir`` to what is on disk (the module
    docstring). Returns (the folders dropped as gone, the folders registered), by name."""
    results = manager._checkpoint_results
    gone = [r for r in results if not Path(r.checkpoint.path).exists()]
    manager._checkpoint_results = [r for r in results if r not in gone]
    latest = manager.latest_checkpoint_result
    recorded = {Path(r.checkpoint.path).name for r in manager._checkpoint_results}
    if latest is not None:
        recorded.add(Path(latest.checkpoint.path).name)
    since = -1 if latest is None else int(latest.metrics.get("training_iteration", -1))
    newer = []
    for folder in trial_dir.glob("checkpoint_*"):
        it = _iteration(folder) if folder.name not in recorded and folder.is_dir() else None
        if it is not None and it > since:
            newer.append((it, folder))
    newer.sort()
    reported = _reported(trial_dir) if newer else {}
    for it, folder in newer:
        metrics = reported.get(it, {"training_iteration": it})
        manager.register_checkpoint(_TrainingResult(checkpoint=Checkpoint.from_directory(str(folder)),
                                                    metrics=metrics))
    return [Path(r.checkpoint.path).name for r in gone], [f.name for _, f in newer]


class CheckpointRecord(Callback):
    """Reconciles each trial's record of checkpoints with its folder as the trial starts (a no-op
    for a record that matches, which is every start but the first after a crash)."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        storage = getattr(trial, "storage", None)
        if storage is None or storage.storage_filesystem.type_name != "local" or trial.path is None:
            return  # remote storage: the folder cannot be listed here; Tune's record stands
        dropped, added = reconcile(trial.run_metadata.checkpoint_manager, Path(trial.path))
        if dropped or added:
            warnings.warn(f"trial {trial}: its record of checkpoints was behind its folder (a crash after the "
                          f"last snapshot): dropped {dropped or 'none'} (gone), registered {added or 'none'}",
                          stacklevel=2)
