"""Fault injection for the reliability tests: an env that fails once, at a given learner step.

A test hands :class:`FailingEnv` to ``efe_ray.tune.main(argv, env_cls=FailingEnv)``; the trials'
Ray workers import it from here (Ray puts the driver's current folder, the repository root, on
their path).
"""

from __future__ import annotations

from envs.arc_prompt_env import ArcPromptEnv


class InjectedFault(RuntimeError):
    """The failure :class:`FailingEnv` raises."""


class FailingEnv(ArcPromptEnv):
    """ArcPromptEnv that raises InjectedFault before learner step :attr:`fail_at` (a multiple of
    ``env.learner_steps_per_action``), unless its learner was restored from a checkpoint (it has
    taken steps this env did not)."""

    fail_at = 40

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stepped = 0

    def step(self, action):
        if self.trainee.learner.steps == self.stepped == self.fail_at:
            raise InjectedFault(f"injected failure at learner step {self.fail_at}")
        self.stepped += self.trainee.cfg.env.learner_steps_per_action  # learner steps this env has run
        return super().step(action)
