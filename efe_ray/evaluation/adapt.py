"""Test-time adaptation of many tasks at once: copies of the agent, each trained on one task's own
demonstrations.

For a group of tasks, :func:`adapt` makes ``M`` copies of the checkpoint's agent
(:meth:`GridAgent.stacked`), one per (task, prompt delta) pair, and trains them together with a
fresh AdamW (no moments from the training run) for ``steps`` steps. Each step, every copy sees
``views`` leave-one-out views of its own task (efe_ray/evaluation/views.py: drawn uniformly from
all demonstrations under all D8 transforms, never a test pair, never another task), with its
delta added to the prompt. Which views a copy draws comes from its own random stream
(efe_ray/evaluation/streams.py: keyed by the seed, its task and its delta), so a copy adapts as
it would alone, whatever else its group holds. The loss is the training loss (efe_ray/efe.py),
averaged over the agent's passes and summed over copies, so copies do not share gradients. The learning rate warms
up for the first tenth of the steps and then follows a cosine to zero. Everything stays on the
device: no host synchronisation inside the loop.

Views under colour versions (efe_ray/evaluation/views.py, ``--colours``) add, for every version
but the first (the task's own colours), a prompt offset per copy, learned with the copy's weights
from zero (:class:`Adapted`: ``offsets``): a version has no input of its own, and a rule that names
a colour names another one in each version, so each version's views tell the copy which one it
sees through their offset, as a task id per augmented version does in TRM. With one version there
is no offset to learn and adaptation is what it was.

The prompt encoder is not adapted: the views' prompts are computed once (constants here), which is
what makes the batched step cheap. Copies of tasks with different squares share the largest
square (smaller ones are padded with OUTSIDE, which their loss weights leave out); since a cell's
logits depend on the square's side, evaluation groups tasks of one side
(efe_ray/evaluation/model.py), so that no copy is padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from efe_ray.efe import efe_loss
from efe_ray.evaluation.streams import picks
from efe_ray.evaluation.views import ViewSet
from efe_ray.learner import EFELearner
from efe_ray.models.agent import OUTSIDE, GridAgent

__all__ = ["Adapted", "Stacked", "adapt", "demo_exact", "log_probs", "stack_views"]


@dataclass(frozen=True, eq=False)
class Stacked:
    """Several tasks' view sets padded to one square: (tasks, views, S, S) tensors and view counts."""

    canvas: torch.Tensor
    """(K, V, S, S) long."""
    view: torch.Tensor
    """(K, V) long."""
    prompt: torch.Tensor
    """(K, V, P) float."""
    count: torch.Tensor
    """(K,) long: how many of the V views of each task are real."""
    colour: torch.Tensor
    """(K, V) long colour version of each view (0 on padding)."""
    target: torch.Tensor | None = None
    """(K, V, S, S) long."""
    weight: torch.Tensor | None = None
    """(K, V, S, S) float loss weights (0 on padding)."""
    target_mask: torch.Tensor | None = None
    """(K, V, S, S) float."""


def _pad(x: torch.Tensor, views: int, side: int, value: float) -> torch.Tensor:
    """(N, S', S') -> (views, side, side), padded with ``value``."""
    s = x.shape[-1]
    x = F.pad(x, (0, side - s, 0, side - s), value=value)
    return F.pad(x, (0, 0, 0, 0, 0, views - x.shape[0]), value=value)


def stack_views(sets: list[ViewSet]) -> Stacked:
    """Pad the view sets of several tasks to their largest square and view count, and stack them."""
    side = max(s.canvas.shape[-1] for s in sets)
    views = max(len(s) for s in sets)

    def stack(get, value) -> torch.Tensor:
        return torch.stack([_pad(get(s), views, side, value) for s in sets])

    prompt = torch.stack([F.pad(s.prompt, (0, 0, 0, views - len(s))) for s in sets])  # (K, V, P)
    view = torch.stack([F.pad(s.view, (0, views - len(s))) for s in sets])  # (K, V)
    count = torch.tensor([len(s) for s in sets], device=prompt.device)
    colour = torch.stack([F.pad(s.colour, (0, views - len(s))) for s in sets])  # (K, V)
    has_targets = all(s.target is not None for s in sets)
    return Stacked(
        stack(lambda s: s.canvas, OUTSIDE), view, prompt, count, colour,
        stack(lambda s: s.target, OUTSIDE) if has_targets else None,
        stack(lambda s: s.weight, 0.0) if has_targets else None,
        stack(lambda s: s.target_mask, 0.0) if has_targets else None)


@dataclass(frozen=True, eq=False)
class Adapted:
    """What :func:`adapt` returns: the adapted copies, the loss per step and each copy's prompt offsets."""

    agent: GridAgent
    """``M`` adapted copies, in eval mode."""
    losses: torch.Tensor
    """(steps, M) each copy's loss at each step (on the device)."""
    offsets: torch.Tensor
    """(M, C, P): copy ``m``'s prompt offset under colour version ``c``: its delta, plus the learned
    offset of versions 1.. (none for version 0)."""

    def prompts(self, views: Stacked, copy_task: torch.Tensor) -> torch.Tensor:
        """(M, V, P): each copy's prompts of its task's views, offsets added."""
        copy = torch.arange(len(copy_task), device=copy_task.device)[:, None]  # (M, 1)
        return views.prompt[copy_task] + self.offsets[copy, views.colour[copy_task]]


def adapt(learner: EFELearner, demos: Stacked, copy_task: torch.Tensor, copy_delta: torch.Tensor, *,
          steps: int, lr: float, views: int, keys: torch.Tensor) -> Adapted:
    """``M = len(copy_task)`` copies adapted to their tasks' demonstrations.

    ``demos``: the tasks' leave-one-out views, stacked; ``copy_task`` (M,) long: the task of each
    copy; ``copy_delta`` (M, P): its prompt delta; ``keys`` (M,) int64: its random stream's key
    (:func:`efe_ray.evaluation.streams.copy_key`). The checkpoint's agent is left untouched.
    """
    cfg = learner.cfg
    m = len(copy_task)
    agent = learner.agent.stacked(m).train()
    device = copy_task.device
    fused = device.type == "cuda"
    versions = int(demos.colour.max()) + 1  # one host read, before the loop
    learned = torch.zeros((m, versions - 1, copy_delta.shape[-1]), device=device, requires_grad=True)  # (M, C-1, P)
    params = [*agent.parameters(), learned] if versions > 1 else list(agent.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(t, steps) / max(steps, 1))))
    rows = copy_task[:, None].expand(m, views)  # (M, k)
    copy = torch.arange(m, device=device)[:, None]  # (M, 1)
    count = demos.count[copy_task]  # (M,) real views of each copy's task
    keys = keys.to(device=device, dtype=torch.int64)
    if keys.shape != (m,):
        raise ValueError(f"adapt: keys must be one per copy, shape ({m},), got {tuple(keys.shape)}")
    losses = torch.zeros((steps, m), device=device)

    def offsets() -> torch.Tensor:  # (M, C, P)
        return copy_delta[:, None, :] + F.pad(learned, (0, 0, 1, 0))

    for step in range(steps):
        pick = picks(keys, step, views, count)  # (M, k) view indices
        prompt = demos.prompt[rows, pick] + offsets()[copy, demos.colour[rows, pick]]  # (M, k, P)
        with learner.autocast():
            passes = agent(demos.canvas[rows, pick], prompt, demos.view[rows, pick], all_passes=True)
        target, weight, mask = demos.target[rows, pick], demos.weight[rows, pick], demos.target_mask[rows, pick]
        per_sample = torch.stack([efe_loss(x.flatten(0, 1), target.flatten(0, 1), weight.flatten(0, 1),
                                           mask.flatten(0, 1), eps=cfg.label_eps, objective=cfg.objective).per_sample
                                  for x in passes])  # (passes, M * k)
        per_copy = per_sample.mean(0).view(m, views).mean(1)  # (M,) each copy's mean over passes and views
        opt.zero_grad(set_to_none=True)
        per_copy.sum().backward()  # copies share no weights: each gets its own loss's gradient
        opt.step()
        sched.step()
        losses[step] = per_copy.detach()
    return Adapted(agent.eval(), losses, offsets().detach())


VIEW_CHUNK = 32
"""Views per copy in one forward pass of the adapted copies (bounds the activations' memory where
colour versions multiply the views)."""


@torch.no_grad()
def _logits(adapted: Adapted, views: Stacked, copy_task: torch.Tensor, learner: EFELearner) -> torch.Tensor:
    """(M, V, S, S, 11) logits of each adapted copy on its task's views, :data:`VIEW_CHUNK` views a pass."""
    rows, agent = copy_task, adapted.agent.eval()  # (M,)
    canvas, prompt, view = views.canvas[rows], adapted.prompts(views, copy_task), views.view[rows]
    out = []
    with learner.autocast():
        for i in range(0, canvas.shape[1], VIEW_CHUNK):
            j = slice(i, i + VIEW_CHUNK)
            out.append(agent(canvas[:, j], prompt[:, j], view[:, j]))
    return torch.cat(out, 1)


@torch.no_grad()
def log_probs(adapted: Adapted, views: Stacked, copy_task: torch.Tensor, learner: EFELearner) -> torch.Tensor:
    """(M, V, S, S, 11) float32 class log-probabilities of each adapted copy on its task's views."""
    return torch.log_softmax(_logits(adapted, views, copy_task, learner).float(), -1)


@torch.no_grad()
def demo_exact(adapted: Adapted, demos: Stacked, copy_task: torch.Tensor, learner: EFELearner) -> torch.Tensor:
    """(M,) share of each copy's real demonstration views (the leave-one-out views it adapted on)
    whose target square it predicts exactly: how far adaptation fit the copy's own task."""
    rows = copy_task  # (M,)
    pred = _logits(adapted, demos, copy_task, learner).argmax(-1)  # (M, V, S, S)
    inside = demos.weight[rows] > 0  # (M, V, S, S): the view's square
    right = ((pred == demos.target[rows]) | ~inside).flatten(2).all(-1).float()  # (M, V)
    real = (torch.arange(right.shape[1], device=right.device)[None] < demos.count[rows][:, None]).float()
    return (right * real).sum(1) / real.sum(1).clamp_min(1.0)
