"""What an ArcPromptEnv trains, built by a factory and handed to the env.

A :class:`Trainee` is the learner with everything around it that training and the RL layer need:
the experiment config, the :class:`~efe_ray.data.device_sampler.DeviceSampler` that draws tasks
and builds their views on the learner's device, the :class:`~efe_ray.refine.PromptRefiner` that maps actions to prompt deltas, the
training and held-out tasks, and the :class:`~envs.observation.Controls` the policy observes.

:func:`build_trainee` is the factory: it reads the tasks, picks the device ("auto": a GPU only
where Ray assigned this process one), fixes torch's thread count to ``tune.cpus_per_trial`` (a
result must not depend on the machine's core count) and builds the learner and sampler from
``learner.seed``. The env gets a trainee handed in (envs/arc_prompt_env.py); whoever built it
(the RL layer's env runner, a test) keeps a reference to save, restore and evaluate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from efe_ray.config import ExperimentConfig
from efe_ray.data.device_sampler import DeviceSampler
from efe_ray.data.sources import resolve_tasks
from efe_ray.data.task import Task
from efe_ray.device import resolve_device
from efe_ray.learner import METRICS, EFELearner
from efe_ray.observe import canonical_features, observed_prompt
from efe_ray.refine import PromptRefiner
from envs.observation import Controls, assemble


@dataclass
class Trainee:
    """The learner, its sampler and refiner, the tasks and the control statistics of one trial."""

    cfg: ExperimentConfig
    """The experiment config everything was built from."""
    learner: EFELearner
    """Prompt encoder, agent, optimizer: what ``step(batch, delta)`` trains."""
    sampler: DeviceSampler
    """Curriculum, rehearsal and the views drawn on the learner's device: ``sample_task()``, ``batch(task)``."""
    refiner: PromptRefiner
    """Action -> prompt delta."""
    train_tasks: list[Task]
    """The tasks the learner trains on."""
    eval_tasks: list[Task]
    """Held-out tasks, scored during training."""
    controls: Controls = field(default_factory=Controls)
    """Running statistics of training, in the policy's observation."""
    features: dict[str, np.ndarray] = field(default_factory=dict)
    """Task id -> (15,) features of its canonical view, computed once."""

    def task_features(self, task: Task) -> np.ndarray:
        """(15,) features of ``task``'s canonical view (cached)."""
        if task.task_id not in self.features:
            self.features[task.task_id] = canonical_features(task)
        return self.features[task.task_id]

    def observation(self, task: Task, progress: float = 0.0, prompt: np.ndarray | None = None) -> np.ndarray:
        """What the policy sees for ``task`` at ``progress`` (0..1) of an episode; ``prompt``: the
        task's prompt if already read (else it is computed and read)."""
        feats = self.task_features(task)
        if prompt is None:
            prompt = observed_prompt(self.learner, task, feats).cpu().numpy()
        ctrl = self.controls.vector(progress, self.sampler.curriculum.easy_share, self.learner.steps)
        return assemble(prompt, ctrl, feats)

    def act(self, task: Task, delta: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        """``env.learner_steps_per_action`` learner steps on ``task`` with prompt refinement
        ``delta``, queued without waiting, then ONE read of the device: their metrics (each the mean
        over those steps: the action's reward is its mean reward; ``skipped`` the share of them
        skipped) with ``qwen_fresh`` and ``skipped_steps``, and the task's prompt after them."""
        learner, k = self.learner, self.cfg.env.learner_steps_per_action
        values, fresh = [], 0
        for _ in range(k):
            values.append(learner.train_step(self.sampler.batch(task), delta))  # (len(METRICS),) each
            fresh += learner.last_fresh
        prompt = observed_prompt(learner, task, self.task_features(task))  # (P,)
        read = torch.cat([torch.stack(values).mean(0), learner.skipped_counter.reshape(1).float(), prompt])
        host = read.cpu().numpy()  # the one device-to-host read of the action
        metrics = dict(zip(METRICS, host[: len(METRICS)].tolist()))
        metrics.update(qwen_fresh=fresh / k, skipped_steps=float(host[len(METRICS)]))
        return metrics, host[len(METRICS) + 1:]

    def state_dict(self) -> dict:
        """The learner's and the sampler's state (tensors and plain values: weights-only loadable)."""
        return {**self.learner.state_dict(), **self.sampler.state_dict()}

    def stats(self) -> dict[str, float]:
        """The control statistics as plain floats (checkpoint metadata)."""
        return self.controls.stats(self.sampler.curriculum.easy_share)

    def load_state_dict(self, state: dict, stats: dict[str, float]) -> None:
        """Restore :meth:`state_dict` and :meth:`stats`; the current config's learning rates win (PBT)."""
        self.learner.load_state_dict(state, keep_lrs=True)
        self.sampler.load_state_dict(state)
        self.controls = Controls.from_stats(stats)


def ray_gpu_ids() -> list | None:
    """The GPU ids Ray assigned this process, or None where Ray is not running."""
    import ray

    return list(ray.get_gpu_ids()) if ray.is_initialized() else None


def build_trainee(cfg: ExperimentConfig) -> Trainee:
    """The default factory: tasks, device, learner, sampler and refiner of ``cfg`` (see the module docstring)."""
    torch.set_num_threads(cfg.tune.cpus_per_trial)
    train, held = resolve_tasks(cfg.data, cfg.agent.canvas)
    device = resolve_device(cfg.env.device, ray_gpu_ids(), field="env.device")
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner, device, task_ids=tuple(t.task_id for t in train))
    return Trainee(cfg=cfg, learner=learner,
                   sampler=DeviceSampler(train, cfg.learner, cfg.agent.canvas, device),
                   refiner=PromptRefiner(cfg.env.action_dim, cfg.prompt.prompt_dim, cfg.env.action_scale,
                                         cfg.learner.seed),
                   train_tasks=train, eval_tasks=held)
