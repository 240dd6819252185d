"""Trial failures: what caused them, and which ones a retry cannot fix.

Tune restarts a failed trial from its last checkpoint up to ``tune.max_failures`` times. That
helps with a lost node or a killed worker, but not with a deterministic error: a bad config value,
an unreadable checkpoint, an invalid task file or a weight that is already NaN fail again on
every restart. :data:`NON_RETRYABLE` lists those errors; :class:`NoRetryASHA`
(ASHA plus one rule) ends such a trial as failed after its first occurrence.

Tune offers no per-error retry policy. Its controller records the error (``error.pkl``), asks
``Trial.should_recover()`` (only counts and ``max_failures``) and, to retry, requeues the trial
as PENDING and tells the scheduler (``on_trial_error``). The scheduler is the one component that
Tune then consults before starting the trial again (``choose_trial_to_run``), and it may stop
trials (``stop_trial``, as HyperBand does) and set their status (both on the list of controller
methods Tune lets schedulers call). So :class:`NoRetryASHA` notes a non-retryable error in
``on_trial_error`` and, before anything is started, stops that trial and marks it ERROR: it
fails once, Tune's table and ``ResultGrid.errors`` show it, and ``--resume`` (which retries
errored trials) tries it again only when the user asks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cloudpickle
from ray.exceptions import RayError, RayTaskError
from ray.tune.error import TuneError
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

from efe_ray.checkpoint import CheckpointError
from efe_ray.config import ConfigError
from efe_ray.data.loaders import TaskValidationError
from envs.arc_prompt_env import NonFiniteWeightsError

NON_RETRYABLE: tuple[type[BaseException], ...] = (ConfigError, TaskValidationError, CheckpointError,
                                                  NonFiniteWeightsError)
"""Errors that fail the same way on every restart."""
_NON_RETRYABLE_NAMES = {t.__name__ for t in NON_RETRYABLE}

_WRAPPERS = (RayError, TuneError)
"""Ray's and Tune's exceptions that carry another one (or its traceback text)."""

_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Fault|Interrupt)): (.+)$")


def error_chain(error: BaseException) -> list[BaseException]:
    """``error`` and what it wraps, outermost first: a RayTaskError's ``cause`` (the exception the
    trial raised, rebuilt in this process), then ``__cause__`` / ``__context__`` links."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        cause = current.cause if isinstance(current, RayTaskError) else None
        if isinstance(cause, BaseException):
            current = cause
        else:
            current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _error_lines(error: BaseException) -> list[tuple[str, str]]:
    """(type name, message) of each ``Type: message`` line of the traceback text in ``error``, in
    order: for chained exceptions, the innermost (the root) comes first."""
    return [(m.group(1).rsplit(".", 1)[-1], m.group(3)) for m in map(_ERROR_LINE.match, str(error).splitlines()) if m]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def root_cause(error: BaseException) -> str:
    """``"Type: message"`` of what made a trial fail: a non-retryable error if one is involved,
    else the innermost exception. ``RayTaskError.cause`` (the exception rebuilt in this process)
    comes first; but a rebuilt exception loses its own ``__cause__``, so where the trial's
    exception was re-raised as a bare wrapper (RLlib's env runner does ``raise RuntimeError from
    e``), or could not be pickled, the traceback text Ray kept names the root."""
    raised = [e for e in error_chain(error) if not isinstance(e, _WRAPPERS)]
    known = [e for e in raised if isinstance(e, NON_RETRYABLE)]
    if known:
        return _describe(known[0])
    lines = _error_lines(error)
    named = [line for line in lines if line[0] in _NON_RETRYABLE_NAMES]
    if named:
        return f"{named[0][0]}: {named[0][1]}"
    if raised and str(raised[-1]):
        return _describe(raised[-1])
    if lines:
        return f"{lines[0][0]}: {lines[0][1]}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def is_retryable(error: BaseException) -> bool:
    """False when ``error``, what it wraps, or its traceback text involves one of :data:`NON_RETRYABLE`."""
    if any(isinstance(e, NON_RETRYABLE) for e in error_chain(error)):
        return False
    return not any(name in _NON_RETRYABLE_NAMES for name, _ in _error_lines(error))


def latest_error(trial: Trial) -> BaseException | None:
    """The error Tune has just recorded for ``trial``, from the trial's folder in the driver's
    staging area, where Tune writes it first (``Trial.get_pickled_error`` reads the storage copy,
    which is synced later). The pickle was written by this process a moment ago."""
    pickled = trial.pickled_error_file
    if pickled and os.path.isfile(pickled):
        with open(pickled, "rb") as f:
            return cloudpickle.load(f)
    text = trial.error_file
    if text and os.path.isfile(text):
        return TuneError(Path(text).read_text(errors="replace"))  # every failure so far; the last one last
    return None


class NoRetryASHA(ASHAScheduler):
    """ASHA that ends a trial as failed, without restarting it, when its error is not retryable."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._no_retry: set[str] = set()

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        super().on_trial_error(tune_controller, trial)
        error = latest_error(trial)
        if error is not None and not is_retryable(error):
            self._no_retry.add(trial.trial_id)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        for trial in list(tune_controller.get_trials()):
            if trial.trial_id in self._no_retry:
                self._no_retry.discard(trial.trial_id)
                if trial.status == Trial.PENDING:  # requeued for a retry that cannot help
                    tune_controller.stop_trial(trial)
                    tune_controller._set_trial_status(trial, Trial.ERROR)
        return super().choose_trial_to_run(tune_controller)
