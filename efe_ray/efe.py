"""The learner's loss for per-cell grid predictions, as small pure functions named after their maths.

Per cell the agent gives a predictive distribution q(o) over ``C`` classes (colours 0..9 and
"outside" the grid). The preferred outcomes are the target, as log-preferences ln P̃(o): the
one-hot target smoothed by ε, ``P̃ = (1 - ε)·onehot + ε/C``.

The terms (all in nats, per cell), each one function below:

- :func:`kl_divergence` ``(q, P̃)``  = KL[q ‖ P̃] = Σ_o q(o) (ln q(o) − ln P̃(o))   (active inference's *risk*)
- :func:`entropy` ``(q)``            = H[q]      = −Σ_o q(o) ln q(o)
- :func:`cross_entropy` ``(q, P̃)``  = H[q, P̃]  = −Σ_o q(o) ln P̃(o)
- :func:`kl_divergence` ``(P̃, q)``  = KL[P̃ ‖ q] (the forward divergence; cross-entropy H[P̃, q] less
  the constant H[P̃])

Identities (tests/test_efe.py checks them against a loop reference):

- H[q, P̃] = KL[q ‖ P̃] + H[q].
- Active inference's expected free energy of predicted outcomes is G = risk + expected ambiguity
  = KL[q(o) ‖ P̃(o)] + E_q(s) H[P(o|s)]. Here the hidden state *is* the cell's class (a per-cell
  classifier: the likelihood P(o|s) is the identity), so every H[P(o|s)] is 0 and G = KL[q ‖ P̃].
  H[q] is not an ambiguity; it is the entropy of the prediction.
- The project's "EFE loss" (``learner.objective = "efe"``) is therefore the cross-entropy
  H[q, P̃] = G + H[q]: the expected free energy plus an entropy term that rewards confident
  predictions.

Sign convention: every term is a cost, lower is better, and we minimise it. pymdp scores policies
with −G (higher is better).

On its own H[q, P̃] saturates where q is confidently wrong: its gradient with respect to the
logits vanishes as q(target) → 0. The default objective therefore adds KL[P̃ ‖ q] (the "accuracy"
part of the variational free energy; what the original script's ``kl_div`` on class targets
computed):

- ``"forward_kl+efe"`` (default): KL[P̃ ‖ q] + H[q, P̃]
- ``"efe"``: H[q, P̃] only

Each sample's mean over its scored cells is multiplied by the hard-cell weight
``0.5 + 0.5·mask_ratio``, where ``mask_ratio`` (no gradient) is the fraction of the sample's
target cells predicted wrong.
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


def kl_divergence(log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL[a ‖ b] = Σ a (ln a − ln b) per cell. log_a, log_b: (..., C) log-probabilities. Returns (...)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def entropy(log_q: torch.Tensor) -> torch.Tensor:
    """H[q] = −Σ q ln q per cell. log_q: (..., C). Returns (...)."""
    return -(log_q.exp() * log_q).sum(-1)


def cross_entropy(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """H[q, p] = −Σ q ln p per cell. log_q, log_p: (..., C). Returns (...)."""
    return -(log_q.exp() * log_p).sum(-1)


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
    """The loss and its parts; every field but ``loss`` is a detached scalar tensor (means over
    the scored cells of the batch)."""

    loss: torch.Tensor
    """Scalar training loss (with gradient)."""
    cross_entropy: torch.Tensor
    """Mean H[q, P̃] (the "efe" objective's per-cell cost)."""
    risk: torch.Tensor
    """Mean KL[q ‖ P̃]."""
    entropy: torch.Tensor
    """Mean H[q]."""
    forward_kl: torch.Tensor
    """Mean KL[P̃ ‖ q]."""
    mask_ratio: torch.Tensor
    """Mean fraction of target cells predicted wrong."""
    per_sample: torch.Tensor
    """(B,) each sample's loss (with gradient): ``loss`` is their mean."""


def efe_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    loss_mask: torch.Tensor,
    target_mask: torch.Tensor,
    *,
    eps: float = 0.1,
    objective: Objective = "forward_kl+efe",
) -> EFETerms:
    """The training loss (see the module docstring).

    logits: (B, H, W, C) any float dtype (computed in float32 here).
    target: (B, H, W) long class indices.
    loss_mask: (B, H, W) cells that enter the loss (1) or not (0).
    target_mask: (B, H, W) cells of the target grid proper (for mask_ratio).
    """
    log_q = F.log_softmax(logits.float(), dim=-1)  # (B, H, W, C)
    log_p = log_preferences(target, logits.shape[-1], eps)  # (B, H, W, C)
    ce = cross_entropy(log_q, log_p)  # (B, H, W)
    fkl = kl_divergence(log_p, log_q)  # (B, H, W)
    if objective == "forward_kl+efe":
        per_cell = fkl + ce
    elif objective == "efe":
        per_cell = ce
    else:
        raise ValueError(f"unknown objective {objective!r}; use 'forward_kl+efe' or 'efe'")
    with torch.no_grad():
        mask_ratio = masked_mean((logits.argmax(-1) != target).float(), target_mask)  # (B,)
    per_sample = masked_mean(per_cell, loss_mask) * hard_cell_weight(mask_ratio)  # (B,)
    with torch.no_grad():
        parts = (ce, kl_divergence(log_q, log_p), entropy(log_q), fkl)
        terms = [masked_mean(t, loss_mask).mean() for t in parts]
    return EFETerms(per_sample.mean(), *terms, mask_ratio.mean(), per_sample)
