"""The prompt refinement: an RL action on the unit cube -> a delta added to the prompt.

``delta = action_scale · (clip(action, -1, 1) @ basis) / sqrt(action_dim)``, where ``basis`` is a
fixed, seeded ``(action_dim, prompt_dim)`` matrix with orthonormal rows: a low-rank refinement whose
norm is at most ``action_scale``. The basis depends only on (action_dim, prompt_dim, seed), so an
evaluator rebuilds exactly the map a trial trained with.

The RL side hands the learner a numpy delta only; :func:`delta_tensor` turns it into a constant
tensor and refuses a torch tensor, which could carry the policy's graph (docs/design.md,
invariant 5).
"""

from __future__ import annotations

import numpy as np
import torch

from efe_ray.device import upload


class PromptRefiner:
    """Maps (action_dim,) actions to (prompt_dim,) prompt deltas."""

    def __init__(self, action_dim: int, prompt_dim: int, scale: float, seed: int = 0):
        if action_dim > prompt_dim:
            raise ValueError(f"env.action_dim={action_dim} exceeds prompt.prompt_dim={prompt_dim}")
        rng = np.random.default_rng(seed + 7919)
        q, _ = np.linalg.qr(rng.standard_normal((prompt_dim, action_dim)))  # (P, A), orthonormal columns
        self.basis = q.T.astype(np.float32)  # (A, P)
        self.scale = float(scale)
        self.action_dim = action_dim

    def delta(self, action: np.ndarray) -> np.ndarray:
        """(A,) action -> (P,) float32 delta."""
        a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)  # (A,)
        return (self.scale / np.sqrt(self.action_dim)) * (a @ self.basis)  # (P,)


def delta_tensor(delta: np.ndarray | None, rows: int, device: torch.device, *, pad_rows: int = 0) -> torch.Tensor | None:
    """``delta`` ((P,) or (rows, P), numpy) as a constant float32 (rows + pad_rows, P) tensor on
    ``device``, with ``pad_rows`` zero rows appended (views it does not refine); None for None."""
    if delta is None:
        return None
    if isinstance(delta, torch.Tensor):
        raise TypeError("delta must be a numpy array, not a torch.Tensor: the learner treats it as a constant "
                        "and never back-propagates into the RL policy (pass delta.detach().cpu().numpy())")
    d = upload(np.asarray(delta, dtype=np.float32), device)
    d = d.expand(rows, -1) if d.ndim == 1 else d  # (rows, P)
    return torch.cat([d, d.new_zeros(pad_rows, d.shape[-1])]) if pad_rows else d


def refinement_reward(acc_after: torch.Tensor, acc_before: torch.Tensor, reward_scale: float) -> torch.Tensor:
    """``reward_scale * (acc_after - acc_before)``: what the refinement gained in (canvas cell)
    accuracy over the unrefined prompt. 0-d tensors in and out: no host sync."""
    return reward_scale * (acc_after - acc_before)


def pull_term(prompt: torch.Tensor, refined: torch.Tensor, reward: torch.Tensor, reward_scale: float) -> torch.Tensor:
    """The RL term: ``max(reward, 0) / reward_scale * mean((prompt - refined.detach())²)``.

    It pulls the encoder's prompt (B, P) toward the refined prompt (B, P) in proportion to the
    reward the refinement earned, and is 0 without positive reward. A product, not a branch on
    the reward, so it needs no host sync. Its gradient reaches the prompt encoder only.
    """
    pull = reward.clamp_min(0.0) / max(reward_scale, 1e-8)
    return pull * (prompt.float() - refined.detach().float()).pow(2).mean()
