"""Searching a task's prompt delta on its own demonstrations, before adaptation.

The prompt is the task's latent; the RL refiner was trained to move it. At test time a delta is
judged by how well the checkpoint's agent, with ``prompt + delta``, predicts each demonstration
from the others: the **demonstration log-likelihood** (:func:`demo_log_lik`: the log-probability of
every leave-one-out target over its square, averaged over views). Three searches propose deltas:

- ``zero``: no refinement;
- ``policy``: the trained PPO policy in closed loop (:func:`policy_search`): ``rounds`` proposals,
  each drawn from the policy's Gaussian with the search's progress, the last proposal's
  demonstration loss and accuracy in its control vector (the first is the policy's mean);
- ``gradient``: gradient ascent on the delta itself, the agent frozen (:func:`gradient_search`).

Each search keeps its best proposal; the delta ``best`` is the best of the three by the same
likelihood (ties to zero). Nothing here reads a test pair. All tasks of a group are scored in one
batched forward pass per round.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from efe_ray.data.task import Task
from efe_ray.evaluation.adapt import Stacked
from efe_ray.learner import EFELearner

__all__ = ["demo_log_lik", "gradient_search", "policy_search"]

PolicyFn = Callable[..., np.ndarray]
"""``policy(task, learner, feedback=(progress, loss, acc), seed=...) -> (P,) delta`` (efe_ray/rl/policy.py)."""


def demo_log_lik(learner: EFELearner, demos: Stacked, deltas: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """(K,) mean over each task's real views of the log-probability of its targets over its square,
    with prompt + ``deltas`` (K, P): the checkpoint's (one-copy) agent, eval mode."""
    k, v, s, _ = demos.canvas.shape
    agent = learner.agent.eval()
    with torch.set_grad_enabled(grad), learner.autocast():
        prompt = (demos.prompt + deltas[:, None, :]).flatten(0, 1)  # (K*V, P)
        logits = agent(demos.canvas.flatten(0, 1), prompt, demos.view.flatten(0, 1))  # (K*V, S, S, 11)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, demos.target.flatten(0, 1)[..., None])[..., 0]
    inside = (demos.weight.flatten(0, 1) > 0).float()  # the view's square
    per_view = (logp * inside).sum((-1, -2)).view(k, v)  # (K, V)
    real = (torch.arange(v, device=deltas.device)[None] < demos.count[:, None]).float()  # (K, V)
    return (per_view * real).sum(1) / real.sum(1).clamp_min(1.0)


def _demo_accuracy(learner: EFELearner, demos: Stacked, deltas: torch.Tensor) -> torch.Tensor:
    """(K,) share of real views whose target square the agent gets exactly right."""
    k, v, _, _ = demos.canvas.shape
    with torch.no_grad(), learner.autocast():
        prompt = (demos.prompt + deltas[:, None, :]).flatten(0, 1)
        pred = learner.agent.eval()(demos.canvas.flatten(0, 1), prompt, demos.view.flatten(0, 1)).argmax(-1)
    inside = demos.weight.flatten(0, 1) > 0
    right = ((pred == demos.target.flatten(0, 1)) | ~inside).all(-1).all(-1).view(k, v).float()
    real = (torch.arange(v, device=deltas.device)[None] < demos.count[:, None]).float()
    return (right * real).sum(1) / real.sum(1).clamp_min(1.0)


def policy_search(learner: EFELearner, policy: PolicyFn, tasks: list[Task], demos: Stacked, *, rounds: int,
                  seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(best delta (K, P), its demonstration log-likelihood (K,)) of ``rounds`` closed-loop proposals."""
    device = demos.prompt.device
    best = torch.stack([torch.as_tensor(policy(t, learner), device=device) for t in tasks]).float()  # the mean
    best_ll = demo_log_lik(learner, demos, best)
    loss, acc = (-best_ll).tolist(), _demo_accuracy(learner, demos, best).tolist()
    for r in range(1, rounds):
        feedback = [(r / rounds, max(x, 0.0), a) for x, a in zip(loss, acc)]
        delta = torch.stack([torch.as_tensor(policy(t, learner, feedback=f, seed=seed * 1000 + r), device=device)
                             for t, f in zip(tasks, feedback)]).float()
        ll = demo_log_lik(learner, demos, delta)
        better = ll > best_ll
        best = torch.where(better[:, None], delta, best)
        best_ll = torch.maximum(ll, best_ll)
        loss, acc = (-ll).tolist(), _demo_accuracy(learner, demos, delta).tolist()
    return best, best_ll


def gradient_search(learner: EFELearner, demos: Stacked, *, steps: int, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(best delta (K, P), its demonstration log-likelihood (K,)) of ``steps`` Adam steps on the
    deltas (from zero) with the agent frozen."""
    k, p = demos.prompt.shape[0], demos.prompt.shape[-1]
    delta = torch.zeros((k, p), device=demos.prompt.device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    best = torch.zeros((k, p), device=delta.device)
    best_ll = demo_log_lik(learner, demos, best)
    for _ in range(steps):
        ll = demo_log_lik(learner, demos, delta, grad=True)
        opt.zero_grad(set_to_none=True)
        delta.grad, = torch.autograd.grad(-ll.sum(), [delta])  # the agent's weights get no gradient
        with torch.no_grad():
            better = ll.detach() > best_ll  # the delta before this step
            best = torch.where(better[:, None], delta.detach(), best)
            best_ll = torch.maximum(ll.detach(), best_ll)
        opt.step()
    final = demo_log_lik(learner, demos, delta.detach())
    better = final > best_ll
    return torch.where(better[:, None], delta.detach(), best), torch.maximum(final, best_ll)
