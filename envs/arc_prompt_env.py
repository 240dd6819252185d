"""ArcPromptEnv: a gymnasium environment whose "dynamics" are an EFE learner training on ARC tasks.

Registered as ``efe_ray/ArcPrompt-v0``. One episode = ``env.steps_per_episode`` learner steps on
one task, drawn by the sampler's curriculum (efe_ray/data/batching.py).

- Observation (float32, ``prompt_dim + 6 + 15``): the task's prompt embedding (detached), a
  control vector (episode progress, running EFE loss, last mask ratio, curriculum easy share,
  log learner steps, last accuracy) and the 15 numeric task features.
- Action: ``Box(-1, 1, (action_dim,))``, mapped to a low-rank prompt delta (efe_ray/refine.py).
- Reward: the learner's ``reward_scale * (accuracy with refined prompt - without)``.
- ``info``: the learner's metrics for the step.

A step the learner skips (non-finite loss or gradients) is followed by a check of the learner's
weights: if one of them is already NaN or infinite, every later step would be skipped too, so the
step raises :class:`NonFiniteWeightsError` (naming the parameter) instead of training on nothing.

The env owns the learner (the RL side only ever sees numpy arrays). Its device is "auto" by
default (efe_ray/device.py): under Ray a GPU only where Ray assigned this process one
(``ray.get_gpu_ids()``), else the CPU.

Try it without Ray::

    import gymnasium as gym, envs
    env = gym.make("efe_ray/ArcPrompt-v0")
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
"""

from __future__ import annotations

import dataclasses
import math
import os

import gymnasium as gym
import numpy as np
import torch

from efe_ray.config import ExperimentConfig, from_dict, to_dict
from efe_ray.data.batching import TaskSampler
from efe_ray.data.features import NUM_FEATURES
from efe_ray.data.sources import resolve_tasks
from efe_ray.data.task import Task
from efe_ray.device import resolve_device
from efe_ray.evaluation.predict import observe
from efe_ray.learner import EFELearner
from efe_ray.refine import PromptRefiner

CTRL_DIM = 6
"""Length of the control vector."""


class InjectedFault(RuntimeError):
    """The failure ``env.fail_at_step`` asks for."""


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


def control_vector(progress: float, running_loss: float, mask_ratio: float, easy_share: float,
                   learner_steps: int, accuracy: float) -> np.ndarray:
    """(6,) float32 control vector, each entry roughly in [0, 1]."""
    return np.array([
        progress,
        running_loss / (1.0 + running_loss),
        mask_ratio,
        easy_share,
        math.log10(1 + learner_steps) / 6.0,
        accuracy,
    ], dtype=np.float32)


def observation(learner: EFELearner, task: Task, ctrl: np.ndarray) -> np.ndarray:
    """[prompt (P,), ctrl (6,), features (15,)] for ``task``: what the refiner policy sees."""
    prompt, feats = observe(learner, task)
    return np.concatenate([prompt, ctrl, feats]).astype(np.float32)


def ray_gpu_ids() -> list | None:
    """The GPU ids Ray assigned this process, or None where Ray is not running."""
    import ray

    return list(ray.get_gpu_ids()) if ray.is_initialized() else None


class ArcPromptEnv(gym.Env):
    """See the module docstring. ``config``: ``{"experiment": <ExperimentConfig as a dict>}``."""

    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        unknown = set(config) - {"experiment"}
        if unknown:
            raise ValueError(f"ArcPromptEnv: unknown env_config key(s) {sorted(unknown)}; expected 'experiment'")
        exp = config.get("experiment", {})
        self.cfg: ExperimentConfig = exp if isinstance(exp, ExperimentConfig) else from_dict(ExperimentConfig, exp)
        threads = int(os.environ.get("EFE_TORCH_THREADS", "0")) or self.cfg.tune.cpus_per_trial
        torch.set_num_threads(max(1, threads))
        self.train_tasks, self.eval_tasks = resolve_tasks(self.cfg.data, self.cfg.agent.canvas)
        self.device = resolve_device(self.cfg.env.device, ray_gpu_ids(), field="env.device")
        self.learner, self.sampler = self._build_learner(self.cfg.learner.seed)
        p = self.cfg.prompt.prompt_dim
        self.refiner = PromptRefiner(self.cfg.env.action_dim, p, self.cfg.env.action_scale, self.cfg.learner.seed)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (p + CTRL_DIM + NUM_FEATURES,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.cfg.env.action_dim,), np.float32)
        self.task: Task | None = None
        self.restored = False
        self.t = 0
        self.episodes = 0
        self.running_loss = 0.0
        self.last: dict[str, float] = {"mask_ratio": 1.0, "acc_after": 0.0}
        self._metric_sums: dict[str, float] = {}
        self._metric_count = 0

    def _build_learner(self, seed: int) -> tuple[EFELearner, TaskSampler]:
        lcfg = dataclasses.replace(self.cfg.learner, seed=seed)
        learner = EFELearner(self.cfg.prompt, self.cfg.agent, lcfg, self.device,
                             task_ids=tuple(t.task_id for t in self.train_tasks))
        return learner, TaskSampler(self.train_tasks, lcfg, self.cfg.agent.canvas)

    # -- observation --------------------------------------------------------------------------
    def control_vector(self, progress: float) -> np.ndarray:
        """(6,) float32: progress, running loss, mask ratio, easy share, log steps, accuracy."""
        return control_vector(progress, self.running_loss, self.last["mask_ratio"],
                              self.sampler.curriculum.easy_share, self.learner.steps, self.last["acc_after"])

    def observation_for(self, task: Task, progress: float = 0.0) -> np.ndarray:
        """The observation the policy sees for ``task`` (also used to refine held-out tasks)."""
        return observation(self.learner, task, self.control_vector(progress))

    def stats(self) -> dict[str, float]:
        """The env's running statistics that enter the control vector (kept in checkpoint metadata)."""
        return {"running_loss": float(self.running_loss), "mask_ratio": float(self.last["mask_ratio"]),
                "acc_after": float(self.last["acc_after"]), "episodes": float(self.episodes),
                "easy_share": float(self.sampler.curriculum.easy_share)}

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # A seeded reset starts training afresh from that seed (new weights, new sampling), so
            # that the same seed and actions give the same observations. RLlib seeds only the first
            # reset; checkpoints are restored after it.
            self.learner, self.sampler = self._build_learner(seed)
            self.running_loss, self.last = 0.0, {"mask_ratio": 1.0, "acc_after": 0.0}
        self.task = self.sampler.sample_task()
        self.t = 0
        self.episodes += 1
        return self.observation_for(self.task), {"task_id": self.task.task_id}

    def step(self, action):
        if self.task is None:
            raise RuntimeError("ArcPromptEnv.step called before reset")
        if self.cfg.env.fail_at_step and self.learner.steps == self.cfg.env.fail_at_step and not self.restored:
            raise InjectedFault(f"injected failure at learner step {self.learner.steps} (env.fail_at_step)")
        delta = self.refiner.delta(np.asarray(action, dtype=np.float32))  # (P,) numpy: no graph
        skipped_before = self.learner.skipped_steps
        metrics = self.learner.step(self.sampler.batch(self.task), delta)
        if self.learner.skipped_steps > skipped_before:
            self._check_weights()
        self.t += 1
        self.running_loss = 0.9 * self.running_loss + 0.1 * metrics["efe_loss"] if self.learner.steps > 1 else metrics["efe_loss"]
        self.last = metrics
        for k, v in metrics.items():
            self._metric_sums[k] = self._metric_sums.get(k, 0.0) + v
        self._metric_count += 1
        terminated = self.t >= self.cfg.env.steps_per_episode
        obs = self.observation_for(self.task, self.t / self.cfg.env.steps_per_episode)
        reward = float(metrics["reward"]) if math.isfinite(metrics["reward"]) else 0.0
        return obs, reward, terminated, False, dict(metrics, task_id=self.task.task_id)

    def _check_weights(self) -> None:
        """Raise NonFiniteWeightsError if a learner weight is NaN or infinite (after a skipped step)."""
        bad = first_non_finite({"prompt": self.learner.prompt, "agent": self.learner.agent})
        if bad is not None:
            raise NonFiniteWeightsError(
                f"learner weight {bad} is not finite at learner step {self.learner.steps}: every step from "
                "here on would be skipped, so the trial stops (restart from an earlier checkpoint, e.g. with a "
                "lower learning rate)")

    # -- what the algorithm reads -------------------------------------------------------------
    def drain_metrics(self) -> dict[str, float]:
        """Means of the learner metrics since the last call (and a few counters)."""
        n = max(self._metric_count, 1)
        out = {k: v / n for k, v in self._metric_sums.items()}
        out.update(steps=float(self.learner.steps), skipped_steps=float(self.learner.skipped_steps),
                   curriculum_epoch=float(self.sampler.curriculum.epoch), episodes=float(self.episodes),
                   steps_this_iter=float(self._metric_count))
        self._metric_sums, self._metric_count = {}, 0
        return out

    def restore(self, learner_state: dict, stats: dict[str, float]) -> None:
        """Restore the learner, its sampler and :meth:`stats`; the current config's learning rates win (PBT)."""
        self.learner.load_state_dict(learner_state, keep_lrs=True)
        self.sampler.load_state_dict(learner_state)
        self.restored = True
        env = stats
        self.episodes = int(env["episodes"])
        self.running_loss = float(env["running_loss"])
        self.last = {"mask_ratio": float(env["mask_ratio"]), "acc_after": float(env["acc_after"])}
        self.task = None

    def experiment_dict(self) -> dict:
        """The experiment config as a plain dict."""
        return to_dict(self.cfg)
