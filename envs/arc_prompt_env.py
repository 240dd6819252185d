"""ArcPromptEnv: a gymnasium environment whose "dynamics" are an EFE learner training on ARC tasks.

Registered as ``efe_ray/ArcPrompt-v0``. One episode = ``env.steps_per_episode`` refiner actions
on one task, each governing ``env.learner_steps_per_action`` (K) learner steps. The env trains a
:class:`~envs.trainee.Trainee` (learner, sampler, refiner) that is handed in, or built by
:func:`~envs.trainee.build_trainee` from ``config["experiment"]``:

- ``reset``: ``task = sampler.sample_task()`` (the curriculum); observation of that task;
- ``step(action)``: ``delta = refiner.delta(action)``; ``trainee.act(task, delta)`` runs K learner
  steps with that delta and reads the device once; reward = the mean over the K steps of the
  learner's ``reward_scale * (accuracy with the refined prompt - without)``; ``info`` = the steps'
  mean metrics and counters (the RL layer logs them).

- Observation (float32, ``prompt_dim + 6 + 15``): envs/observation.py.
- Action: ``Box(-1, 1, (action_dim,))``, mapped to a low-rank prompt delta (efe_ray/refine.py).

Everything random about training (tasks, views, augmentations) comes from the trainee's sampler,
seeded by ``learner.seed`` and restored with a checkpoint. A seeded ``reset`` seeds only
gymnasium's ``np_random``, which the env does not use: it never restarts training (RLlib seeds
the first reset of every env, also of one whose trainee was just restored from a checkpoint).
The env is registered as nondeterministic: each step trains the learner, so the same seed and
action do not give the same observation twice.

A step the learner skips (non-finite loss or gradients) is followed by a check of the learner's
weights: if one of them is already NaN or infinite, every later step would be skipped too, so the
step raises :class:`NonFiniteWeightsError` (naming the parameter) instead of training on nothing.

Try it without Ray::

    import gymnasium as gym, envs
    env = gym.make("efe_ray/ArcPrompt-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from efe_ray.config import ExperimentConfig, from_dict
from efe_ray.data.features import NUM_FEATURES
from efe_ray.data.task import Task
from envs.observation import CTRL_DIM
from envs.trainee import Trainee, build_trainee


class NonFiniteWeightsError(RuntimeError):
    """A learner weight is NaN or infinite: no later step can change that (all would be skipped)."""


def first_non_finite(modules: dict[str, torch.nn.Module]) -> str | None:
    """``"name.param (k of n values)"`` of the first parameter holding a NaN or inf, else None."""
    for prefix, module in modules.items():
        for name, param in module.named_parameters():
            bad = int((~torch.isfinite(param.detach())).sum())
            if bad:
                return f"{prefix}.{name} ({bad} of {param.numel()} values)"
    return None


def experiment_config(config: dict | None) -> ExperimentConfig:
    """The ExperimentConfig of an env config ``{"experiment": <ExperimentConfig or its dict>}``."""
    config = dict(config or {})
    unknown = set(config) - {"experiment"}
    if unknown:
        raise ValueError(f"ArcPromptEnv: unknown env_config key(s) {sorted(unknown)}; expected 'experiment'")
    exp = config.get("experiment", {})
    return exp if isinstance(exp, ExperimentConfig) else from_dict(ExperimentConfig, exp)


class ArcPromptEnv(gym.Env):
    """See the module docstring. ``config``: ``{"experiment": <ExperimentConfig as a dict>}``, used
    when no ``trainee`` is handed in."""

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None, *, trainee: Trainee | None = None):
        self.trainee = trainee if trainee is not None else build_trainee(experiment_config(config))
        cfg = self.trainee.cfg
        self.steps_per_episode = cfg.env.steps_per_episode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (cfg.prompt.prompt_dim + CTRL_DIM + NUM_FEATURES,),
                                                np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (cfg.env.action_dim,), np.float32)
        self.task: Task | None = None
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.task = self.trainee.sampler.sample_task()
        self.t = 0
        self.trainee.controls.episodes += 1
        return self.trainee.observation(self.task), {"task_id": self.task.task_id}

    def step(self, action):
        if self.task is None:
            raise RuntimeError("ArcPromptEnv.step called before reset")
        trainee, learner = self.trainee, self.trainee.learner
        delta = trainee.refiner.delta(np.asarray(action, dtype=np.float32))  # (P,) numpy: no graph
        first = learner.steps == 0
        metrics, prompt = trainee.act(self.task, delta)
        if metrics["skipped"]:
            self.check_weights()
        trainee.controls.update(metrics, first_step=first)
        self.t += 1
        terminated = self.t >= self.steps_per_episode
        obs = trainee.observation(self.task, self.t / self.steps_per_episode, prompt)
        reward = float(metrics["reward"]) if math.isfinite(metrics["reward"]) else 0.0
        counters = {"steps": float(learner.steps), "learner_steps": float(trainee.cfg.env.learner_steps_per_action),
                    "episodes": float(trainee.controls.episodes),
                    "curriculum_epoch": float(trainee.sampler.curriculum.epoch)}
        return obs, reward, terminated, False, {**metrics, **counters, "task_id": self.task.task_id}

    def check_weights(self) -> None:
        """Raise NonFiniteWeightsError if a learner weight is NaN or infinite."""
        learner = self.trainee.learner
        bad = first_non_finite({"prompt": learner.prompt, "agent": learner.agent})
        if bad is not None:
            raise NonFiniteWeightsError(
                f"learner weight {bad} is not finite at learner step {learner.steps}: every step from "
                "here on would be skipped, so the trial stops (restart from an earlier checkpoint, e.g. with a "
                "lower learning rate)")
