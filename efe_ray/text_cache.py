"""The learner's per-task Qwen text embeddings, in one table on the device.

Encoding a task's prompt text with Qwen is the learner's most expensive forward. A task's
embedding is recomputed, with gradient, every ``every``-th learner step on that task and kept,
detached, in between; rehearsal views read their tasks' rows of the table with one gather. Rows
a batch needs that were never filled are filled together, in one batched pass without gradient,
from those views' own prompts. Which rows are filled is known on the host (no device read).

Row ``i`` belongs to the ``i``-th task id the cache was made with (the learner's training tasks,
in the order of its task store and task-embedding table); other ids get rows after those. No Ray
here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

from efe_ray.device import upload
from efe_ray.models.prompt import QwenHybridPrompt

__all__ = ["TextCache"]


class TextCache:
    """task id -> (P,) detached fp32 Qwen embedding of that task's prompt text (a dict-like view of
    the table: ``in``, ``[]``, ``get``, ``keys``, ``items`` and ``len`` cover the filled rows)."""

    def __init__(self, prompt: QwenHybridPrompt, every: int, items: dict | None = None,
                 task_ids: Iterable[str] = ()) -> None:
        self.prompt, self.every = prompt, every
        self.index: dict[str, int] = {}
        self.ids: list[str] = []  # row -> task id
        self.table = torch.zeros(0, prompt.cfg.prompt_dim, device=prompt.numeric[0].weight.device)  # (rows, P)
        self.filled = np.zeros(0, dtype=bool)
        self.order: list[str] = []  # filled ids, in the order they were filled
        self._stores: dict = {}  # task store -> its tasks' rows, (numpy, device)
        self.rows(list(task_ids))
        for k, v in (items or {}).items():
            self[k] = v

    # -- rows ----------------------------------------------------------------------------------
    def rows(self, task_ids: list[str]) -> np.ndarray:
        """(len(task_ids),) rows of ``task_ids`` (new ids get new rows, unfilled)."""
        for t in task_ids:
            if t not in self.index:
                self.index[t] = len(self.ids)
                self.ids.append(t)
        if len(self.index) > self.table.shape[0]:
            grown = self.table.new_zeros(max(len(self.index), 2 * self.table.shape[0]), self.table.shape[1])
            grown[: self.table.shape[0]] = self.table
            self.table = grown
            self.filled = np.concatenate([self.filled, np.zeros(grown.shape[0] - self.filled.shape[0], dtype=bool)])
        return np.array([self.index[t] for t in task_ids], dtype=np.int64)

    def store_rows(self, store) -> tuple[np.ndarray, torch.Tensor]:
        """(num_tasks,) rows of the tasks of ``store`` (anything with ``task_ids``), on the host and on
        the table's device: a lookup table from store rows to these rows, made once per store."""
        if store not in self._stores:
            rows = self.rows(list(store.task_ids))
            self._stores[store] = (rows, upload(rows, self.table.device))
        return self._stores[store]

    def due(self, task_id: str, task_step: int) -> bool:
        """Whether a step on ``task_id``, its ``task_step``-th, recomputes the embedding with gradient."""
        return self.prompt.qwen is not None and (task_id not in self or task_step % self.every == 0)

    def store(self, row: int, emb: torch.Tensor) -> None:
        """Keep (P,) ``emb``, detached, in ``row``."""
        self.table[row] = emb.detach().float()
        if not self.filled[row]:
            self.filled[row] = True
            self.order.append(self.ids[row])

    def fill(self, rows: np.ndarray, encode) -> None:
        """Fill those of ``rows`` not filled yet in one batched pass without gradient:
        ``encode(positions) -> (len(positions), P)`` encodes the views at those positions of ``rows``."""
        missing = [i for i, r in enumerate(rows) if not self.filled[r]]
        first = list({int(rows[i]): i for i in reversed(missing)}.values())  # one view per missing row
        if first:
            with torch.no_grad():
                emb = encode(first)  # (K, P)
            for k, i in enumerate(first):
                self.store(int(rows[i]), emb[k])

    # -- the dict-like view of the filled rows ----------------------------------------------------
    def __contains__(self, task_id: object) -> bool:
        return task_id in self.index and bool(self.filled[self.index[task_id]])

    def __getitem__(self, task_id: str) -> torch.Tensor:
        if task_id not in self:
            raise KeyError(task_id)
        return self.table[self.index[task_id]]

    def __setitem__(self, task_id: str, emb: torch.Tensor) -> None:
        self.store(int(self.rows([task_id])[0]), emb.to(self.table.device))

    def get(self, task_id: str, default=None):
        return self[task_id] if task_id in self else default

    def keys(self):
        return dict.fromkeys(self.order).keys()

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return ((t, self.table[self.index[t]]) for t in self.order)

    def __len__(self) -> int:
        return len(self.order)
