"""What the refiner policy sees: a task's prompt and features, and a control vector of training statistics.

One definition for training (envs/arc_prompt_env.py) and for evaluating a checkpoint
(efe_ray/rl/policy.py, which rebuilds the observation from the statistics saved with it):

    observation = [prompt (P,), control vector (6,), features (15,)]   float32

- prompt and features: efe_ray/observe.py (the task's canonical view, detached; no test output
  is read);
- control vector: episode progress, running EFE loss, last mask ratio, the curriculum's easy
  share, log learner steps, last accuracy, each roughly in [0, 1].

No Ray here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from efe_ray.data.task import Task
from efe_ray.learner import EFELearner
from efe_ray.observe import observe

CTRL_DIM = 6
"""Length of the control vector."""


@dataclass
class Controls:
    """The training statistics in the control vector (kept in checkpoint metadata as ``env_stats``)."""

    running_loss: float = 0.0
    """Exponential average (0.9) of the EFE loss over learner steps (the first step's loss at first)."""
    mask_ratio: float = 1.0
    """The last step's share of target cells predicted wrong."""
    acc_after: float = 0.0
    """The last step's canvas cell accuracy with the refined prompt."""
    episodes: int = 0
    """Episodes begun."""

    def update(self, metrics: dict[str, float], first_step: bool) -> None:
        """Fold in one learner step's metrics."""
        loss = metrics["efe_loss"]
        self.running_loss = loss if first_step else 0.9 * self.running_loss + 0.1 * loss
        self.mask_ratio, self.acc_after = metrics["mask_ratio"], metrics["acc_after"]

    def vector(self, progress: float, easy_share: float, learner_steps: int) -> np.ndarray:
        """(6,) float32 control vector."""
        return np.array([progress, self.running_loss / (1.0 + self.running_loss), self.mask_ratio, easy_share,
                         math.log10(1 + learner_steps) / 6.0, self.acc_after], dtype=np.float32)

    def stats(self, easy_share: float) -> dict[str, float]:
        """Plain floats for checkpoint metadata (with the curriculum's easy share)."""
        return {**{k: float(v) for k, v in asdict(self).items()}, "easy_share": float(easy_share)}

    @classmethod
    def from_stats(cls, stats: dict[str, float]) -> Controls:
        """The inverse of :meth:`stats` (missing entries keep their defaults)."""
        known = {k: stats[k] for k in ("running_loss", "mask_ratio", "acc_after") if k in stats}
        return cls(**known, episodes=int(stats.get("episodes", 0)))


def observation(learner: EFELearner, task: Task, ctrl: np.ndarray) -> np.ndarray:
    """(P + 6 + 15,) float32: [prompt, ``ctrl``, features] for ``task`` (reads the prompt back)."""
    prompt, feats = observe(learner, task)
    return assemble(prompt, ctrl, feats)


def assemble(prompt: np.ndarray, ctrl: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """(P + 6 + 15,) float32: [prompt, ``ctrl``, features]."""
    return np.concatenate([prompt, ctrl, feats]).astype(np.float32)
