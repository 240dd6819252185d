"""EFEPPO: RLlib's PPO whose checkpoints also hold the env's learner, and whose results carry
the learner's metrics and held-out scores.

RLlib does not checkpoint env state. With ``num_env_runners=0`` the env (and its learner) lives in
this process, on the algorithm's local env runner; :meth:`save_checkpoint` gathers its state and
writes it beside RLlib's files (efe_ray/checkpoint.py), with the policy's weights in a
weights-only file that evaluation rebuilds the module from (efe_ray/rl/policy.py);
:meth:`load_checkpoint` pushes the learner state back.

Every iteration adds to the result dict (flat keys, TensorBoard tags):
``losses/*``, ``charts/*``, ``grads/*``, ``learner/*`` and, every ``rl.eval_every`` iterations
(and on the first), ``eval/cell_acc`` and ``eval/exact`` on held-out tasks, with the policy's
deterministic refinement. The last eval values are repeated in between so that Tune's scheduler
always sees its metric. ``node_id`` names the Ray node the trial ran on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import ray
from ray.rllib.algorithms.ppo import PPO
from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

from efe_ray import checkpoint as ckpt
from efe_ray.evaluation.predict import evaluate, predict
from efe_ray.rl.policy import deterministic_action, policy_state

RESULT_KEYS = {
    "efe_loss": "losses/efe",
    "risk": "losses/risk",
    "entropy": "losses/entropy",
    "forward_kl": "losses/forward_kl",
    "rl_term": "losses/rl_term",
    "loss": "losses/total",
    "mask_ratio": "charts/mask_ratio",
    "reward": "charts/reward",
    "acc_before": "charts/acc_before",
    "acc_after": "charts/acc_after",
    "qwen_fresh": "charts/qwen_fresh",
    "qwen_grad_norm": "grads/qwen",
    "agent_grad_norm": "grads/agent",
    "skipped_steps": "learner/skipped_steps",
    "steps": "learner/steps",
    "steps_this_iter": "learner/steps_this_iter",
    "curriculum_epoch": "charts/curriculum_epoch",
    "episodes": "learner/episodes",
}
"""Learner metric -> result key (= TensorBoard tag)."""


def local_env(algo: PPO):
    """The ArcPromptEnv instance on the algorithm's local env runner."""
    runner = algo.env_runner
    if runner is None or getattr(runner, "env", None) is None:
        raise RuntimeError("EFEPPO needs the env in the algorithm process: set num_env_runners=0")
    vec = runner.env.unwrapped
    return vec.envs[0].unwrapped


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
    """PPO prompt refiner + the env's learner state in checkpoints + learner metrics in results."""

    def setup(self, config):
        super().setup(config)
        self._last_eval: dict[str, float] = {}
        self._eval_images: dict[str, np.ndarray] = {}

    # -- results ------------------------------------------------------------------------------
    def policy_delta(self, env, task) -> np.ndarray:
        """The prompt delta the current policy chooses (deterministically) for ``task``."""
        module = self.get_module(DEFAULT_MODULE_ID)
        action = deterministic_action(module, env.observation_for(task))
        return env.refiner.delta(action)

    def evaluate_held_out(self) -> dict[str, float]:
        """Held-out cell accuracy and exact-grid rate, with the policy's refinement."""
        env = local_env(self)
        scores = evaluate(env.learner, env.eval_tasks, delta_fn=lambda t: self.policy_delta(env, t))
        return {"eval/score": scores["score"], "eval/cell_acc": scores["cell_acc"], "eval/exact": scores["exact"],
                "eval/outputs": scores["outputs"]}

    def step(self):
        result = super().step()
        env = local_env(self)
        for name, value in env.drain_metrics().items():
            if name in RESULT_KEYS:
                result[RESULT_KEYS[name]] = value
        every = env.cfg.rl.eval_every
        if not self._last_eval or (self.iteration + 1) % every == 0:
            self._last_eval = self.evaluate_held_out()
            result["images"] = self.grid_images(env)
        result.update(self._last_eval)
        result["learner_device"] = str(env.device)
        result["node_id"] = ray.get_runtime_context().get_node_id()
        return result

    def grid_images(self, env, count: int = 3) -> dict[str, np.ndarray]:
        """(H, W, 3) uint8 pictures: query | prediction | target, for the first held-out tasks."""
        from efe_ray.rl.images import task_picture

        out = {}
        for task in env.eval_tasks[:count]:
            pred = predict(env.learner, task, self.policy_delta(env, task))[0]
            out[f"eval/{task.task_id}"] = task_picture(task.test[0].input, pred, task.test[0].output)
        return out

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint_dir: str) -> None:
        super().save_checkpoint(checkpoint_dir)
        env = local_env(self)
        stats = dict(env.stats(), **{f"last_{k}": v for k, v in self._last_eval.items()})
        # The learner's module: the weights RLlib's own checkpoint holds (the env runner's copy is
        # synced from it after every update).
        weights = self.learner_group.get_weights([DEFAULT_MODULE_ID])[DEFAULT_MODULE_ID]
        policy = policy_state(self.get_module(DEFAULT_MODULE_ID), weights)
        state = {**env.learner.state_dict(), **env.sampler.state_dict()}  # the sampler's RNG travels too
        ckpt.save(checkpoint_dir, state, env.cfg, env.train_tasks, env_stats=stats, policy=policy)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        super().load_checkpoint(checkpoint_dir)
        env = local_env(self)
        state, meta = load_learner_or_previous(checkpoint_dir, env.device)
        stats = meta["env_stats"]
        env.restore(state, stats)
        self._last_eval = {k[len("last_"):]: v for k, v in stats.items() if k.startswith("last_")}


__all__ = ["EFEPPO", "RESULT_KEYS", "local_env", "COMPONENT_RL_MODULE"]
