"""A task's views as tensors: leave-one-out views of its demonstrations, and views of its test inputs.

Prediction and test-time adaptation see a task under D8 transforms (efe_ray/data/augment.py), and
with ``colours`` > 1 under colour versions of the task as well (:func:`checkpoint_colours`, then
:func:`under`: permutations of colours 1..9, background 0 fixed, the identity first). The agent is
told the transform; a colour version has no input of its own, but each version's views carry its
index (``ViewSet.colour``), so that adaptation can learn a prompt offset per version
(efe_ray/evaluation/adapt.py). Every augmentation has its inverse: candidates are mapped back to
the task's frame before they are scored (efe_ray/evaluation/candidates.py). For every augmentation
``a`` of ``augs``:

- **leave-one-out views** (:func:`demo_views`): each demonstration ``j`` is the query, the other
  demonstrations (up to ``MAX_DEMOS``) are the prompt's demonstrations, all under ``a``; its output
  is the target. These are what adaptation trains on and what the prompt search scores;
- **test views** (:func:`test_views`): each test input is the query, every demonstration is a
  prompt demonstration. No test output is read: there is none (tasks arrive blinded).

Every view of a task lives on the task's square (:func:`task_side`: the side of its largest
demonstration grid or test input), so that candidates are scored over the same cells as the loss
was computed on (efe_ray/data/batching.py). Prompts are computed once, without gradient: the
prompt encoder is not adapted, so the views' prompts are constants of adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from efe_ray.data.augment import Augmentation, colour_versions
from efe_ray.data.batching import MAX_DEMOS, Batch, Sample
from efe_ray.data.features import task_features
from efe_ray.data.task import Task, task_side
from efe_ray.device import upload
from efe_ray.learner import EFELearner
from efe_ray.data.canvas import to_canvas

__all__ = ["ViewSet", "checkpoint_colours", "colour_index", "d8_views", "demo_views", "has_demo_views", "task_side",
           "test_views", "under"]

TEXT_CHUNK = 64
"""Prompt texts per Qwen forward pass."""


def d8_views(k: int) -> list[Augmentation]:
    """The first ``k`` D8 transforms (identity first), colours unchanged."""
    return Augmentation.all_d8()[:k]


def under(perms: np.ndarray, augmentations: int) -> list[Augmentation]:
    """The augmentations a task is seen under: each colour permutation of ``perms`` ((C, 10); a
    task's versions, :func:`checkpoint_colours`) under each of the first ``augmentations`` D8
    transforms, permutation by permutation. With the identity alone, :func:`d8_views`."""
    return [Augmentation(a.d8, tuple(int(c) for c in perm)) for perm in perms for a in d8_views(augmentations)]


def checkpoint_colours(learner: EFELearner, task_id: str, colours: int, seed: int) -> tuple[np.ndarray, bool]:
    """(the ``colours`` colour versions ``task_id`` is seen under (C, 10), whether they are the
    checkpoint's own). A checkpoint trained with ``learner.colour_versions`` V >= ``colours`` on this
    task (its task table has a row per version) has its own: its first ``colours`` versions, from the
    learner's seed, exactly those it trained each row on; their views then use those rows
    (:func:`demo_views`, :func:`test_views` with ``own_rows``). Otherwise the task's versions of
    ``seed``, all with the task's one row. Either way :func:`colour_versions`: the identity first,
    the others permuting 1..9 and fixing 0."""
    versions = learner.prompt.versions
    if 1 < colours <= versions and task_id in learner.prompt.task_index:
        return colour_versions(task_id, learner.cfg.seed, versions)[:colours], True
    return colour_versions(task_id, seed, colours), False


def colour_index(augs: list[Augmentation] | tuple[Augmentation, ...]) -> list[int]:
    """The colour version of each augmentation: the rank of its colour permutation among the distinct
    ones of ``augs``, in order of first appearance (0 for the first, the identity in :func:`under`'s)."""
    order: dict[tuple[int, ...], int] = {}
    return [order.setdefault(a.colours, len(order)) for a in augs]


@dataclass(frozen=True, eq=False)
class ViewSet:
    """N views of one task on its ``side`` x ``side`` square (targets only for demonstration views)."""

    canvas: torch.Tensor
    """(N, S, S) long queries, padded with OUTSIDE."""
    view: torch.Tensor
    """(N,) long D8 transform of each view."""
    prompt: torch.Tensor
    """(N, P) float prompt embeddings (no gradient)."""
    augs: tuple[Augmentation, ...]
    """The augmentation of each view."""
    query: tuple[int, ...]
    """Which demonstration (or test input) each view's query is."""
    colour: torch.Tensor
    """(N,) long colour version of each view (:func:`colour_index` of the augmentations)."""
    target: torch.Tensor | None = None
    """(N, S, S) long targets (demonstration views)."""
    weight: torch.Tensor | None = None
    """(N, S, S) float loss weights (demonstration views; efe_ray/data/batching.py)."""
    target_mask: torch.Tensor | None = None
    """(N, S, S) float target cells (demonstration views)."""

    def __len__(self) -> int:
        return len(self.augs)


@torch.no_grad()
def _prompts(learner: EFELearner, task_id: str, samples: list[Sample], features: torch.Tensor,
             colour: torch.Tensor, own_rows: bool) -> torch.Tensor:
    """(N, P) float32 prompts of ``samples`` (Qwen in chunks), with the task's embedding if any: its
    row, or with ``own_rows`` the row of each sample's colour version (``colour``, (N,) long)."""
    learner.prompt.eval()
    with learner.autocast():
        text = None
        if learner.prompt.qwen is not None:
            texts = [s.prompt_text() for s in samples]
            text = torch.cat([learner.prompt.encode_text(texts[i: i + TEXT_CHUNK])
                              for i in range(0, len(texts), TEXT_CHUNK)])
        rows = None
        if learner.prompt.task_table is not None:
            rows = learner.prompt.task_rows([task_id] * len(samples), features.device)  # (N,) version 0's
            rows = rows + colour if own_rows else rows  # a task's version v is the row after its v-1
        prompt = learner.prompt.fuse(text, features, rows)
    return prompt.float()


def has_demo_views(task: Task) -> bool:
    """Whether ``task`` has leave-one-out demonstration views: two or more demonstrations (one
    to ask, one at least to show)."""
    return len(task.train) >= 2


def demo_views(learner: EFELearner, task: Task, augs: list[Augmentation], own_rows: bool = False) -> ViewSet | None:
    """Leave-one-out views of ``task``'s demonstrations under each of ``augs`` (None with fewer
    than two demonstrations: no view has both a query and a demonstration); ``own_rows``: the
    augmentations' colour versions are the checkpoint's own (:func:`checkpoint_colours`)."""
    n = len(task.train)
    if not has_demo_views(task):
        return None
    side = task_side(task)
    samples, query = [], []
    for aug in augs:
        for j in range(n):
            others = tuple(aug.apply_pair(p) for i, p in enumerate(task.train) if i != j)[:MAX_DEMOS]
            samples.append(Sample(others, aug.apply(task.train[j].input), aug.apply(task.train[j].output), aug))
            query.append(j)
    t = Batch(task.task_id, tuple(samples), (), side).tensors(learner.device)
    colour = _colours(samples, learner.device)
    return ViewSet(t.canvas, t.view, _prompts(learner, task.task_id, samples, t.features, colour, own_rows),
                   tuple(s.aug for s in samples), tuple(query), colour, t.target, t.loss_mask, t.target_mask)


def _colours(samples: list[Sample], device: torch.device) -> torch.Tensor:
    """(N,) long colour version of each sample's augmentation."""
    return upload(np.array(colour_index([s.aug for s in samples]), dtype=np.int64), device)


def test_views(learner: EFELearner, task: Task, augs: list[Augmentation], own_rows: bool = False) -> ViewSet:
    """Views of every test input of ``task`` under each of ``augs`` (demonstrations as the prompt's);
    ``own_rows`` as :func:`demo_views` takes it."""
    side = task_side(task)
    samples, query = [], []
    for aug in augs:
        demos = tuple(aug.apply_pair(p) for p in task.train)[:MAX_DEMOS]
        for i, p in enumerate(task.test):
            samples.append(Sample(demos, aug.apply(p.input), None, aug))
            query.append(i)
    dev = learner.device
    canvas = upload(np.stack([to_canvas(s.query, side) for s in samples]), dev)  # (N, S, S)
    feats = upload(np.stack([task_features(s.demos, s.query) for s in samples]).astype(np.float32), dev)
    view = upload(np.array([s.aug.d8 for s in samples], dtype=np.int64), dev)
    colour = _colours(samples, dev)
    return ViewSet(canvas, view, _prompts(learner, task.task_id, samples, feats, colour, own_rows),
                   tuple(s.aug for s in samples), tuple(query), colour)

