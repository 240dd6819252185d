"""The environment and the RLlib layer: env checker, the trainee handed in, per-step metrics,
checkpoints that carry the learner, pre-flight."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from efe_ray.config import ConfigError, to_dict
from envs.arc_prompt_env import ArcPromptEnv
from envs.observation import CTRL_DIM
from envs.trainee import build_trainee
from tuning.presets import build_config

SMOKE = build_config("smoke")


def make_env():
    return gym.make(envs.ENV_ID, config={"experiment": to_dict(SMOKE)})


def test_env_passes_gymnasium_checker():
    env = make_env()
    check_env(env.unwrapped)


def test_a_seeded_reset_does_not_restart_the_learner_it_was_handed():
    trainee = build_trainee(SMOKE)
    env = ArcPromptEnv(trainee=trainee)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    weights = {k: v.clone() for k, v in trainee.learner.agent.state_dict().items()}
    rng = trainee.sampler.rng.bit_generator.state
    env.reset(seed=0)  # as RLlib's first reset after a checkpoint was restored
    assert env.trainee is trainee and trainee.learner.steps == SMOKE.env.learner_steps_per_action
    assert all(torch.equal(weights[k], v) for k, v in trainee.learner.agent.state_dict().items())
    assert trainee.sampler.rng.bit_generator.state != rng  # it drew the next task, from where it was
    assert trainee.controls.episodes == 2


def test_env_spaces_observation_and_info():
    env = make_env()
    p = SMOKE.prompt.prompt_dim
    assert env.observation_space.shape == (p + CTRL_DIM + 15,)
    assert env.action_space.shape == (SMOKE.env.action_dim,)
    obs, info = env.reset(seed=1)
    assert obs.dtype == np.float32 and np.isfinite(obs).all()
    assert info["task_id"].startswith("syn-")
    steps = 0
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not truncated
        assert {"efe_loss", "risk", "entropy", "mask_ratio", "acc_before", "acc_after", "reward",
                "qwen_grad_norm", "agent_grad_norm"} <= set(info)
        assert reward == pytest.approx(info["reward"])
        assert obs[p] == pytest.approx(steps / SMOKE.env.steps_per_episode)  # progress in the control vector
        k = SMOKE.env.learner_steps_per_action  # learner steps per action
        assert info["steps"] == steps * k and info["learner_steps"] == k
        assert info["episodes"] == 1 and info["curriculum_epoch"] == 0
    assert steps == SMOKE.env.steps_per_episode


def test_per_step_metrics_reach_the_metrics_logger_as_iteration_means_and_counters():
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    from efe_ray.rl.callbacks import STEPS_THIS_ITER, TrialMetrics

    class Episode:  # what the callback reads of RLlib's episode
        def __init__(self, info):
            self.info = info

        def get_infos(self, index):
            assert index == -1
            return self.info

    env = ArcPromptEnv(trainee=build_trainee(SMOKE))
    env.reset(seed=0)
    infos = [env.step(env.action_space.sample())[-1] for _ in range(3)]
    logger, callback = MetricsLogger(root=True), TrialMetrics()
    for info in infos:
        callback.on_episode_step(episode=Episode(info), metrics_logger=logger)
    reduced = {k: float(v) for k, v in logger.reduce().items()}  # what RLlib reports for the iteration
    assert reduced["losses/efe"] == pytest.approx(np.mean([i["efe_loss"] for i in infos]))
    assert reduced["charts/reward"] == pytest.approx(np.mean([i["reward"] for i in infos]))
    k = SMOKE.env.learner_steps_per_action  # learner steps per action
    assert reduced["learner/steps"] == 3 * k and reduced[STEPS_THIS_ITER] == 3 * k
    callback.on_episode_step(episode=Episode(infos[-1]), metrics_logger=logger)
    again = {k: float(v) for k, v in logger.reduce().items()}
    assert again[STEPS_THIS_ITER] == SMOKE.env.learner_steps_per_action  # per iteration: afresh after each reduce
    assert again["losses/efe"] == pytest.approx(infos[-1]["efe_loss"])


def test_env_rejects_unknown_config_keys():
    with pytest.raises(ValueError, match="unknown env_config key"):
        ArcPromptEnv({"experiment": to_dict(SMOKE), "expriment": {}})


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_checkpoint_round_trip_restores_learner_bit_for_bit(ray_local, tmp_path):
    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config

    algo = EFEPPO(config=ppo_config(SMOKE))
    algo.train()
    saved = algo.trainee.learner
    algo.save_checkpoint(str(tmp_path))  # RLlib's files + ours
    want = {k: v.clone() for k, v in saved.agent.state_dict().items()}
    want.update({f"p.{k}": v.clone() for k, v in saved.prompt.state_dict().items()})
    steps, cache = saved.steps, {k: v.clone() for k, v in saved.text_cache.items()}
    algo.train()  # moves on: the restore must bring back the saved state, not this one
    algo.stop()

    fresh = EFEPPO(config=ppo_config(SMOKE))
    fresh.load_checkpoint(str(tmp_path))
    got = fresh.trainee.learner
    have = dict(got.agent.state_dict())
    have.update({f"p.{k}": v for k, v in got.prompt.state_dict().items()})
    assert want.keys() == have.keys()
    assert all(torch.equal(want[k], have[k]) for k in want)
    assert got.steps == steps and got.steps > 0
    assert got.text_cache.keys() == cache.keys()
    assert all(torch.equal(cache[k], got.text_cache[k]) for k in cache)
    assert got.optimizer.state_dict()["state"], "optimizer moments restored"
    result = fresh.train()  # and it continues
    assert result["learner/steps"] == steps + SMOKE.rl.train_batch_size * SMOKE.env.learner_steps_per_action
    fresh.stop()


@pytest.mark.slow
def test_policy_rebuilt_from_weights_acts_exactly_like_rllibs_own_checkpoint(ray_local, tmp_path):
    from ray.rllib.core.rl_module.rl_module import RLModule

    from efe_ray import checkpoint as ckpt
    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config
    from efe_ray.rl.policy import build_module, deterministic_action

    algo = EFEPPO(config=ppo_config(SMOKE))
    algo.train()
    algo.train()
    algo.save_checkpoint(str(tmp_path))
    trainee = algo.trainee
    tasks = trainee.train_tasks + trainee.eval_tasks
    observations = [trainee.observation(t, progress) for t in tasks for progress in (0.0, 0.5)]
    algo.stop()

    state = ckpt.load_policy(tmp_path)  # hash-checked, torch.load(weights_only=True)
    ours = build_module(state)
    # RLlib's loader unpickles the module's class and constructor arguments (trusted here: we just wrote them).
    theirs = RLModule.from_checkpoint(tmp_path / "learner_group" / "learner" / "rl_module" / "default_policy")
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert all(torch.equal(ours.state_dict()[k], theirs.state_dict()[k]) for k in ours.state_dict())
    actions = [deterministic_action(ours, obs) for obs in observations]
    for obs, action in zip(observations, actions):
        assert np.array_equal(action, deterministic_action(theirs, obs))
    assert len({a.tobytes() for a in actions}) > 1, "different observations, different actions"
    assert not torch.equal(state["weights"]["pi.net.mlp.0.weight"], torch.zeros_like(state["weights"]["pi.net.mlp.0.weight"]))


@pytest.mark.slow
def test_preflight_rejects_gpu_request_the_cluster_cannot_meet(ray_local):
    from efe_ray.rl.config import ppo_config
    from efe_ray.tune import check_resources

    cfg = build_config("smoke", ["tune.gpus_per_trial=1"])
    with pytest.raises(ConfigError, match="each trial needs 1 GPU but the Ray cluster has 0"):
        check_resources(ppo_config(cfg), cfg.tune)
    check_resources(ppo_config(SMOKE), SMOKE.tune)  # a CPU trial fits


@pytest.mark.slow
def test_corrupt_checkpoint_falls_back_to_the_previous_good_one(ray_local, tmp_path):
    """Our files truncated (a crash mid-write): the restore continues from the newest earlier good
    checkpoint, RLlib's state, learner and iteration count together; a direct load refuses."""
    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune import Checkpoint

    from efe_ray import checkpoint as ckpt
    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config

    algo = EFEPPO(config=ppo_config(SMOKE))
    steps = []
    for i in range(3):
        algo.train()
        folder = tmp_path / f"checkpoint_{i:06d}"
        algo.save_checkpoint(str(folder))
        steps.append(algo.trainee.learner.steps)
    algo.stop()
    learner_file = tmp_path / "checkpoint_000001" / "efe_learner.pt"
    learner_file.write_bytes(learner_file.read_bytes()[:1000])  # truncated, as by a crash mid-write
    named = _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path / "checkpoint_000001")),
                            metrics={"training_iteration": 2})

    fresh = EFEPPO(config=ppo_config(SMOKE))
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        fresh.load_checkpoint(str(tmp_path / "checkpoint_000001"))
    with pytest.warns(UserWarning, match="truncated or corrupt.*; the trial continues from checkpoint_000000, "
                                         "at iteration 1"):
        fresh.restore(named)  # never the newer checkpoint_000002: not what Tune asked to continue from
    assert fresh.iteration == 1 and fresh.trainee.learner.steps == steps[0] < steps[1]
    (tmp_path / "checkpoint_000000" / "efe_learner.pt").write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match="no earlier good checkpoint with recorded progress"):
        fresh.restore(named)
    fresh.stop()


@pytest.mark.slow
def test_a_checkpoint_that_is_gone_restores_from_the_newest_beside_it(ray_local, tmp_path):
    """A kill -9 can leave Tune's experiment state naming a checkpoint its retention deleted: the
    restore continues from the newest checkpoint beside it, learner and iteration count together."""
    import shutil

    from ray.train._internal.checkpoint_manager import _TrainingResult
    from ray.tune import Checkpoint

    from efe_ray import checkpoint as ckpt
    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config

    algo = EFEPPO(config=ppo_config(SMOKE))
    steps = []
    for i in range(2):
        algo.train()
        algo.save_checkpoint(str(tmp_path / f"checkpoint_{i:06d}"))
        steps.append(algo.trainee.learner.steps)
    algo.stop()
    assert ckpt.read_meta(tmp_path / "checkpoint_000001")["progress"]["training_iteration"] == 2
    shutil.rmtree(tmp_path / "checkpoint_000001")
    gone = _TrainingResult(checkpoint=Checkpoint.from_directory(str(tmp_path / "checkpoint_000001")),
                           metrics={"training_iteration": 2})

    fresh = EFEPPO(config=ppo_config(SMOKE))
    with pytest.warns(UserWarning, match="checkpoint_000001 is gone; the trial continues from checkpoint_000000, "
                                         "at iteration 1"):
        fresh.restore(gone)
    assert fresh.iteration == 1 and fresh.trainee.learner.steps == steps[0] < steps[1]
    shutil.rmtree(tmp_path / "checkpoint_000000")
    with pytest.raises(ValueError, match="checkpoint_000001 is gone and no checkpoint with recorded progress"):
        fresh.restore(gone)
    fresh.stop()


def test_a_nan_weight_stops_the_env_with_the_parameter_named():
    from envs.arc_prompt_env import NonFiniteWeightsError

    learner = (trainee := build_trainee(SMOKE)).learner
    env = ArcPromptEnv(trainee=trainee)
    env.reset(seed=0)
    env.step(env.action_space.sample())  # a normal step passes the check
    assert learner.skipped_steps == 0
    name, param = next(iter(learner.agent.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match=rf"agent\.{name} \(1 of {param.numel()} values\) is not finite"):
        env.step(env.action_space.sample())
    # the action's steps were skipped, then the weights were checked
    assert learner.skipped_steps == SMOKE.env.learner_steps_per_action


@pytest.mark.slow
def test_a_nan_weight_fails_the_trial_as_not_retryable(ray_local):
    from efe_ray.rl.algorithm import EFEPPO
    from efe_ray.rl.config import ppo_config
    from efe_ray.rl.faults import is_retryable, root_cause

    algo = EFEPPO(config=ppo_config(SMOKE))
    algo.train()
    name, param = next(iter(algo.trainee.learner.agent.named_parameters()))
    with torch.no_grad():
        param.view(-1)[0] = float("inf")
    with pytest.raises(Exception) as caught:
        algo.train()  # RLlib's env runner re-raises the env's error as a bare RuntimeError from it
    algo.stop()
    assert not is_retryable(caught.value)
    assert root_cause(caught.value).startswith(f"NonFiniteWeightsError: learner weight agent.{name} (1 of ")
