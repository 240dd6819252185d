"""The RLlib configuration of a trial: PPO on the new API stack, env in the algorithm process.

Everything that touches RLlib's configuration API is here (Ray is pinned to 2.60.0):

- the env: ``env_cls`` (ArcPromptEnv; tests pass a subclass), made by
  :class:`~efe_ray.rl.env_runner.TraineeEnvRunner` around the trial's learner, in the algorithm
  process (``num_env_runners=0``), which holds the trial's CPU and GPU share;
- the callbacks that put the learner's metrics and the held-out scores into each iteration's
  result (efe_ray/rl/callbacks.py);
- the seed: ``learner.seed`` (in a search, ``tune.seed``) seeds RLlib too, i.e. Python's, numpy's
  and torch's global RNGs as the env runner and PPO's learner are built (policy initialisation,
  exploration, minibatch shuffles). The env's seeded first reset does not restart its learner
  (envs/arc_prompt_env.py), so a trial restored from a checkpoint keeps the restored one.
"""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

from efe_ray.config import ExperimentConfig, to_dict
from efe_ray.rl.callbacks import TrialMetrics
from efe_ray.rl.env_runner import TraineeEnvRunner
from envs.arc_prompt_env import ArcPromptEnv


def ppo_config(cfg: ExperimentConfig, env_cls: type[ArcPromptEnv] | None = None) -> PPOConfig:
    """The PPOConfig for one trial of ``cfg`` (before Tune's search space is applied)."""
    rl, tune = cfg.rl, cfg.tune
    return (
        PPOConfig()
        .environment(env_cls or ArcPromptEnv, env_config={"experiment": to_dict(cfg)})
        .framework("torch")
        # Episodes are short and steps expensive: one env, in the algorithm process.
        .env_runners(env_runner_cls=TraineeEnvRunner, num_env_runners=0, num_envs_per_env_runner=1,
                     rollout_fragment_length="auto")
        .learners(num_learners=0, num_gpus_per_learner=tune.gpus_per_trial)
        .resources(num_cpus_for_main_process=tune.cpus_per_trial)
        .training(
            lr=rl.lr,
            gamma=rl.gamma,
            train_batch_size_per_learner=rl.train_batch_size,
            minibatch_size=rl.minibatch_size,
            num_epochs=rl.num_epochs,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[rl.hidden, rl.hidden], vf_share_layers=False))
        .callbacks(TrialMetrics)
        .debugging(seed=cfg.learner.seed)
    )
