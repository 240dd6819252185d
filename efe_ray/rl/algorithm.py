"""EFEPPO: RLlib's PPO whose checkpoints also hold the trial's learner, in our own files.

The learner lives in the trial's :class:`~envs.trainee.Trainee`, which the algorithm's local env
runner built (efe_ray/rl/env_runner.py); :attr:`EFEPPO.trainee` is that reference.

Checkpoints are Tune's ``save_checkpoint`` / ``load_checkpoint`` hooks: RLlib's files first, then
ours beside them (efe_ray/checkpoint.py): ``efe_learner.pt`` (the learner and its sampler),
``efe_policy.pt`` (the policy's weights, which ``evaluate`` rebuilds the module from:
efe_ray/rl/policy.py) and ``efe_meta.json`` (config, trained tasks, control statistics, hashes).
These are weights-only and hashed; RLlib's env-runner state is pickled, so the learner is not put
there (``evaluate`` must never unpickle a checkpoint). A restore that finds our files truncated or
corrupt continues from the newest earlier good checkpoint beside it, with a warning; so does a
restore whose checkpoint folder is gone (a ``kill -9`` can leave Tune's experiment state naming a
checkpoint that its retention, ``num_to_keep``, had just deleted), from the newest good one beside
it. Either way RLlib's state, the learner and the iteration count (our metadata's record) all come
from that one checkpoint.

Per-iteration results (learner metrics, held-out scores) come from efe_ray/rl/callbacks.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ray.rllib.algorithms.ppo import PPO
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.train._internal.checkpoint_manager import _TrainingResult
from ray.tune import Checkpoint
from ray.tune.result import TIME_TOTAL_S, TRAINING_ITERATION

from efe_ray import checkpoint as ckpt
from efe_ray.rl.env_runner import TraineeEnvRunner
from efe_ray.rl.policy import policy_state
from envs.trainee import Trainee


def local_folder(result: _TrainingResult | Checkpoint | str) -> Path | None:
    """The local checkpoint folder of what Tune hands :meth:`EFEPPO.restore` (None: on remote storage)."""
    ckpt_obj = result.checkpoint if isinstance(result, _TrainingResult) else result
    if isinstance(ckpt_obj, Checkpoint) and ckpt_obj.filesystem.type_name != "local":
        return None
    return Path(ckpt_obj.path if isinstance(ckpt_obj, Checkpoint) else ckpt_obj)


def restorable(result: _TrainingResult | Checkpoint | str) -> _TrainingResult | Checkpoint | str:
    """``result`` (what Tune hands :meth:`EFEPPO.restore`) where its local checkpoint folder exists and
    our files there verify; else a result for the newest good ``checkpoint_*`` folder beside it that
    recorded its progress (any, for a folder that is gone; an earlier one, for our files truncated or
    corrupt), carrying that folder's training iteration and time, with a warning: RLlib's state, the
    learner and the iteration count then all come from one checkpoint. Raises ValueError (a folder
    that is gone) or :class:`~efe_ray.checkpoint.CheckpointError` (corrupt) when there is none."""
    path = local_folder(result)
    if path is None:
        return result
    gone = not path.exists()
    if not gone:
        try:
            ckpt.verify(path)  # the hash check load() makes; load_checkpoint() then loads it once
            return result
        except ckpt.CheckpointError as err:
            problem = err
    for candidate in sorted(path.parent.glob("checkpoint_*"), reverse=True):
        if not gone and candidate.name >= path.name:
            continue
        try:
            progress = ckpt.verify(candidate).get("progress")
        except ckpt.CheckpointError:
            continue
        if progress is None:  # written before checkpoints recorded their iteration
            continue
        why = f"checkpoint {path} is gone" if gone else str(problem)
        warnings.warn(f"{why}; the trial continues from {candidate.name}, at iteration "
                      f"{progress['training_iteration']}", stacklevel=2)
        metrics = {TRAINING_ITERATION: progress["training_iteration"], TIME_TOTAL_S: progress["time_total_s"]}
        return _TrainingResult(checkpoint=Checkpoint.from_directory(str(candidate)), metrics=metrics)
    if gone:
        raise ValueError(f"cannot restore: checkpoint {path} is gone and no checkpoint with recorded progress is "
                         f"beside it in {path.parent}")
    raise ckpt.CheckpointError(f"{problem}; no earlier good checkpoint with recorded progress beside it in "
                               f"{path.parent}")


def newest_index(result: _TrainingResult | Checkpoint | str) -> int:
    """The highest index of the ``checkpoint_<index>`` folders beside ``result``'s local folder (-1: none,
    or a remote one)."""
    path = local_folder(result)
    if path is None:
        return -1
    indices = [int(p.name.removeprefix("checkpoint_")) for p in path.parent.glob("checkpoint_*")
               if p.name.removeprefix("checkpoint_").isdigit()]
    return max(indices, default=-1)


class EFEPPO(PPO):
    """PPO prompt refiner whose checkpoints carry the trial's learner (see the module docstring)."""

    @property
    def trainee(self) -> Trainee:
        """The trial's learner, sampler, refiner and tasks (built by the local env runner)."""
        runner = self.env_runner
        if not isinstance(runner, TraineeEnvRunner) or runner.trainee is None:
            raise RuntimeError("EFEPPO needs its env in the algorithm process: use efe_ray.rl.config.ppo_config "
                               "(TraineeEnvRunner, num_env_runners=0)")
        return runner.trainee

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        super().save_checkpoint(checkpoint_dir)
        # The learner's module: the weights RLlib's own checkpoint holds (the env runner's copy is
        # synced from it after every update).
        weights = self.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        policy = policy_state(self.get_module(DEFAULT_MODULE_ID), weights)
        t = self.trainee
        progress = {"training_iteration": self.iteration, "time_total_s": float(self._time_total)}
        ckpt.save(checkpoint_dir, t.state_dict(), t.cfg, t.train_tasks, env_stats=t.stats(), policy=policy,
                  progress=progress)

    def restore(self, checkpoint_path: _TrainingResult | Checkpoint | str) -> None:
        """Tune's restore, from a good checkpoint beside a folder that is gone or corrupt (:func:`restorable`).
        The next checkpoint is numbered after every ``checkpoint_*`` folder of the trial: after a crash the
        experiment state's count can be behind the folder, and a new checkpoint must not land in (and
        be pruned as) one written before the crash."""
        chosen = restorable(checkpoint_path)
        super().restore(chosen)
        storage = getattr(self, "_storage", None)
        if storage is not None:
            storage.current_checkpoint_index = max(storage.current_checkpoint_index, newest_index(chosen))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """RLlib's state, then the learner's, from ``checkpoint_dir`` (verified: a corrupt learner file
        raises :class:`~efe_ray.checkpoint.CheckpointError`; :meth:`restore` picks a good folder first)."""
        super().load_checkpoint(checkpoint_dir)
        state, _, meta = ckpt.load(checkpoint_dir, map_location=self.trainee.learner.device)
        self.trainee.load_state_dict(state, meta["env_stats"])
