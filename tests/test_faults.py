"""Which trial errors are retried, and the root cause the summary shows (no Ray cluster needed)."""

import pytest
from ray.exceptions import RayTaskError
from ray.tune.error import TuneError

from efe_ray.checkpoint import CheckpointError
from efe_ray.config import ConfigError
from efe_ray.rl.faults import error_chain, is_retryable, root_cause
from envs.arc_prompt_env import NonFiniteWeightsError
from tests.fault_injection import InjectedFault


def trial_error(cause: BaseException | None, last_line: str) -> RayTaskError:
    """What Tune hands back when a trial raised ``cause``: Ray's wrapper with the traceback text."""
    traceback = f"Traceback (most recent call last):\n  File \"x.py\", line 1, in step\n{last_line}"
    return RayTaskError("EFEPPO.train", traceback, cause)


@pytest.mark.parametrize("cause", [
    ConfigError("learner.agent_lr: must be > 0 and <= 1, got 2.5"),
    CheckpointError("runs/x/checkpoint_000002/efe_learner.pt: contents do not match the recorded SHA-256"),
    NonFiniteWeightsError("learner weight agent.head.weight (1 of 352 values) is not finite at learner step 9"),
])
def test_deterministic_errors_are_not_retried_and_named(cause):
    error = trial_error(cause, f"{type(cause).__module__}.{type(cause).__name__}: {cause}")
    assert not is_retryable(error)
    assert root_cause(error) == f"{type(cause).__name__}: {cause}"
    dual = error.as_instanceof_cause()  # how Ray re-raises it: both RayTaskError and the cause's type
    assert not is_retryable(dual) and root_cause(dual) == f"{type(cause).__name__}: {cause}"


def test_a_wrapped_config_error_is_found_behind_the_wrapper():
    try:
        try:
            raise ConfigError("env.device: unknown device 'banana'")
        except ConfigError as inner:
            raise RuntimeError("env creation failed") from inner
    except RuntimeError as outer:
        error = trial_error(outer, "RuntimeError: env creation failed")
    assert [type(e).__name__ for e in error_chain(error)] == ["RayTaskError", "RuntimeError", "ConfigError"]
    assert not is_retryable(error)
    assert root_cause(error) == "ConfigError: env.device: unknown device 'banana'"


def test_transient_errors_are_retried_with_the_raised_error_as_cause():
    fault = InjectedFault("injected failure at learner step 40")
    error = trial_error(fault, f"tests.fault_injection.InjectedFault: {fault}")
    assert is_retryable(error)
    assert root_cause(error) == f"InjectedFault: {fault}"


@pytest.mark.parametrize("cause,retryable", [
    (NonFiniteWeightsError("learner weight agent.head.weight (1 of 352 values) is not finite at learner step 9"), False),
    (InjectedFault("injected failure at learner step 40"), True),
])
def test_an_env_error_rllib_rethrows_bare_is_read_from_the_traceback(cause, retryable):
    # RLlib's env runner does `raise RuntimeError from e`; the RuntimeError is rebuilt in the
    # driver without its __cause__, but Ray's traceback text holds both.
    name = f"{type(cause).__module__}.{type(cause).__name__}"
    text = (f"{name}: {cause}\n\nThe above exception was the direct cause of the following exception:\n\n"
            "Traceback (most recent call last):\n  File \"env_runner.py\", line 291, in _try_env_step\n"
            "    raise RuntimeError from e\nRuntimeError")
    error = trial_error(RuntimeError(), text)
    assert error.cause.__cause__ is None
    assert is_retryable(error) is retryable
    assert root_cause(error) == f"{type(cause).__name__}: {cause}"


def test_without_a_rebuilt_cause_the_traceback_text_decides():
    error = trial_error(None, "efe_ray.checkpoint.CheckpointError: runs/x: no efe_meta.json")
    assert error.cause is None
    assert not is_retryable(error)
    assert root_cause(error) == "CheckpointError: runs/x: no efe_meta.json"
    text_only = TuneError("Failure # 1 (occurred at 2026-01-01)\nTraceback...\nKeyError: 'eval/cell_acc'")
    assert is_retryable(text_only)
    assert root_cause(text_only) == "KeyError: 'eval/cell_acc'"
