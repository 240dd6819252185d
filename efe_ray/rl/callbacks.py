"""RLlib callbacks of a trial: the learner's per-step metrics and the held-out scores, as result keys.

- **Per-step metrics** (:meth:`TrialMetrics.on_episode_step`, in the env runner): each env step's
  ``info`` carries the learner's metrics (envs/arc_prompt_env.py); each goes into RLlib's
  ``MetricsLogger`` under its TensorBoard tag: a mean over the iteration's steps (:data:`MEANS`)
  or, for counters, the latest value (:data:`COUNTERS`). RLlib reduces them with its own
  statistics and reports them under ``result["env_runners"]``.
- **Each iteration's result** (:meth:`TrialMetrics.on_train_result`, in the algorithm, after
  the iteration): those tags move to the top level of the result (``losses/efe``, ...: the keys
  TensorBoard, Tune's table and ASHA read); on the first iteration of a trial process and every
  ``rl.eval_every`` iterations, the held-out tasks are scored by ONE call to
  :func:`efe_ray.evaluation.predict.evaluate`, with the policy's deterministic refinement, and
  each key it returns becomes ``eval/<key>``; the last scores are repeated in between, so that
  ASHA always sees its metric. Pictures of a few held-out predictions go under
  ``result["images"]`` (TensorBoard only, efe_ray/rl/tensorboard.py). Both use the average of
  the learner's weights where it keeps one (``learner.ema_decay``: :func:`held_out_evaluation`),
  as ``evaluate`` and ``export`` do; training goes on from its own weights.

Not RLlib's ``custom_evaluation_function``: with ``evaluation_interval`` set, RLlib builds a
separate evaluation EnvRunnerGroup whose local runner makes its own env, i.e. a second learner
(a second Qwen on the trial's GPU) that the function would not use; held-out scoring needs the
trained learner itself, which it reads here through ``algorithm.trainee``.
"""

from __future__ import annotations

import numpy as np
import ray
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

from efe_ray.evaluation.predict import DeltaFn, evaluate, predict
from efe_ray.rl.images import task_picture
from efe_ray.rl.policy import refinement
from envs.trainee import Trainee

MEANS = {
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
}
"""Env ``info`` key -> result key (= TensorBoard tag) of the metrics reported as a mean over an iteration."""
COUNTERS = {
    "curriculum_epoch": "charts/curriculum_epoch",
    "skipped_steps": "learner/skipped_steps",
    "steps": "learner/steps",
    "episodes": "learner/episodes",
}
"""Env ``info`` key -> result key of the counters reported at their latest (largest) value."""
STEPS_THIS_ITER = "learner/steps_this_iter"
"""Result key: learner steps in the iteration."""
TAGS = (*MEANS.values(), *COUNTERS.values(), STEPS_THIS_ITER)


class TrialMetrics(RLlibCallback):
    """Learner metrics per step into RLlib's MetricsLogger; held-out scores per iteration."""

    def __init__(self) -> None:
        super().__init__()
        self.last_eval: dict[str, float] = {}

    def on_episode_step(self, *, episode, metrics_logger, **kwargs) -> None:
        info = episode.get_infos(-1)
        for name, tag in MEANS.items():
            metrics_logger.log_value(tag, float(info[name]), reduce="mean")
        for name, tag in COUNTERS.items():
            metrics_logger.log_value(tag, float(info[name]), reduce="max")
        metrics_logger.log_value(STEPS_THIS_ITER, float(info["learner_steps"]), reduce="sum")  # K per action

    def on_train_result(self, *, algorithm, result: dict, **kwargs) -> None:
        runners = result[ENV_RUNNER_RESULTS]
        result.update({tag: float(runners.pop(tag)) for tag in TAGS if tag in runners})
        trainee = algorithm.trainee
        if not self.last_eval or result["training_iteration"] % trainee.cfg.rl.eval_every == 0:
            scores, result["images"] = held_out_evaluation(trainee, refinement(algorithm.get_module(), trainee))
            self.last_eval = {f"eval/{key}": value for key, value in scores.items()}
        result.update(self.last_eval)
        result["learner_device"] = str(trainee.learner.device)
        result["node_id"] = ray.get_runtime_context().get_node_id()


def held_out_evaluation(trainee: Trainee, refine: DeltaFn) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(scores of :func:`~efe_ray.evaluation.predict.evaluate`, :func:`held_out_pictures`) of the
    held-out tasks with the policy's refinement ``refine``, computed with the average of the
    learner's weights in its modules where it keeps one (the policy then observes the average's
    prompts too); the training weights are back afterwards, bit for bit."""
    with trainee.learner.ema_weights():
        scores = evaluate(trainee.learner, trainee.eval_tasks, delta_fn=refine)
        return scores, held_out_pictures(trainee, refine)


def held_out_pictures(trainee: Trainee, refine: DeltaFn, count: int = 3) -> dict[str, np.ndarray]:
    """(H, W, 3) uint8 pictures, query | prediction | target, of the first held-out tasks' first test."""
    out = {}
    for task in trainee.eval_tasks[:count]:
        prediction = predict(trainee.learner, task, refine(task))[0]
        out[f"eval/{task.task_id}"] = task_picture(task.test[0].input, prediction, task.test[0].output)
    return out
