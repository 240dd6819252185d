"""The trained prompt refiner outside RLlib's training loop: saved as weights, rebuilt, deterministic actions.

RLlib's own checkpoint files are pickles (``class_and_ctor_args.pkl``, ``module_state.pkl``):
loading them runs whatever code they name. So a trial also writes the policy into our
``efe_policy.pt`` (efe_ray/checkpoint.py) as plain values and tensors:

- ``module``: the RLlib module class the weights belong to (only PPO's default torch module is
  rebuilt);
- ``observation_space`` / ``action_space``: ``{"low": (D,) tensor, "high": (D,) tensor}`` of the
  float32 Boxes;
- ``model_config``: RLlib's model config as plain values (layer sizes, activations, ...);
- ``weights``: the learner's module ``state_dict`` (policy and value networks).

:func:`build_module` constructs that module from these and loads the weights strictly; nothing
is unpickled beyond what ``torch.load(weights_only=True)`` allows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns

from efe_ray import checkpoint as ckpt
from efe_ray.config import ExperimentConfig, from_dict
from efe_ray.data.task import Task
from efe_ray.evaluation.predict import DeltaFn
from efe_ray.learner import EFELearner
from efe_ray.refine import PromptRefiner
from envs.observation import Controls, observation
from envs.trainee import Trainee

MODULE_CLASS = DefaultPPOTorchRLModule
"""The only RLlib module class :func:`build_module` rebuilds (what ``ppo_config`` trains)."""


@torch.no_grad()
def deterministic_action(module, obs: np.ndarray) -> np.ndarray:
    """The mean action of a PPO Gaussian policy for one observation, clipped to [-1, 1]."""
    return _action(module, obs, None)


@torch.no_grad()
def sampled_action(module, obs: np.ndarray, seed: int) -> np.ndarray:
    """An action drawn from the PPO policy's Gaussian for one observation (torch's RNG seeded with
    ``seed`` in a fork, the caller's left as it was), clipped to [-1, 1]."""
    return _action(module, obs, seed)


def _action(module, obs: np.ndarray, seed: int | None) -> np.ndarray:
    device = next(module.parameters()).device
    batch = {Columns.OBS: torch.as_tensor(obs, dtype=torch.float32, device=device)[None]}
    out = module.forward_inference(batch)
    dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    if seed is None:
        action = dist.to_deterministic().sample()
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            action = dist.sample()
    return np.clip(action[0].float().cpu().numpy(), -1.0, 1.0)


def refinement(module, trainee: Trainee) -> DeltaFn:
    """``task -> (P,) prompt delta``: the policy's deterministic action on the observation the env
    gives at the start of an episode on ``task``, mapped by the trainee's refiner."""
    return lambda task: trainee.refiner.delta(deterministic_action(module, trainee.observation(task)))


def _box(space: gym.spaces.Box) -> dict[str, torch.Tensor]:
    return {"low": torch.as_tensor(space.low, dtype=torch.float32), "high": torch.as_tensor(space.high, dtype=torch.float32)}


def policy_state(module, weights: dict) -> dict:
    """What :func:`build_module` needs: ``module``'s class, spaces and model config, and ``weights``
    (a ``state_dict`` of numpy arrays or tensors, e.g. from ``learner_group.get_weights``)."""
    if type(module) is not MODULE_CLASS:
        raise TypeError(f"only {MODULE_CLASS.__name__} policies can be saved, got {type(module).__name__}")
    model_config = module.model_config
    if dataclasses.is_dataclass(model_config):
        model_config = dataclasses.asdict(model_config)
    return {
        "module": MODULE_CLASS.__name__,
        "observation_space": _box(module.observation_space),
        "action_space": _box(module.action_space),
        "model_config": dict(model_config),
        "weights": {k: torch.as_tensor(np.asarray(v)).clone() for k, v in weights.items()},
    }


def build_module(state: dict, source: str = "policy state") -> DefaultPPOTorchRLModule:
    """The PPO module described by ``state`` (see the module docstring), weights loaded, in eval mode."""
    if state.get("module") != MODULE_CLASS.__name__:
        raise ckpt.CheckpointError(f"{source}: policy module {state.get('module')!r} is not {MODULE_CLASS.__name__}")
    spaces = {}
    for name in ("observation_space", "action_space"):
        box = state[name]
        spaces[name] = gym.spaces.Box(box["low"].numpy(), box["high"].numpy(), dtype=np.float32)
    module = MODULE_CLASS(**spaces, inference_only=False, model_config=dict(state["model_config"]),
                          catalog_class=PPOCatalog)
    try:
        module.load_state_dict(state["weights"], strict=True)
    except RuntimeError as err:  # names and shapes that do not fit the rebuilt module
        raise ckpt.CheckpointError(f"{source}: weights do not fit the policy module ({err})") from err
    module.eval()
    return module


def load_policy(checkpoint_dir: str | Path) -> Callable[[Task, EFELearner], np.ndarray] | None:
    """``(task, learner) -> (P,) prompt delta`` from a trial checkpoint, or None if it holds no policy.

    Reads only ``efe_meta.json`` and ``efe_policy.pt`` (hash-checked, weights-only). The
    observation is the one the env would give at the start of an episode on ``task``, with the
    control statistics the env had when the checkpoint was written; the action is the policy's
    mean, mapped to a delta by the same refiner the trial trained with.
    """
    state = ckpt.load_policy(checkpoint_dir)
    if state is None:
        return None
    module = build_module(state, f"{checkpoint_dir}/{ckpt.POLICY_FILE}")
    meta = ckpt.read_meta(checkpoint_dir)
    cfg = from_dict(ExperimentConfig, meta["config"])
    stats = meta.get("env_stats", {})
    controls = Controls.from_stats(stats)
    easy_share = stats.get("easy_share", cfg.learner.easy_share_later)  # older checkpoints: after epoch 1
    refiner = PromptRefiner(cfg.env.action_dim, cfg.prompt.prompt_dim, cfg.env.action_scale, cfg.learner.seed)

    def refine(task: Task, learner: EFELearner, *, feedback: tuple[float, float, float] | None = None,
               seed: int | None = None) -> np.ndarray:
        """The policy's delta for ``task``. ``feedback``: ``(progress, loss, accuracy)`` of a
        search in progress, in place of the training run's statistics in the control vector
        (efe_ray/evaluation/search.py proposes deltas in closed loop this way); ``seed``: draw the
        action from the policy's Gaussian instead of taking its mean."""
        now, progress = controls, 0.0
        if feedback is not None:
            progress, loss, acc = feedback
            now = dataclasses.replace(controls, running_loss=loss, acc_after=acc)
        obs = observation(learner, task, now.vector(progress, easy_share, learner.steps))
        action = deterministic_action(module, obs) if seed is None else sampled_action(module, obs, seed)
        return refiner.delta(action)

    return refine
