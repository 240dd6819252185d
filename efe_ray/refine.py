"""The prompt refinement: an RL action on the unit cube -> a delta added to the prompt.

``delta = action_scale · (clip(action, -1, 1) @ basis) / sqrt(action_dim)``, where ``basis`` is a
fixed, seeded ``(action_dim, prompt_dim)`` matrix with orthonormal rows: a low-rank refinement whose
norm is at most ``action_scale``. The basis depends only on (action_dim, prompt_dim, seed), so an
evaluator rebuilds exactly the map a trial trained with.
"""

from __future__ import annotations

import numpy as np


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
