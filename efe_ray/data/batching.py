"""From training tasks to a learner step's inputs: samples, curriculum, rehearsal, masks, tensors.

A :class:`TaskSampler` holds the task list, the curriculum and the numpy RNG that draws everything
random about training data. For one step on a task, :meth:`TaskSampler.batch` draws

- ``learner.batch_size`` leave-one-out views of the task: one known pair is the query, up to
  :data:`MAX_DEMOS` of the others are the demonstrations, all under one random augmentation
  per view (``learner.augment``); with ``learner.colour_versions`` (V), its colour permutation is
  one of the task's V fixed ones (efe_ray/data/augment.py), drawn uniformly, and the view carries
  that version, which picks its row of the task table;
- ``learner.rehearsal`` single views of other tasks of the list, drawn uniformly (from the
  ``learner.rehearsal_window`` tasks nearest in grid size, when set), so that an episode of steps
  on one task does not overwrite what was learned on the others;

and returns them as a :class:`Batch`. The batch builds its tensors only when asked
(:meth:`Batch.tensors`), so that the learner can queue the prompt encoder's GPU kernels first
and let them run while the host builds the rest.

Tensors of a batch of ``N = B + R`` views on a canvas of side ``S`` (by default the largest
:func:`view_side` of the batch: no larger than it needs to be; at most ``agent.canvas``):

- ``canvas`` (N, S, S) long: the query inputs, padded with ``OUTSIDE`` (10);
- ``target`` (N, S, S) long: the query outputs, padded the same way;
- ``loss_mask`` (N, S, S) float: the weight of each cell in the loss: 1 on the target's cells and a
  one-cell border of ``OUTSIDE`` around the larger of input and output (where the output ends),
  :data:`FAR_WEIGHT` on the rest of the square of side :func:`view_side` (the view's largest
  grid: ``OUTSIDE`` there too), 0 beyond. Prediction scores whole answers over that square, whose
  side it knows from the demonstrations and the query input (efe_ray/evaluation/candidates.py);
- ``target_mask`` (N, S, S) float: the target's own cells;
- ``features`` (N, 15) float: the numeric task features of each view's demos and query input;
- ``view`` (N,) long: the D8 transform each view is seen under (0 without augmentation).

A view's target (its query output) is never part of its demonstrations, its prompt text or its
features (docs/design.md, invariant 1).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from efe_ray.config import LearnerConfig
from efe_ray.data.augment import Augmentation, colour_versions
from efe_ray.data.features import swap_axes, task_features
from efe_ray.data.serialize import prompt_text
from efe_ray.data.task import Pair, Task
from efe_ray.device import upload
from efe_ray.data.canvas import to_canvas

MAX_DEMOS = 4
"""At most this many demonstrations go into one prompt."""
FAR_WEIGHT = 0.1
"""Loss weight of the ``OUTSIDE`` cells of a view's square beyond the target's border: learned, but
not allowed to drown the target's cells where the output is much smaller than the square."""
FEATURE_CACHE_SIZE = 1 << 14
"""Views whose features the sampler keeps (about 600 bytes each, 10 MB at most): enough for every
view of ARC-sized tasks; a task with 24 pairs has over 200,000, which must not all stay."""

@dataclass(frozen=True, eq=False)
class Sample:
    """One (demonstrations, query) view of a task, as the models see it (after augmentation)."""

    demos: tuple[Pair, ...]
    """Demonstration pairs (augmented)."""
    query: np.ndarray
    """Query input (augmented), (H, W)."""
    target: np.ndarray | None
    """Query output (augmented) where known, (H', W')."""
    aug: Augmentation
    """The augmentation applied; ``aug.invert`` undoes it on a prediction."""
    features: np.ndarray | None = None
    """Its ``(15,)`` numeric features where already known (they depend on the augmentation only
    through a transpose: efe_ray/data/features.py); computed from the view when None."""
    version: int = 0
    """Its task's colour version (``learner.colour_versions``): ``aug.colours`` is that version's
    permutation; 0 (the identity colours) without versions."""

    def prompt_text(self) -> str:
        """The text the prompt encoder reads: the demonstrations and the query input."""
        return prompt_text(self.demos, self.query)

    @property
    def side(self) -> int:
        """:func:`view_side` of this view (its target included)."""
        return view_side(self.demos, self.query, self.target)


def view_side(demos: tuple[Pair, ...], query: np.ndarray, target: np.ndarray | None = None) -> int:
    """The side of the square that holds every grid of a view: its demonstrations, its query input
    and, where known, its target. The loss covers this square; prediction reads it."""
    grids = [g for p in demos for g in (p.input, p.output) if g is not None] + [query]
    if target is not None:
        grids.append(target)
    return max(max(g.shape) for g in grids)


def known_pairs(task: Task) -> tuple[Pair, ...]:
    """Every pair of the task whose output is known (demonstrations and answered tests)."""
    return task.train + tuple(p for p in task.test if p.output is not None)


def task_difficulty(task: Task) -> float:
    """A cheap difficulty score: output cells, doubled where the output size differs from the input."""
    pairs = known_pairs(task)
    cells = np.mean([p.output.size for p in pairs])
    resized = np.mean([p.output.shape != p.input.shape for p in pairs])
    return float(cells * (1.0 + resized))


class Curriculum:
    """Easy-task share ``first`` during the first epoch, ``later`` after; an epoch = len(tasks) draws."""

    def __init__(self, tasks: list[Task], first: float, later: float):
        self.tasks = tasks
        self.first, self.later = first, later
        scores = np.array([task_difficulty(t) for t in tasks])
        median = float(np.median(scores))
        self.easy = [i for i, s in enumerate(scores) if s <= median]
        self.hard = [i for i, s in enumerate(scores) if s > median] or self.easy
        self.draws = 0

    @property
    def epoch(self) -> int:
        """Completed passes over the task list."""
        return self.draws // len(self.tasks)

    @property
    def easy_share(self) -> float:
        """The current probability of drawing an easy task."""
        return self.first if self.epoch == 0 else self.later

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw the next task."""
        pool = self.easy if rng.random() < self.easy_share else self.hard
        self.draws += 1
        return self.tasks[int(pool[rng.integers(len(pool))])]


@dataclass(frozen=True, eq=False)
class BatchTensors:
    """A batch's tensors on one device (shapes in the module docstring)."""

    canvas: torch.Tensor
    """(N, S, S) long query inputs."""
    target: torch.Tensor
    """(N, S, S) long query outputs."""
    loss_mask: torch.Tensor
    """(N, S, S) float: target cells plus the OUTSIDE border."""
    target_mask: torch.Tensor
    """(N, S, S) float: target cells."""
    features: torch.Tensor
    """(N, 15) float numeric task features."""
    view: torch.Tensor
    """(N,) long: the D8 transform of each view."""


@dataclass(frozen=True, eq=False)
class Batch:
    """One learner step's views: ``samples`` of task ``task_id`` first, then ``rehearsal``."""

    task_id: str
    """The task the step is on (the key of its cached prompt embedding and step count)."""
    samples: tuple[Sample, ...]
    """The task's own leave-one-out views (B)."""
    rehearsal: tuple[tuple[str, Sample], ...]
    """(task id, view) of other tasks (R)."""
    side: int
    """Canvas side S of the tensors."""

    @property
    def own(self) -> int:
        """B: views of the step's task."""
        return len(self.samples)

    @property
    def size(self) -> int:
        """N = B + R: every view."""
        return len(self.samples) + len(self.rehearsal)

    def views(self) -> list[Sample]:
        """Every view (N): the task's own, then the rehearsal views."""
        return list(self.samples) + [s for _, s in self.rehearsal]

    def prompt_texts(self, index: list[int] | None = None) -> list[str]:
        """Prompt texts of the views at positions ``index`` (default: the task's own views, B)."""
        every = self.views()
        return [every[i].prompt_text() for i in (range(len(self.samples)) if index is None else index)]

    def task_ids(self) -> list[str]:
        """The task id of every view (N): the task's own, then each rehearsal view's."""
        return [self.task_id] * len(self.samples) + [k for k, _ in self.rehearsal]

    def versions(self, device: torch.device) -> torch.Tensor:
        """(N,) long on ``device``: the colour version of every view (all 0 without versions)."""
        return upload(np.array([s.version for s in self.views()], dtype=np.int64), device)

    def tensors(self, device: torch.device) -> BatchTensors:
        """The batch's tensors on ``device`` (pinned, non-blocking uploads on CUDA)."""
        every = self.views()
        loss_mask = np.zeros((len(every), self.side, self.side), dtype=np.float32)  # (N, S, S)
        target_mask = np.zeros_like(loss_mask)
        for i, s in enumerate(every):
            (ht, wt), (hi, wi) = s.target.shape, s.query.shape
            loss_mask[i, : s.side, : s.side] = FAR_WEIGHT
            loss_mask[i, : max(ht, hi) + 1, : max(wt, wi) + 1] = 1.0
            target_mask[i, :ht, :wt] = 1.0
        feats = np.stack([s.features if s.features is not None else task_features(s.demos, s.query)
                          for s in every]).astype(np.float32)  # (N, 15)
        return BatchTensors(
            canvas=upload(np.stack([to_canvas(s.query, self.side) for s in every]), device),
            target=upload(np.stack([to_canvas(s.target, self.side) for s in every]), device),
            loss_mask=upload(loss_mask, device), target_mask=upload(target_mask, device),
            features=upload(feats, device),
            view=upload(np.array([s.aug.d8 for s in every], dtype=np.int64), device))


class TaskSampler:
    """Tasks, curriculum and the numpy RNG of training data: tasks and batches of views."""

    def __init__(self, tasks: list[Task], cfg: LearnerConfig, side: int,
                 seed: int | np.random.SeedSequence | None = None):
        """``side``: the agent's canvas (the default side of a batch); ``seed``: ``cfg.seed`` if None."""
        if not tasks:
            raise ValueError("a task sampler needs at least one task")
        for t in tasks:
            if len(known_pairs(t)) < 2:
                raise ValueError(f"task {t.task_id!r} ({t.source}) has fewer than 2 known pairs")
        self.tasks, self.cfg, self.side = list(tasks), cfg, side
        self.rng = np.random.default_rng(cfg.seed if seed is None else seed)
        self.curriculum = Curriculum(self.tasks, cfg.easy_share_first_epoch, cfg.easy_share_later)
        sides = [max(view_side(known_pairs(t), t.train[0].input), 1) for t in self.tasks]
        self.by_size = sorted(range(len(self.tasks)), key=lambda i: (sides[i], self.tasks[i].task_id))
        self.rank = {self.tasks[i].task_id: r for r, i in enumerate(self.by_size)}  # id -> place in by_size
        self._features: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (task id, query, demos) -> features
        self._versions: dict[str, np.ndarray] = {}  # task id -> (V, 10) colour versions

    def task_versions(self, task_id: str) -> np.ndarray:
        """(V, 10) int64: the fixed colour permutations of ``task_id`` (``learner.colour_versions``
        of them, from ``learner.seed``; efe_ray/data/augment.py), computed once per task."""
        if task_id not in self._versions:
            self._versions[task_id] = colour_versions(task_id, self.cfg.seed, self.cfg.colour_versions)
        return self._versions[task_id]

    def augmentation(self, task_id: str) -> tuple[Augmentation, int]:
        """(augmentation, colour version) of one view of ``task_id``: a random D8 transform and a
        random colour permutation, or with ``learner.colour_versions`` one of the task's versions
        drawn uniformly; the identity (version 0) without ``learner.augment``."""
        cfg = self.cfg
        if not cfg.augment:
            return Augmentation.identity(), 0
        aug = Augmentation.random(self.rng, colours=cfg.augment_colours and not cfg.colour_versions)
        if not cfg.colour_versions:
            return aug, 0
        version = int(self.rng.integers(cfg.colour_versions))
        return Augmentation(aug.d8, tuple(int(c) for c in self.task_versions(task_id)[version])), version

    def sample_task(self) -> Task:
        """The next training task, from the curriculum."""
        return self.curriculum.sample(self.rng)

    def make_samples(self, task: Task, n: int) -> list[Sample]:
        """``n`` leave-one-out views of ``task``, each under its own random augmentation."""
        pairs = known_pairs(task)
        out = []
        for _ in range(n):
            q = int(self.rng.integers(len(pairs)))
            others = [p for i, p in enumerate(pairs) if i != q]
            order = self.rng.permutation(len(others))[:MAX_DEMOS]
            aug, version = self.augmentation(task.task_id)
            demos = tuple(aug.apply_pair(others[i]) for i in order)
            key = (task.task_id, q, frozenset(int(i) for i in order))  # features ignore the demos' order
            raw = self._cached_features(key, [others[i] for i in order], pairs[q].input)
            feats = swap_axes(raw) if aug.swaps_axes else raw
            out.append(Sample(demos, aug.apply(pairs[q].input), aug.apply(pairs[q].output), aug, feats, version))
        return out

    def _cached_features(self, key: tuple, demos: list[Pair], query: np.ndarray) -> np.ndarray:
        """The unaugmented features of a view, from a cache of at most :data:`FEATURE_CACHE_SIZE`
        entries that drops the least recently used (a task with many pairs has many views)."""
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        self._features[key] = feats = task_features(demos, query)
        if len(self._features) > FEATURE_CACHE_SIZE:
            self._features.popitem(last=False)
        return feats

    def rehearsal_tasks(self, task: Task) -> list[int]:
        """Indices (into ``tasks``) of the ``rehearsal`` tasks of a step on ``task``: other tasks of
        the list, drawn uniformly from all of them or, with ``rehearsal_window``, from that many
        tasks nearest in grid size to ``task``."""
        window = self.cfg.rehearsal_window
        if window and task.task_id in self.rank:
            start = min(max(self.rank[task.task_id] - window // 2, 0), max(len(self.tasks) - window - 1, 0))
            near = self.by_size[start: start + window + 1]
        else:
            near = range(len(self.tasks))
        others = [i for i in near if self.tasks[i].task_id != task.task_id]
        if not others or self.cfg.rehearsal == 0:
            return []
        picks = self.rng.integers(len(others), size=self.cfg.rehearsal)
        return [others[i] for i in picks]

    def rehearsal_samples(self, task: Task) -> list[tuple[str, Sample]]:
        """One view of each of :meth:`rehearsal_tasks`."""
        return [(self.tasks[i].task_id, self.make_samples(self.tasks[i], 1)[0]) for i in self.rehearsal_tasks(task)]

    def batch(self, task: Task, side: int | None = None) -> Batch:
        """A step's batch on ``task``: ``batch_size`` views of it and the rehearsal views.

        ``side``: the canvas side of its tensors (default: the largest :func:`view_side` of the
        batch); every view's square must fit it, and it must not exceed the agent's canvas.
        """
        samples = self.make_samples(task, self.cfg.batch_size)
        rehearsal = self.rehearsal_samples(task)
        need = max(s.side for s in samples + [s for _, s in rehearsal])
        side = need if side is None else side
        if not need <= side <= self.side:
            raise ValueError(f"batch canvas side {side} must lie in {need}..{self.side} (the batch's largest "
                             f"grid .. agent.canvas)")
        return Batch(task.task_id, tuple(samples), tuple(rehearsal), side)

    def state_dict(self) -> dict:
        """The RNG and the curriculum's position (safe for ``torch.load(weights_only=True)``)."""
        s = self.rng.bit_generator.state
        rng = {"bit_generator": s["bit_generator"], "state": str(s["state"]["state"]),
               "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}
        return {"rng": rng, "curriculum_draws": self.curriculum.draws}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (extra keys, such as a learner's, are ignored)."""
        d = state["rng"]
        self.rng.bit_generator.state = {
            "bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}
        self.curriculum.draws = int(state["curriculum_draws"])
