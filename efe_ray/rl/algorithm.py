"""EFEPPO: RLlib's PPO whose checkpoints also hold the trial's learner, in our own files.

The learner lives in the trial's :class:`~envs.trainee.Trainee`, which the algorithm's local env
runner built (efe_ray/rl/env_runner.py); :attr:`EFEPPO.trainee` is that reference.

Checkpoints are Tune's ``save_checkpoint`` / ``load_checkpoint`` hooks: RLlib's files first, then
ours beside them (efe_ray/checkpoint.py): ``efe_learner.pt`` (the learner and its sampler),
``efe_policy.pt`` (the policy's weights, which ``evaluate`` rebuilds the module from:
efe_ray/rl/policy.py) and ``efe_meta.json`` (config, trained tasks, control statistics, hashes).
These are weights-only and hashed; RLlib's env-runner state is pickled, so the learner is not put
there (``evaluate`` must never unpickle a checkpoint). A restore that finds our files truncated or
corrupt falls back to the newest earlier good checkpoint beside it, with a warning.

Per-iteration results (learner metrics, held-out scores) come from efe_ray/rl/callbacks.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ray.rllib.algorithms.ppo import PPO
from ray.rllib.core import DEFAULT_MODULE_ID

from efe_ray import checkpoint as ckpt
from efe_ray.rl.env_runner import TraineeEnvRunner
from efe_ray.rl.policy import policy_state
from envs.trainee import Trainee


def load_learner_or_previous(checkpoint_dir: str, device) -> tuple[dict, dict]:
    """(learner state, metadata) of ``checkpoint_dir``; if our files there are truncated or
    corrupt, those of the newest earlier good ``checkpoint_*`` folder beside it, with a warning."""
    try:
        state, _, meta = ckpt.load(checkpoint_dir, map_location=device)
        return state, meta
    except ckpt.CheckpointError as err:
        here = Path(checkpoint_dir).resolve()
        earlier = sorted((p for p in here.parent.glob("checkpoint_*") if p.name < here.name), reverse=True)
        for candidate in earlier:
            try:
                state, _, meta = ckpt.load(candidate, map_location=device)
            except ckpt.CheckpointError:
                continue
            warnings.warn(f"{err}; restored the learner from the previous good checkpoint {candidate} "
                          f"(the policy comes from {here.name})", stacklevel=2)
            return state, meta
        raise ckpt.CheckpointError(f"{err}; no earlier good checkpoint beside it in {here.parent}") from err


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
        ckpt.save(checkpoint_dir, t.state_dict(), t.cfg, t.train_tasks, env_stats=t.stats(), policy=policy)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        super().load_checkpoint(checkpoint_dir)
        state, meta = load_learner_or_previous(checkpoint_dir, self.trainee.learner.device)
        self.trainee.load_state_dict(state, meta["env_stats"])
