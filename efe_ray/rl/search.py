"""Run the Tune search of EFEPPO trials: a local or joined Ray, a new or restored Tuner, and an
end that is always orderly (finished, interrupted, out of time, or with failed trials).

- **Ray**: :func:`start_ray` starts a local Ray bound to 127.0.0.1 (efe_ray/rl/network.py) with
  the dashboard on 127.0.0.1 (token-protected), or joins ``address``.
- **Tuner**: :func:`new_tuner` / :func:`restored_tuner`. Checkpoints are pruned by Tune's
  ``CheckpointConfig(num_to_keep=K, checkpoint_score_attribute=metric)``: Ray 2.60 keeps the K
  best by the metric and never deletes the checkpoint it has just registered, so each trial keeps
  its K best plus its latest (what ``--resume`` restores from and ``evaluate`` reads). After a
  crash, :class:`~efe_ray.rl.retention.CheckpointRecord` brings a trial's record of checkpoints
  back to its folder as the trial starts (the last snapshot can name deleted folders and miss new ones).
  Failures go to :class:`efe_ray.rl.faults.NoRetryASHA`. Tune samples the trials' values with
  ``tune.seed`` (``BasicVariantGenerator(random_state=...)``): the same seed, the same trials.
- **Ending**: Ctrl-C is Tune's own graceful stop (a last snapshot of the experiment state; the
  running trials stay unfinished, so ``--resume`` continues them). A time budget ends the search
  the same way (:class:`GracefulStop`), rather than through ``TuneConfig(time_budget_s)``, which
  marks the running trials as finished so that a resume would not continue them. Tune's own
  ``Tuner.restore(...)`` hint is filtered from its log: the summary prints this project's resume
  command instead (efe_ray/rl/outcome.py).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune import CLIReporter

from efe_ray.config import ExperimentConfig
from efe_ray.rl.algorithm import EFEPPO
from efe_ray.rl.faults import NoRetryASHA
from efe_ray.rl.outcome import SearchOutcome
from efe_ray.rl.retention import CheckpointRecord
from efe_ray.rl.tensorboard import EFETensorBoardCallback

TUNE_LOGGER = "ray.tune.tune"


def start_ray(address: str | None, num_cpus: int | None, num_gpus: int | None, dashboard: bool):
    """``ray.init`` for a search: join ``address``, or start a local Ray (see the module docstring)."""
    if address:
        return ray.init(address=address)
    extra = {"include_dashboard": True, "dashboard_host": "127.0.0.1"} if dashboard else {"include_dashboard": False}
    return ray.init(num_cpus=num_cpus, num_gpus=num_gpus, **extra)


def progress_reporter(metric: str) -> CLIReporter:
    """Tune's progress table: the searched values and the metrics worth watching. (Not sorted by
    the metric: Ray 2.60's sort fails on a finished trial that never reported it.)"""
    prefix = "env_config/experiment/learner/"
    return CLIReporter(
        parameter_columns={f"{prefix}agent_lr": "agent_lr", f"{prefix}qwen_lr": "qwen_lr",
                           f"{prefix}reward_scale": "reward_scale"},
        metric_columns={"training_iteration": "iter", "losses/efe": "efe", "charts/mask_ratio": "mask",
                        "charts/reward": "reward", metric: metric, "eval/exact": "exact"},
        max_report_frequency=15,
    )


def new_tuner(param_space: dict, cfg: ExperimentConfig, folder: Path, keep_checkpoints: int) -> tune.Tuner:
    """A Tuner for a new search in ``folder`` (``keep_checkpoints`` best per trial plus the latest; 0: all)."""
    from ray.tune.search import BasicVariantGenerator

    t = cfg.tune
    scheduler = NoRetryASHA(time_attr="training_iteration", max_t=t.iterations,
                            grace_period=min(t.grace_period, t.iterations))
    keep = {"num_to_keep": keep_checkpoints, "checkpoint_score_attribute": t.metric,
            "checkpoint_score_order": "max"} if keep_checkpoints > 0 else {"num_to_keep": None}
    run_config = tune.RunConfig(
        name=folder.name,
        storage_path=str(folder.parent),
        stop={"training_iteration": t.iterations},
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=t.checkpoint_every, checkpoint_at_end=True, **keep),
        failure_config=tune.FailureConfig(max_failures=t.max_failures),
        callbacks=[EFETensorBoardCallback(t.metric), CheckpointRecord()],
        progress_reporter=progress_reporter(t.metric),
        verbose=1,
    )
    tune_config = tune.TuneConfig(metric=t.metric, mode="max", scheduler=scheduler, num_samples=t.num_samples,
                                  max_concurrent_trials=t.max_concurrent or None,
                                  search_alg=BasicVariantGenerator(random_state=cfg.tune.seed))
    return tune.Tuner(EFEPPO, param_space=param_space, tune_config=tune_config, run_config=run_config)


def restored_tuner(folder: Path) -> tune.Tuner:
    """The Tuner of the experiment in ``folder``, continuing unfinished trials and retrying errored ones.
    Tune unpickles ``tuner.pkl`` (and the settings in it) from the folder: it must be trusted."""
    return tune.Tuner.restore(str(folder), trainable=EFEPPO, resume_unfinished=True, resume_errored=True)


class _TuneLogFilter(logging.Filter):
    """Drops Tune's ``Tuner.restore(...)`` hint, and its Ctrl-C notice when the time budget stopped the run."""

    def __init__(self, stop: GracefulStop) -> None:
        super().__init__()
        self.stop = stop

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(("Experiment has been interrupted", "Trials did not complete")):
            return False
        return not (self.stop.budget_reached and message.startswith("Stop signal received"))


class GracefulStop:
    """Around ``tuner.fit()``: a time budget that ends the run as Ctrl-C does, and Ctrl-C before
    Tune is ready raising KeyboardInterrupt. Tune installs its SIGINT handler when its loop starts
    and puts the previous one back after the first Ctrl-C; the budget waits for Tune's handler."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.budget_reached = False
        self._done = threading.Event()
        self._handler = self._before_tune  # one bound-method object, to compare against
        self._filter = _TuneLogFilter(self)

    def _before_tune(self, signum, frame):
        raise KeyboardInterrupt

    def _watch_budget(self) -> None:
        if self._done.wait(self.budget_s):
            return
        while signal.getsignal(signal.SIGINT) == self._handler:  # Tune not in its loop yet, or past a Ctrl-C
            if self._done.wait(0.1):
                return
        self.budget_reached = True
        print(f"\ntime budget of {self.budget_s:g} s reached: ending the search (a last snapshot of its state; "
              "running trials stay resumable)", flush=True)
        os.kill(os.getpid(), signal.SIGINT)

    def __enter__(self) -> GracefulStop:
        self._previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._handler)
        logging.getLogger(TUNE_LOGGER).addFilter(self._filter)
        self._thread = None
        if self.budget_s is not None:
            self._thread = threading.Thread(target=self._watch_budget, name="time-budget", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        signal.signal(signal.SIGINT, self._previous)  # Tune leaves its handler installed after a normal end
        logging.getLogger(TUNE_LOGGER).removeFilter(self._filter)


def run_search(tuner: tune.Tuner, cfg: ExperimentConfig, folder: Path, time_budget_s: float | None) -> SearchOutcome:
    """``tuner.fit()`` within :class:`GracefulStop`; what became of each trial.
    KeyboardInterrupt (Ctrl-C before Tune's loop, or a second one during its last snapshot) propagates."""
    start = time.time()
    with GracefulStop(time_budget_s) as stop:
        results = tuner.fit()
    return SearchOutcome.from_results(results, cfg.tune, folder, time.time() - start,
                                      budget_s=time_budget_s if stop.budget_reached else None)
