"""The learner's learning-rate schedule and the task table's sign-SGD update.

- :func:`lr_factor`: the multiplier of every optimizer group's base learning rate at a learner
  step: a linear warm-up over ``learner.warmup_steps`` steps, then constant or a cosine to 0 at
  ``learner.schedule_steps``. Host arithmetic on the learner's step counter, nothing else: the
  learner sets each group's ``lr`` before its optimizer step, and after loading a state (the
  schedule goes on from the loaded step count).
- :class:`SignSGD`: ``row -= lr * (sign(grad) + weight_decay * row)`` for ``learner.task_lr > 0``,
  where the task table leaves AdamW. Only the rows of the step's tasks have a gradient; a row whose
  gradient is zero (every other task's, and the unknown-task row) stays bit for bit as it was, and
  so does every row of a step the device skipped.

No Ray here.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SignSGD", "lr_factor"]


def lr_factor(step: int, warmup_steps: int, schedule: str, schedule_steps: int) -> float:
    """Multiplier of the base learning rates for the learner step with index ``step`` (0: the first).

    ``min(1, (step + 1) / warmup_steps)`` during the warm-up; then 1 (``"constant"``) or
    ``0.5 * (1 + cos(pi * p))`` with ``p = (step - warmup_steps) / (schedule_steps - warmup_steps)``
    capped at 1 (``"cosine"``: 0 from step ``schedule_steps`` on).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule {schedule!r}")
    progress = min(1.0, (step - warmup_steps) / (schedule_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class SignSGD(torch.optim.Optimizer):
    """Sign-SGD of 2-D tables, row-sparse: ``row -= lr * (sign(grad) + weight_decay * row)`` on the
    rows with a non-zero gradient; the others do not change at all. Stateless."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0:
            raise ValueError(f"SignSGD: lr ({lr}) and weight_decay ({weight_decay}) must be >= 0")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, skipped: torch.Tensor | None = None) -> None:  # type: ignore[override]
        """One update; ``skipped`` (0-d bool, on the device): a step that did not happen, which
        leaves every row as it was (also where the gradient is not finite). Nothing is read back."""
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                update = torch.sign(grad)
                if decay:
                    moved = (grad != 0).any(-1, keepdim=True)  # (rows, 1): the rows of the step's tasks
                    update = update + decay * p * moved
                update = update * lr
                if skipped is not None:
                    update = update.masked_fill(skipped, 0.0)
                p.sub_(update)
