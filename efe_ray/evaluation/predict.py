"""A trained learner at work: prompts for the policy, predictions, held-out scores, adaptation.

- :func:`observe` (efe_ray/observe.py): a task's prompt embedding and features (its canonical
  view), what the RL policy sees; no test output is read.
- :func:`predict_logits` / :func:`predict`: per-cell log-probabilities, and the output grids read
  off the canvas, for a task's test inputs (optionally refined by a prompt delta, under an
  augmentation that is undone after).
- :func:`evaluate`: the held-out scores of training (``eval/score``, ``eval/cell_acc``,
  ``eval/exact``), with the definitions of efe_ray/evaluation/scoring.py: a prediction of the wrong
  shape scores 0.
Test-time adaptation lives in efe_ray/evaluation/adapt.py (many tasks at once). No gradient flows
here; nothing imports Ray.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from efe_ray.data.augment import Augmentation
from efe_ray.data.batching import MAX_DEMOS, view_side
from efe_ray.data.features import task_features
from efe_ray.data.serialize import prompt_text
from efe_ray.data.task import Pair, Task
from efe_ray.device import upload
from efe_ray.evaluation.scoring import score_task, summarise
from efe_ray.learner import EFELearner
from efe_ray.observe import observe  # noqa: F401  (what the policy sees, beside the predictions)
from efe_ray.data.canvas import from_canvas, to_canvas
from efe_ray.refine import delta_tensor

DeltaFn = Callable[[Task], "np.ndarray | None"]
"""``delta_fn(task) -> (P,) prompt delta or None``: a refinement per task (the trained policy)."""


@torch.no_grad()
def predict_logits(learner: EFELearner, demos: tuple[Pair, ...], queries: list[np.ndarray],
                   delta: np.ndarray | None = None, *, task_id: str | None = None, view: int = 0) -> torch.Tensor:
    """Class log-probabilities (B, S, S, 11) for query inputs given one task's demonstrations (seen
    under D8 transform ``view``). ``S`` is the side of the largest grid among the demonstrations and
    the queries; ``task_id`` selects the task embedding, if the prompt has a table."""
    learner.begin_graph_step()
    learner.agent.eval()
    learner.prompt.eval()
    demos = demos[:MAX_DEMOS]
    side = max(view_side(demos, q) for q in queries)
    feats = upload(np.stack([task_features(demos, q) for q in queries]), learner.device)  # (B, 15)
    canvas = upload(np.stack([to_canvas(q, side) for q in queries]), learner.device)  # (B, S, S)
    views = torch.full((len(queries),), view, dtype=torch.long, device=learner.device)
    with learner.autocast():
        text_emb = None
        if learner.prompt.qwen is not None:
            text_emb = learner.prompt.encode_text([prompt_text(demos, q) for q in queries])  # (B, P)
        prompt = learner.prompt.fuse(text_emb, feats, None if task_id is None else [task_id] * len(queries))
        delta_t = delta_tensor(delta, len(queries), learner.device)
        logits = learner.agent(canvas, prompt if delta_t is None else prompt + delta_t, views)  # (B, S, S, 11)
    return torch.log_softmax(logits.float(), -1)


def predict(learner: EFELearner, task: Task, delta: np.ndarray | None = None,
            aug: Augmentation | None = None) -> list[np.ndarray]:
    """Predicted output grid for each test input, under augmentation ``aug`` (undone after)."""
    aug = aug or Augmentation.identity()
    demos = tuple(aug.apply_pair(p) for p in task.train)
    queries = [aug.apply(p.input) for p in task.test]
    logp = predict_logits(learner, demos, queries, delta, task_id=task.task_id, view=aug.d8)
    return [aug.invert(from_canvas(c)) for c in logp.argmax(-1).cpu().numpy()]


def evaluate(learner: EFELearner, tasks: list[Task], delta_fn: DeltaFn | None = None) -> dict[str, float]:
    """Held-out scores of the test outputs of ``tasks`` (scoring.py's definitions).

    ``cell_acc``: the mean over outputs of the share of target cells the predicted grid gets
    right, 0 where its shape is wrong; ``exact``: the share of outputs predicted exactly;
    ``score``: ``exact + cell_acc / 1000``, exact grids first and cell accuracy only to break ties
    (what Tune selects on); ``outputs``: how many were scored (test outputs that are known).
    """
    scores = []
    for task in tasks:
        grids = predict(learner, task, delta_fn(task) if delta_fn is not None else None)
        scores.append(score_task(task.task_id, [(g, g) for g in grids], [p.output for p in task.test],
                                 [p.input for p in task.test]))
    summary = summarise(scores)
    return {"score": summary.output_score + summary.cell_acc / 1000, "cell_acc": summary.cell_acc,
            "exact": summary.output_score, "outputs": float(summary.outputs)}


RngState = tuple[torch.Tensor, torch.Tensor | None]
"""torch's global RNG state: the CPU generator's, and the CUDA device's where there is one."""


def torch_rng_state(device: torch.device) -> RngState:
    """The global RNG state of the CPU and, for a CUDA ``device``, of that device."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def private_torch_rng(device: torch.device, seed: int | None = None, state: RngState | None = None) -> Iterator[None]:
    """Run a block with torch's global RNG forked (and optionally seeded, or set to ``state`` from
    :func:`torch_rng_state`), restored afterwards."""
    if seed is not None and state is not None:
        raise ValueError("private_torch_rng: give a seed or a state, not both")
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        if state is not None:
            torch.set_rng_state(state[0])
            if state[1] is not None:
                torch.cuda.set_rng_state(state[1], device)
        yield
