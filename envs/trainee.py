"""What an ArcPromptEnv trains, built by a factory and handed to the env.

A :class:`Trainee` is the learner with everything around it that training and the RL layer need:
the experiment config, the :class:`~efe_ray.data.batching.TaskSampler` that draws tasks and
batches, the :class:`~efe_ray.refine.PromptRefiner` that maps actions to prompt deltas, the
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
from efe_ray.data.batching import TaskSampler
from efe_ray.data.sources import resolve_tasks
from efe_ray.data.task import Task
from efe_ray.device import resolve_device
from efe_ray.learner import EFELearner
from efe_ray.refine import PromptRefiner
from envs.observation import Controls, observation


@dataclass
class Trainee:
    """The learner, its sampler and refiner, the tasks and the control statistics of one trial."""

    cfg: ExperimentConfig
    """The experiment config everything was built from."""
    learner: EFELearner
    """Prompt encoder, agent, optimizer: what ``step(batch, delta)`` trains."""
    sampler: TaskSampler
    """Curriculum and the numpy RNG of training data: ``sample_task()``, ``batch(task)``."""
    refiner: PromptRefiner
    """Action -> prompt delta."""
    train_tasks: list[Task]
    """The tasks the learner trains on."""
    eval_tasks: list[Task]
    """Held-out tasks, scored during training."""
    controls: Controls = field(default_factory=Controls)
    """Running statistics of training, in the policy's observation."""

    def observation(self, task: Task, progress: float = 0.0) -> np.ndarray:
        """What the policy sees for ``task`` at ``progress`` (0..1) of an episode."""
        ctrl = self.controls.vector(progress, self.sampler.curriculum.easy_share, self.learner.steps)
        return observation(self.learner, task, ctrl)

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
                   sampler=TaskSampler(train, cfg.learner, cfg.agent.canvas),
                   refiner=PromptRefiner(cfg.env.action_dim, cfg.prompt.prompt_dim, cfg.env.action_scale,
                                         cfg.learner.seed),
                   train_tasks=train, eval_tasks=held)
