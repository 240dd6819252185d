"""DeviceSampler: the training sampler whose views are drawn and built on the learner's device.

The same tasks, curriculum and rehearsal by grid size as the host's
:class:`~efe_ray.data.batching.TaskSampler` (it is one: the host picks the step's task and the
rehearsal tasks, vectorised, with the same numpy RNG), but the views themselves (query,
leave-one-out demonstrations, D8 transform, colour permutation or, with
``learner.colour_versions``, colour version) are drawn by a torch generator on the device from the
:class:`~efe_ray.data.store.TaskStore`, and their tensors are built there
(efe_ray/data/device_views.py). Nothing in a batch is read back: the canvas side is the largest
grid side of the batch's tasks, known on the host.

A :class:`DeviceBatch` offers the learner what a host :class:`~efe_ray.data.batching.Batch` does
(``task_id``, ``own``, ``size``, ``tensors``, ``task_ids``, ``versions``, ``prompt_texts``) plus the
rows of its views' tasks in the store and, for a character-level tokenizer, its prompts' token ids
built on the device. No Ray, no models here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from efe_ray.config import LearnerConfig
from efe_ray.data.augment import Augmentation, version_table
from efe_ray.data.batching import Batch, BatchTensors, Sample, TaskSampler, known_pairs
from efe_ray.data.device_views import CharIds, ViewDraw, draw_views, prompt_tokens, version_luts, view_tensors
from efe_ray.data.store import TaskStore
from efe_ray.data.task import Task
from efe_ray.device import upload

VIEW_STREAM = 0x76696577
"""Mixed into the seed of the view generator (see DeviceSampler)."""


def same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device ("cuda" is the current CUDA device, as "cuda:0" is in a
    process that sees one)."""
    def index(d: torch.device) -> int | None:
        return (torch.cuda.current_device() if d.index is None else d.index) if d.type == "cuda" else d.index
    return a.type == b.type and index(a) == index(b)


@dataclass(frozen=True, eq=False)
class DeviceBatch:
    """One learner step's views on the device: ``own`` views of ``task_id``, then the rehearsal views."""

    task_id: str
    """The task the step is on."""
    own: int
    """B: views of the step's task (the first B)."""
    rows_host: np.ndarray
    """(N,) int64: each view's task row in the store, on the host."""
    draw: ViewDraw
    """The views' random choices, on the device."""
    side: int
    """Canvas side S of the tensors."""
    store: TaskStore = field(repr=False)
    """Where the views come from."""
    tasks: list[Task] = field(repr=False)
    """The store's tasks, in row order (for the host's prompt texts)."""

    @property
    def size(self) -> int:
        """N = B + R: every view."""
        return len(self.rows_host)

    @property
    def rows(self) -> torch.Tensor:
        """(N,) long: each view's task row in the store, on the device."""
        return self.draw.rows

    def task_ids(self) -> list[str]:
        """The task id of every view (N)."""
        return [self.store.task_ids[r] for r in self.rows_host]

    def tensors(self, device: torch.device) -> BatchTensors:
        """The views' tensors (efe_ray/data/batching.py's shapes) on the store's device."""
        self._check_device(device)
        return view_tensors(self.store, self.draw, self.side)

    def versions(self, device: torch.device) -> torch.Tensor:
        """(N,) long: the colour version of every view (all 0 without versions), on the store's device."""
        self._check_device(device)
        return self.draw.version

    def _check_device(self, device: torch.device) -> None:
        if not same_device(torch.device(device), self.store.device):
            raise ValueError(f"the batch lives on {self.store.device}, not {device}")

    def _subset(self, index: list[int]) -> ViewDraw:
        at = upload(np.asarray(index, dtype=np.int64), self.store.device)
        d = self.draw
        return ViewDraw(d.rows[at], d.query[at], d.demos[at], d.demo_count[at], d.d8[at], d.colours[at], d.version[at])

    def prompt_tokens(self, index: list[int], ids: CharIds, max_tokens: int) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask"} (len(index), T) of the prompts of the views at ``index``,
        built on the device for a character-level tokenizer with ``ids``."""
        longest = int(self.store.text_host[self.rows_host[index]].max())
        tokens, mask = prompt_tokens(self.store, self._subset(index), ids, max_tokens, longest)
        return {"input_ids": tokens, "attention_mask": mask}

    def prompt_texts(self, index: list[int] | None = None) -> list[str]:
        """The prompt texts of the views at ``index`` (default: the own views), written on the host
        (for a tokenizer that is not character-level): one read of those views' draws."""
        index = list(range(self.own)) if index is None else index
        return [s.prompt_text() for s in self.samples(index)]

    def samples(self, index: list[int]) -> list[Sample]:
        """The views at ``index`` as host :class:`Sample` objects (reads their draws back)."""
        d = self._subset(index)
        query, demos, count = d.query.tolist(), d.demos.tolist(), d.demo_count.tolist()
        d8, colours, version = d.d8.tolist(), d.colours.tolist(), d.version.tolist()
        offset = self.store.offset.cpu().numpy()
        out = []
        for k, i in enumerate(index):
            task = self.tasks[self.rows_host[i]]
            pairs, start = known_pairs(task), int(offset[self.rows_host[i]])
            aug = Augmentation(d8[k], tuple(colours[k][:10]))
            q = pairs[query[k] - start]
            out.append(Sample(tuple(aug.apply_pair(pairs[p - start]) for p in demos[k][: count[k]]),
                              aug.apply(q.input), aug.apply(q.output), aug, version=version[k]))
        return out

    def host_batch(self) -> Batch:
        """The same views as a host :class:`Batch` (reads every draw back; for tests and checks)."""
        every = self.samples(list(range(self.size)))
        ids = self.task_ids()
        return Batch(self.task_id, tuple(every[: self.own]), tuple(zip(ids[self.own:], every[self.own:])), self.side)


class DeviceSampler(TaskSampler):
    """See the module docstring. ``device``: where the store and the view generator live."""

    def __init__(self, tasks: list[Task], cfg: LearnerConfig, side: int, device: torch.device | str = "cpu",
                 seed: int | None = None):
        super().__init__(tasks, cfg, side, seed)
        self.store = TaskStore.build(self.tasks, device)
        self.row = {t.task_id: i for i, t in enumerate(self.tasks)}
        # (num_tasks, V, 11) colour lookup tables of each task's versions, or None without versions
        self.version_luts = (version_luts(version_table(self.store.task_ids, cfg.seed, cfg.colour_versions),
                                          self.store.device) if cfg.colour_versions else None)
        self.generator = torch.Generator(device=self.store.device)
        # A stream of its own: seeded like the host RNG, the generator would repeat torch's global
        # stream, which initialised the learner's weights with the same seed.
        base = cfg.seed if seed is None else seed
        entropy = base.entropy if isinstance(base, np.random.SeedSequence) else int(base)
        self.generator.manual_seed(int(np.random.SeedSequence([entropy, VIEW_STREAM]).generate_state(1)[0]))

    def batch(self, task: Task, side: int | None = None) -> DeviceBatch:
        """A step's batch on ``task``: ``batch_size`` views of it and the rehearsal views, drawn on
        the device. ``side``: the canvas side (default: the largest grid side of the batch's tasks)."""
        rows = np.concatenate([np.full(self.cfg.batch_size, self.row[task.task_id], dtype=np.int64),
                               np.asarray(self.rehearsal_tasks(task), dtype=np.int64)])
        need = int(self.store.side_host[rows].max())
        side = need if side is None else side
        if not need <= side <= self.side:
            raise ValueError(f"batch canvas side {side} must lie in {need}..{self.side} (the batch's largest "
                             f"grid .. agent.canvas)")
        draw = draw_views(self.store, upload(rows, self.store.device), self.generator,
                          augment=self.cfg.augment, colours=self.cfg.augment_colours, versions=self.version_luts)
        return DeviceBatch(task.task_id, self.cfg.batch_size, rows, draw, side, self.store, self.tasks)

    def state_dict(self) -> dict:
        """The host RNG, the curriculum's position and the device generator's state."""
        return {**super().state_dict(), "view_generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (a host sampler's state leaves the device generator as it is)."""
        super().load_state_dict(state)
        if "view_generator" in state:
            self.generator.set_state(state["view_generator"].cpu())
