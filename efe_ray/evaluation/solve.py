"""Answer a group of ARC tasks at once: prompt search, batched adaptation, candidates scored under
every view. What ``python -m efe_ray.evaluate`` runs for a checkpoint.

For a group of tasks (every task blinded first: no step below can read a test output):

1. **views** (efe_ray/evaluation/views.py): leave-one-out views of each task's demonstrations and
   views of its test inputs, under ``augmentations`` D8 transforms, on the task's square;
2. **search** (efe_ray/evaluation/search.py): a prompt delta per task, ``zero``, from the RL
   ``policy`` in closed loop, from ``gradient`` ascent, or the ``best`` of them, judged by the
   demonstrations' leave-one-out log-likelihood;
3. **adaptation** (efe_ray/evaluation/adapt.py, ``tta_steps > 0``): one copy of the agent per task
   (and per delta compared, with ``ablations``), trained together on the tasks' own demonstrations;
4. **candidates** (efe_ray/evaluation/candidates.py): every view's read-off and its crops to the
   sizes the demonstrations' size rules predict, scored by their log-probability under every view
   (a product of experts) plus the size prior; the two best distinct ones are the attempts.

Methods (the first is the answer; the others, with ``ablations``, are measured in the same pass):
``model``; ``model-no-tta`` (step 3 left out); ``model-old-voting`` (count voting over the views'
read-offs instead of step 4); ``model-no-search``, ``model-policy-search``,
``model-gradient-search`` (adaptation with that delta instead of the chosen one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from efe_ray.data.task import Task, blind
from efe_ray.evaluation.adapt import Stacked, adapt, log_probs, stack_views
from efe_ray.evaluation.candidates import View, predicted_sizes, rank
from efe_ray.evaluation.predict import private_torch_rng
from efe_ray.evaluation.search import PolicyFn, demo_log_lik, gradient_search, policy_search
from efe_ray.evaluation.views import ViewSet, d8_views, demo_views, task_side, test_views
from efe_ray.evaluation.voting import vote_augmented
from efe_ray.learner import EFELearner
from efe_ray.data.canvas import from_canvas

__all__ = ["SolveSettings", "Solution", "solve_group"]

Attempts = list[tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class SolveSettings:
    """How a checkpoint answers tasks (``python -m efe_ray.evaluate``'s options)."""

    tta_steps: int = 0
    """Adaptation steps per group (0: none)."""
    tta_lr: float = 1e-3
    """Adaptation learning rate (fresh AdamW, warm-up then cosine)."""
    tta_views: int = 16
    """Leave-one-out views per task per adaptation step."""
    augmentations: int = 8
    """D8 transforms every task is seen under (1..8; identity first)."""
    search: Literal["none", "policy", "gradient", "best"] = "best"
    """Prompt delta: none, the RL policy's closed-loop search, gradient search, or the best of all."""
    search_rounds: int = 8
    """Proposals of the policy search."""
    search_steps: int = 20
    """Steps of the gradient search."""
    search_lr: float = 0.05
    """Learning rate of the gradient search."""
    ablations: bool = False
    """Also answer with the ablated methods (see the module docstring)."""
    seed: int = 0
    """Seed of adaptation and of the policy's proposals."""

    def __post_init__(self) -> None:
        if not 1 <= self.augmentations <= 8:
            raise ValueError(f"augmentations must lie in 1..8 (D8 transforms), got {self.augmentations}")
        for name in ("tta_steps", "search_rounds", "search_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.tta_views < 1 or self.tta_lr <= 0 or self.search_lr <= 0:
            raise ValueError("tta_views must be >= 1 and the learning rates > 0")


@dataclass
class Solution:
    """A group member's answers: attempts per method, what could not be answered, and notes."""

    task_id: str
    methods: dict[str, Attempts]
    """Method name -> (attempt_1, attempt_2) per test input; ``"model"`` first."""
    unanswered: tuple[int, ...] = ()
    """Test inputs the model cannot answer (larger than its canvas): their attempts copy the input."""
    note: str = ""
    info: dict = field(default_factory=dict)


def solve_group(learner: EFELearner, policy: PolicyFn | None, tasks: list[Task], settings: SolveSettings) -> list[Solution]:
    """Answers for ``tasks``, in their order (see the module docstring). The checkpoint's weights and
    the caller's torch RNG are left as they were; the same tasks in the same order and the same seed
    give the same answers."""
    with private_torch_rng(learner.device, settings.seed):
        return _solve(learner, policy, [blind(t) for t in tasks], settings)


def _solve(learner: EFELearner, policy: PolicyFn | None, tasks: list[Task], settings: SolveSettings) -> list[Solution]:
    canvas = learner.agent_cfg.canvas
    fits = [t for t in tasks if task_side(t) <= canvas]
    augs = d8_views(settings.augmentations)
    demos = {t.task_id: demo_views(learner, t, augs) for t in fits}
    tests = {t.task_id: test_views(learner, t, augs) for t in fits}
    taught = [t for t in fits if demos[t.task_id] is not None]  # two or more demonstrations
    stacked = stack_views([demos[t.task_id] for t in taught]) if taught else None
    deltas, likelihood = _search(learner, policy, taught, stacked, settings)
    chosen = "zero" if settings.search == "none" else settings.search
    variants = [chosen] + ([v for v in ("zero", "policy", "gradient") if v in deltas and v != chosen]
                           if settings.ablations else [])
    logp = {}  # (variant, adapted?) -> task id -> (V, S, S, 11) log-probs of its test views
    info = {t.task_id: {"search": likelihood["best_of"][i] if chosen == "best" else chosen,
                        "demo_log_lik": {n: round(v[i], 4) for n, v in likelihood.items() if n != "best_of"}}
            for i, t in enumerate(taught)}
    if settings.tta_steps > 0 and taught:
        searched = [v for v in variants if v != "best"]
        reuse = chosen == "best" and {"zero", "policy", "gradient"} & set(deltas) <= set(searched)
        adapted, losses = _adapted(learner, taught, stacked, tests, deltas, searched if reuse else variants, settings)
        if reuse:  # each task's best delta is one of the searches': its adapted copy is already there
            adapted[("best", True)] = {t.task_id: adapted[(likelihood["best_of"][i], True)][t.task_id]
                                       for i, t in enumerate(taught)}
        logp.update(adapted)
        for t in taught:
            info[t.task_id]["tta_loss"] = [round(float(losses[0]), 4), round(float(losses[-1]), 4)]
    if settings.tta_steps == 0 or settings.ablations or not taught:
        logp[(chosen, False)] = _unadapted(learner, fits, tests, deltas.get(chosen), taught)
    out = []
    for task in tasks:
        if task not in fits:
            copies = [(p.input.copy(), p.input.copy()) for p in task.test]
            out.append(Solution(task.task_id, {"model": copies}, tuple(range(len(task.test))),
                                f"larger than the {canvas}x{canvas} canvas"))
            continue
        solution = _answers(task, tests[task.task_id], logp, chosen, settings)
        solution.info = info.get(task.task_id, {"search": "none: fewer than two demonstrations"})
        out.append(solution)
    return out


def _search(learner: EFELearner, policy: PolicyFn | None, taught: list[Task], stacked: Stacked | None,
            s: SolveSettings) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
    """Deltas (K, P) by search name, for the tasks with demonstrations, and their likelihoods."""
    if stacked is None:
        return {}, {}
    zero = torch.zeros_like(stacked.prompt[:, 0])
    deltas = {"zero": zero}
    ll = {"zero": demo_log_lik(learner, stacked, zero)}
    if policy is not None and s.search_rounds and (s.search in ("policy", "best") or s.ablations):
        deltas["policy"], ll["policy"] = policy_search(learner, policy, taught, stacked, rounds=s.search_rounds,
                                                       seed=s.seed)
    if s.search_steps and (s.search in ("gradient", "best") or s.ablations):
        deltas["gradient"], ll["gradient"] = gradient_search(learner, stacked, steps=s.search_steps, lr=s.search_lr)
    names = list(deltas)  # zero first: the best keeps zero on a tie
    table = torch.stack([ll[n] for n in names])  # (searches, K)
    pick = table.argmax(0)  # first maximum
    deltas["best"] = torch.stack([deltas[names[int(i)]][k] for k, i in enumerate(pick)])
    ll["best"] = table.max(0).values
    return deltas, {n: v.tolist() for n, v in ll.items()} | {"best_of": [names[int(i)] for i in pick]}


def _adapted(learner, taught, stacked, tests, deltas, variants, s) -> tuple[dict, np.ndarray]:
    """(test-view log-probs of adapted copies, one per (variant, task); the loss per step)."""
    variants = [v for v in variants if v in deltas]
    k = len(taught)
    copy_task = torch.arange(k, device=stacked.prompt.device).repeat(len(variants))  # (M,)
    copy_delta = torch.cat([deltas[v] for v in variants])  # (M, P)
    agent, losses = adapt(learner, stacked, copy_task, copy_delta, steps=s.tta_steps, lr=s.tta_lr,
                          views=s.tta_views, seed=s.seed)
    test_stack = stack_views([tests[t.task_id] for t in taught])
    lp = log_probs(agent, test_stack, copy_task, copy_delta, learner).cpu().numpy()  # (M, V, S, S, 11)
    out = {(v, True): {t.task_id: lp[j * k + i, : len(tests[t.task_id])] for i, t in enumerate(taught)}
           for j, v in enumerate(variants)}
    return out, losses.cpu().numpy()


def _unadapted(learner, fits, tests, delta, taught) -> dict:
    """Test-view log-probs of the checkpoint's agent (with the chosen delta where one was searched)."""
    index = {t.task_id: i for i, t in enumerate(taught)}
    out = {}
    for t in fits:
        views = tests[t.task_id]
        d = delta[index[t.task_id]] if delta is not None and t.task_id in index else torch.zeros_like(views.prompt[0])
        with torch.no_grad(), learner.autocast():
            logits = learner.agent.eval()(views.canvas, views.prompt + d, views.view)
        out[t.task_id] = torch.log_softmax(logits.float(), -1).cpu().numpy()
    return out


def _answers(task: Task, views: ViewSet, logp: dict, chosen: str, s: SolveSettings) -> Solution:
    side = task_side(task)
    primary = (chosen, True) if (chosen, True) in logp and task.task_id in logp[(chosen, True)] else (chosen, False)
    methods = {"model": _poe(task, views, logp[primary][task.task_id], side)}
    if s.ablations:
        if (chosen, False) in logp:
            methods["model-no-tta"] = _poe(task, views, logp[(chosen, False)][task.task_id], side)
        methods["model-old-voting"] = _vote(task, views, logp[primary][task.task_id], side)
        for v, name in (("zero", "model-no-search"), ("policy", "model-policy-search"),
                        ("gradient", "model-gradient-search")):
            key = (v, primary[1])
            if key in logp and task.task_id in logp[key]:
                methods[name] = _poe(task, views, logp[key][task.task_id], side)
    return Solution(task.task_id, methods)


def _poe(task: Task, views: ViewSet, logp: np.ndarray, side: int) -> Attempts:
    """Attempts per test input: candidates ranked by their log-probability under every view."""
    attempts = []
    demos = [(p.input, p.output) for p in task.train]
    for i, p in enumerate(task.test):
        mine = [View(a, logp[j, :side, :side]) for j, (a, q) in enumerate(zip(views.augs, views.query)) if q == i]
        ranked = rank(mine, predicted_sizes(demos, p.input))
        first = ranked[0].grid
        second = ranked[1].grid if len(ranked) > 1 else first
        attempts.append((first, second))
    return attempts


def _vote(task: Task, views: ViewSet, logp: np.ndarray, side: int) -> Attempts:
    """Attempts per test input by count voting over the views' read-offs (the former method)."""
    attempts = []
    for i, _ in enumerate(task.test):
        cands = []
        for j, (a, q) in enumerate(zip(views.augs, views.query)):
            if q != i:
                continue
            best = logp[j, :side, :side].max(-1)
            grid = from_canvas(logp[j, :side, :side].argmax(-1))
            cands.append((a, grid, float(best[: grid.shape[0], : grid.shape[1]].mean())))
        attempts.append(vote_augmented(cands))
    return attempts
