"""TaskStore: every known pair of every training task in one tensor on the learner's device.

Training draws its views on the device (efe_ray/data/device_views.py); this is what they are
drawn from. Built once per trial from the task list:

- ``grids`` (num_pairs, 2, 30, 30) uint8: each pair's input (0) and output (1), padded with
  ``OUTSIDE`` (10) beyond the grid;
- ``hw`` (num_pairs, 2, 2) long: the height and width of each input and output;
- ``stats`` (num_pairs, len(STATS)) float64: the per-pair statistics the 15 task features are
  means of (efe_ray/data/features.py), computed here once with the same numpy code paths;
- ``offset`` / ``count`` (num_tasks,) long: where a task's pairs start in ``grids`` and how many
  it has (its known pairs: demonstrations, then answered tests, as
  :func:`~efe_ray.data.batching.known_pairs` orders them);
- host copies of ``count`` and of each task's ``side`` (the largest side of any of its grids), so
  that the host can pick tasks and a canvas side without reading the device.

No Ray, no models here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from efe_ray.data.batching import MAX_DEMOS, known_pairs
from efe_ray.data.canvas import OUTSIDE
from efe_ray.data.features import PAIR_STATS, pair_stats
from efe_ray.data.task import MAX_SIDE, Pair, Task

STATS = (*PAIR_STATS, "side", "in_side")
"""Columns of :attr:`TaskStore.stats`: the per-demonstration terms of the features
(efe_ray/data/features.py), then the pair's largest grid side and its input's."""
COL = {name: i for i, name in enumerate(STATS)}
"""Column index of each statistic."""


def store_stats(pair: Pair) -> list[float]:
    """The :data:`STATS` row of one answered pair."""
    return [*pair_stats(pair), max(*pair.input.shape, *pair.output.shape), max(pair.input.shape)]


def text_bounds(hw: np.ndarray, offset: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(num_tasks,) a bound on each task's prompt text length: its longest query input and its
    ``MAX_DEMOS`` longest pairs as demonstrations. A grid's text has h * (w + 1) - 1 characters,
    at most h * w + max(h, w) - 1 whichever way it is turned; each demonstration adds 8 literal
    characters, the query 2."""
    chars = hw[..., 0] * hw[..., 1] + hw.max(-1) - 1  # (num_pairs, 2)
    out = []
    for start, n in zip(offset, count):
        demo = np.sort(chars[start: start + n].sum(1) + 8)[::-1][:MAX_DEMOS].sum()
        out.append(demo + 2 + chars[start: start + n, 0].max())
    return np.array(out, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class TaskStore:
    """See the module docstring. Build with :meth:`build`."""

    task_ids: tuple[str, ...]
    """The tasks, in row order."""
    grids: torch.Tensor
    """(num_pairs, 2, 30, 30) uint8, OUTSIDE-padded."""
    hw: torch.Tensor
    """(num_pairs, 2, 2) long: (height, width) of input and output."""
    stats: torch.Tensor
    """(num_pairs, len(STATS)) float64."""
    offset: torch.Tensor
    """(num_tasks,) long: first pair of each task."""
    count: torch.Tensor
    """(num_tasks,) long: known pairs of each task."""
    count_host: np.ndarray
    """(num_tasks,) int64: ``count`` on the host."""
    side_host: np.ndarray
    """(num_tasks,) int64: each task's largest grid side, on the host."""
    text_host: np.ndarray
    """(num_tasks,) int64: a bound on the length in characters of any prompt text of a view of each
    task, under any transform (efe_ray/data/serialize.py), on the host."""

    @classmethod
    def build(cls, tasks: list[Task], device: torch.device | str = "cpu") -> TaskStore:
        """Store the known pairs of ``tasks`` (each needs at least two) on ``device``."""
        pairs, counts = [], []
        for t in tasks:
            known = known_pairs(t)
            if len(known) < 2:
                raise ValueError(f"task {t.task_id!r} ({t.source}) has fewer than 2 known pairs: no "
                                 "leave-one-out view can be drawn from it")
            pairs.extend(known)
            counts.append(len(known))
        grids = np.full((len(pairs), 2, MAX_SIDE, MAX_SIDE), OUTSIDE, dtype=np.uint8)
        hw = np.zeros((len(pairs), 2, 2), dtype=np.int64)
        for i, p in enumerate(pairs):
            for io, g in enumerate((p.input, p.output)):
                grids[i, io, : g.shape[0], : g.shape[1]] = g
                hw[i, io] = g.shape
        stats = np.array([store_stats(p) for p in pairs], dtype=np.float64)
        count = np.array(counts, dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        side = np.maximum.reduceat(stats[:, COL["side"]], offset).astype(np.int64)  # each task's largest
        device = torch.device(device)
        return cls(tuple(t.task_id for t in tasks), torch.from_numpy(grids).to(device), torch.from_numpy(hw).to(device),
                   torch.from_numpy(stats).to(device), torch.from_numpy(offset).to(device),
                   torch.from_numpy(count).to(device), count, side, text_bounds(hw, offset, count))

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.grids.device

    @property
    def max_pairs(self) -> int:
        """The most known pairs of any task."""
        return int(self.count_host.max())

    def __len__(self) -> int:
        return len(self.task_ids)
