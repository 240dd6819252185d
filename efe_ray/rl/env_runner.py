"""The env runner of a trial: RLlib's single-agent env runner, owning the trial's Trainee.

RLlib builds each env from its config (``config.env(env_config)``), and a config cannot carry a
live learner: it is copied, and pickled into RLlib's checkpoints (``class_and_ctor_args.pkl``).
So :class:`TraineeEnvRunner` builds the :class:`~envs.trainee.Trainee` itself, with the factory
:func:`~envs.trainee.build_trainee`, and hands it to the one env it makes (``config.env``:
ArcPromptEnv or a subclass). It keeps the reference as :attr:`TraineeEnvRunner.trainee`: what
the algorithm saves, restores and scores (efe_ray/rl/algorithm.py, efe_ray/rl/callbacks.py).

Its ``make_env`` replaces RLlib's, which registers and makes the env by name: it makes the same
vector env (one env, synchronous, infos as a list per env) but skips the
``on_environment_created`` callback, which nothing here uses. The trainee's state is not part
of RLlib's env-runner state (``get_state``/``set_state``): RLlib pickles that state into its
checkpoints, while the learner goes into our weights-only, hashed files that ``evaluate`` reads
(efe_ray/checkpoint.py, the README's Security section).
"""

from __future__ import annotations

import gymnasium as gym
from gymnasium.wrappers.vector import DictInfoToList
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from envs.arc_prompt_env import experiment_config
from envs.trainee import Trainee, build_trainee


class TraineeEnvRunner(SingleAgentEnvRunner):
    """Builds the trial's Trainee once and one ``config.env`` around it (see the module docstring)."""

    trainee: Trainee | None = None
    """The trainee of this runner's env (None before ``make_env``)."""

    def make_env(self) -> None:
        if self.config.num_envs_per_env_runner != 1:
            raise ValueError(f"TraineeEnvRunner makes one env around one learner, not "
                             f"num_envs_per_env_runner={self.config.num_envs_per_env_runner}")
        if self.env is not None:
            self.env.close()
        if self.trainee is None:
            self.trainee = build_trainee(experiment_config(self.config.env_config))
        env_cls, trainee = self.config.env, self.trainee
        self.env = DictInfoToList(gym.vector.SyncVectorEnv([lambda: env_cls(trainee=trainee)]))
        self.num_envs = self.env.num_envs
