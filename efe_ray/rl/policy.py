"""The trained prompt refiner outside RLlib's training loop: deterministic actions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from efe_ray import checkpoint as ckpt
from efe_ray.config import ExperimentConfig, from_dict
from efe_ray.data.task import Task
from efe_ray.learner import EFELearner
from efe_ray.refine import PromptRefiner
from envs.arc_prompt_env import control_vector, observation


@torch.no_grad()
def deterministic_action(module, obs: np.ndarray) -> np.ndarray:
    """The mean action of a PPO Gaussian policy for one observation, clipped to [-1, 1]."""
    device = next(module.parameters()).device
    batch = {Columns.OBS: torch.as_tensor(obs, dtype=torch.float32, device=device)[None]}
    out = module.forward_inference(batch)
    dist_cls = module.get_inference_action_dist_cls()
    dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic()
    return np.clip(dist.sample()[0].float().cpu().numpy(), -1.0, 1.0)


def module_path(checkpoint_dir: str | Path) -> Path:
    """Where an algorithm checkpoint keeps the policy's RLModule."""
    return (Path(checkpoint_dir) / COMPONENT_LEARNER_GROUP / COMPONENT_LEARNER / COMPONENT_RL_MODULE
            / DEFAULT_MODULE_ID)


def load_policy(checkpoint_dir: str | Path) -> Callable[[Task, EFELearner], np.ndarray] | None:
    """``(task, learner) -> (P,) prompt delta`` from a trial checkpoint, or None if it holds no policy.

    The observation is the one the env would give at the start of an episode on ``task``, with
    the control statistics the env had when the checkpoint was written; the action is the
    policy's mean, mapped to a delta by the same refiner the trial trained with.
    """
    from ray.rllib.core.rl_module.rl_module import RLModule

    path = module_path(checkpoint_dir)
    if not path.is_dir():
        return None
    meta = ckpt.read_meta(checkpoint_dir)
    cfg = from_dict(ExperimentConfig, meta["config"])
    stats = meta.get("env_stats", {})
    refiner = PromptRefiner(cfg.env.action_dim, cfg.prompt.prompt_dim, cfg.env.action_scale, cfg.learner.seed)
    module = RLModule.from_checkpoint(path)
    module.eval()

    def refine(task: Task, learner: EFELearner) -> np.ndarray:
        ctrl = control_vector(0.0, stats.get("running_loss", 0.0), stats.get("mask_ratio", 1.0),
                              stats.get("easy_share", cfg.learner.easy_share_later),  # older checkpoints: after epoch 1
                              learner.steps, stats.get("acc_after", 0.0))
        return refiner.delta(deterministic_action(module, observation(learner, task, ctrl)))

    return refine
