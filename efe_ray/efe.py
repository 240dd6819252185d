"""Expected Free Energy loss for per-cell grid predictions, as small pure functions.

Per cell the agent gives a predictive distribution q(o) over ``C`` classes (colours 0..9 and
"outside" the grid). The preferred outcomes are the target, as log-preferences ln P̃(o): the
one-hot target smoothed by ε, ``P̃ = (1 - ε)·onehot + ε/C``.

Terms (all in nats, per cell):

- risk       = KL[q ‖ P̃]           = Σ_o q(o) (ln q(o) − ln P̃(o))
- ambiguity  = H[q]                = −Σ_o q(o) ln q(o)   (expected entropy of the prediction)
- EFE        = risk + ambiguity    = −Σ_o q(o) ln P̃(o)

Sign convention: EFE is a cost, lower is better, and we minimise it. pymdp scores policies with
the negative EFE (−G, higher is better); our ``efe`` is its G.

On its own EFE saturates where q is confidently wrong: its gradient with respect to the logits
vanishes as q(target) → 0. The default objective therefore adds the "accuracy" part of the
variational free energy, the forward divergence KL[P̃ ‖ q] (cross-entropy up to a constant, which
is what the original script's ``kl_div`` on class targets computed):

- ``"forward_kl+efe"`` (default): KL[P̃ ‖ q] + risk + ambiguity
- ``"efe"``: risk + ambiguity only

Each sample's mean over its cells is multiplied by the hard-cell weight ``0.5 + 0.5·mask_ratio``,
where ``mask_ratio`` (no gradient) is the fraction of the sample's target cells predicted wrong.
The learning test measures both objectives (tests/test_learning.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

Objective = str  # "forward_kl+efe" | "efe"


def log_preferences(target: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    """ln P̃: the smoothed one-hot target.

    target: (B, H, W) long class indices. Returns (B, H, W, C) float32 log-probabilities.
    """
    if target.dtype != torch.long:
        raise TypeError(f"targets must be long class indices, got {target.dtype}")
    onehot = F.one_hot(target, num_classes).float()  # (B, H, W, C)
    return torch.log((1.0 - eps) * onehot + eps / num_classes)


def risk(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL[q ‖ P̃] per cell. log_q, log_p: (..., C). Returns (...)."""
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def ambiguity(log_q: torch.Tensor) -> torch.Tensor:
    """H[q] per cell. log_q: (..., C). Returns (...)."""
    return -(log_q.exp() * log_q).sum(-1)


def forward_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL[P̃ ‖ q] per cell (the "accuracy" part of free energy). log_q, log_p: (..., C). Returns (...)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def hard_cell_weight(mask_ratio: torch.Tensor) -> torch.Tensor:
    """0.5 + 0.5·mask_ratio, elementwise. mask_ratio: (B,) in [0, 1]."""
    return 0.5 + 0.5 * mask_ratio


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over the cells where mask is 1, per sample. x, mask: (B, H, W). Returns (B,)."""
    mask = mask.to(x.dtype)
    return (x * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


def canvas_cell_accuracy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Right canvas cells / masked canvas cells, pooled over the batch, as a 0-d tensor (no host sync).

    logits: (B, H, W, C); target: (B, H, W) long; mask: (B, H, W), 1 on the cells that count.
    A canvas measure for training: it compares cell by cell on the canvas, whatever size the
    prediction would read off as (held-out scores use efe_ray.evaluation.scoring instead).
    """
    right = (logits.argmax(-1) == target).float() * mask
    return right.sum() / mask.sum().clamp_min(1.0)


@dataclass
class EFETerms:
    """The loss and its parts; every field but ``loss`` is a detached scalar tensor."""

    loss: torch.Tensor
    """Scalar training loss (with gradient)."""
    efe: torch.Tensor
    """Mean EFE (risk + ambiguity) over scored cells."""
    risk: torch.Tensor
    """Mean risk over scored cells."""
    ambiguity: torch.Tensor
    """Mean ambiguity over scored cells."""
    forward_kl: torch.Tensor
    """Mean KL[P̃ ‖ q] over scored cells."""
    mask_ratio: torch.Tensor
    """Mean fraction of target cells predicted wrong."""


def efe_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    loss_mask: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    eps: float = 0.1,
    objective: Objective = "forward_kl+efe",
) -> EFETerms:
    """The EFE training loss.

    logits: (B, H, W, C) any float dtype (computed in float32 here).
    target: (B, H, W) long class indices.
    loss_mask: (B, H, W) cells that enter the loss (1) or not (0).
    target_mask: (B, H, W) cells of the target grid proper (for mask_ratio).
    """
    log_q = F.log_softmax(logits.float(), dim=-1)  # (B, H, W, C)
    log_p = log_preferences(target, logits.shape[-1], eps)  # (B, H, W, C)
    r = risk(log_q, log_p)  # (B, H, W)
    a = ambiguity(log_q)  # (B, H, W)
    fkl = forward_kl(log_q, log_p)  # (B, H, W)
    if objective == "forward_kl+efe":
        per_cell = fkl + r + a
    elif objective == "efe":
        per_cell = r + a
    else:
        raise ValueError(f"unknown objective {objective!r}; use 'forward_kl+efe' or 'efe'")
    with torch.no_grad():
        wrong = (logits.argmax(-1) != target).float()  # (B, H, W)
        mask_ratio = masked_mean(wrong, target_mask)  # (B,)
    per_sample = masked_mean(per_cell, loss_mask) * hard_cell_weight(mask_ratio)  # (B,)
    with torch.no_grad():
        terms = [masked_mean(t, loss_mask).mean() for t in (r + a, r, a, fkl)]
    return EFETerms(per_sample.mean(), *terms, mask_ratio.mean())
