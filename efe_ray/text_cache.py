"""The learner's per-task cache of Qwen text embeddings.

Encoding a task's prompt text with Qwen is the learner's most expensive forward. A task's
embedding is recomputed, with gradient, every ``every``-th learner step on that task and kept,
detached, in between; rehearsal views read their tasks' cached embeddings (filled without gradient
the first time a task is seen). No Ray here.
"""

from __future__ import annotations

import torch

from efe_ray.data.batching import Batch, Sample
from efe_ray.models.prompt import QwenHybridPrompt

__all__ = ["TextCache"]


class TextCache(dict):
    """task id -> (P,) detached fp32 Qwen embedding of that task's prompt text."""

    def __init__(self, prompt: QwenHybridPrompt, every: int, items: dict | None = None) -> None:
        super().__init__(items or {})
        self.prompt, self.every = prompt, every

    def embed(self, batch: Batch, task_step: int) -> tuple[torch.Tensor | None, bool]:
        """(B, P) Qwen embedding of ``batch``'s views and whether it was computed (with gradient) now,
        on the task's ``task_step``-th step; between refreshes the cached one is used and no text is
        built. ``(None, False)`` without Qwen."""
        if self.prompt.qwen is None:
            return None, False
        if batch.task_id in self and task_step % self.every != 0:
            return self[batch.task_id].expand(len(batch.samples), -1), False
        emb = self.prompt.encode_text(batch.prompt_texts())  # (B, P)
        self[batch.task_id] = emb.detach().float().mean(0)
        return emb, True

    def lookup(self, task_id: str, sample: Sample) -> torch.Tensor:
        """A task's cached embedding (P,), encoded from ``sample`` without gradient if it has none yet."""
        if task_id not in self:
            with torch.no_grad():
                self[task_id] = self.prompt.encode_text([sample.prompt_text()])[0].float()
        return self[task_id]
