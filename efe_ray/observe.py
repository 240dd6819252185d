"""What the refiner policy sees of a task: its prompt and its features, from the task's canonical view.

The canonical view is the task's demonstrations and its first test input (a task without test
inputs, such as an evaluation task trained on blinded: its last demonstration's input, the others
as demonstrations); no output of a test pair is read. One definition for training
(envs/observation.py) and evaluation (efe_ray/rl/policy.py). No Ray here.
"""

from __future__ import annotations

import numpy as np
import torch

from efe_ray.data.batching import MAX_DEMOS
from efe_ray.data.features import task_features
from efe_ray.data.serialize import prompt_text
from efe_ray.data.task import Pair, Task
from efe_ray.learner import EFELearner


def canonical_view(task: Task) -> tuple[tuple[Pair, ...], np.ndarray]:
    """(demonstrations, query input) of the task's canonical view (see the module docstring)."""
    if task.test:
        return task.train[:MAX_DEMOS], task.test[0].input
    return task.train[:-1][:MAX_DEMOS], task.train[-1].input


def canonical_features(task: Task) -> np.ndarray:
    """(15,) float32 features of the task's canonical view."""
    return task_features(*canonical_view(task))


@torch.no_grad()
def observed_prompt(learner: EFELearner, task: Task, features: np.ndarray) -> torch.Tensor:
    """(P,) float32 prompt of the task's canonical view with ``features`` (its
    :func:`canonical_features`), on the learner's device, detached; nothing is read back. The
    learner's cached Qwen embedding of the task is used where there is one."""
    feats = torch.as_tensor(features, device=learner.device)[None]  # (1, 15)
    with learner.autocast():
        text = learner.text_cache.get(task.task_id)
        if learner.prompt.qwen is not None and text is None:
            text = learner.prompt.encode_text([prompt_text(*canonical_view(task))])[0]
        prompt = learner.prompt.fuse(None if text is None else text[None], feats, [task.task_id])  # (1, P)
    return prompt[0].float()


def observe(learner: EFELearner, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """(prompt (P,), features (15,)) of the task's canonical view, as numpy (one read)."""
    feats = canonical_features(task)
    return observed_prompt(learner, task, feats).cpu().numpy(), feats
