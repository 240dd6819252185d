"""Answer a group of ARC tasks at once: prompt search, batched adaptation, candidates scored under
every view. What ``python -m efe_ray.evaluate`` runs for a checkpoint.

For a group of tasks (every task blinded first: no step below can read a test output):

1. **views** (efe_ray/evaluation/views.py): leave-one-out views of each task's demonstrations and
   views of its test inputs, under ``augmentations`` D8 transforms, on the task's square;
2. **search** (efe_ray/evaluation/search.py): a prompt delta per task, ``zero``, from the RL
   ``policy`` in closed loop, from ``gradient`` ascent, or the ``best`` of them, judged by the
   demonstrations' leave-one-out log-likelihood (computed only where there are deltas to compare:
   with the default ``none`` and no adaptation, the demonstrations' views are never built);
3. **adaptation** (efe_ray/evaluation/adapt.py, ``tta_steps > 0``): one copy of the agent per task
   (and per delta compared, with ``ablations``), trained together on the tasks' own demonstrations,
   each copy drawing its views from its own random stream (efe_ray/evaluation/streams.py);
4. **candidates** (efe_ray/evaluation/candidates.py): every view's read-off and its crops to the
   sizes the demonstrations' size rules predict, scored by their log-probability under every view
   (a product of experts) plus the size prior; the two best distinct ones are the attempts.

A task with a single demonstration has no leave-one-out view: there is nothing to search a delta
on or to adapt a copy to, so every method answers it with the checkpoint's agent as it is, without
a delta (its note says so where a search or adaptation was asked for). A search that cannot run
(``policy`` without a policy or without rounds, ``gradient`` without steps) is left out; chosen, it
gives the zero delta.

Methods (the first is the answer; the others, with ``ablations``, are measured in the same pass):
``model``; ``model-no-tta`` (step 3 left out); ``model-old-voting`` (count voting over the views'
read-offs instead of step 4); ``model-no-search``, ``model-policy-search``,
``model-gradient-search`` (adaptation with that delta instead of the chosen one).

**Several adaptation rates** (``tta_lr`` with more than one rate, ``--tta-lr 0.003 0.01``): steps 1
and 2, and every forward pass of the checkpoint's own agent, run once; steps 3 and 4 run once per
rate, each from the torch RNG state a run with that rate alone adapts from, so that each task's
copy at a rate is exactly that run's. Every method's attempts are then the copies' own attempts
merged (:func:`merge_attempts`): each copy's best answer first, in the order of the rates, then
each copy's second; the first two distinct grids are the attempts. Two copies adapted at different
rates answer differently far more often than two attempts of one copy do, which is what pass@2
rewards. Each rate's own answers are the methods ``model-lr<rate>`` (e.g. ``model-lr0.01``). The
adaptations cost the sum of the rates' passes; the rest is paid once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from efe_ray.data.task import Task, blind
from efe_ray.evaluation.adapt import Stacked, adapt, demo_exact, log_probs, stack_views
from efe_ray.evaluation.candidates import View, predicted_sizes, rank
from efe_ray.evaluation.predict import private_torch_rng, torch_rng_state
from efe_ray.evaluation.search import PolicyFn, demo_log_lik, gradient_search, policy_search
from efe_ray.evaluation.streams import copy_key
from efe_ray.evaluation.views import (ViewSet, checkpoint_colours, demo_views, has_demo_views, task_side, test_views,
                                      under)
from efe_ray.evaluation.voting import vote_augmented
from efe_ray.learner import EFELearner
from efe_ray.data.canvas import from_canvas

__all__ = ["SolveSettings", "Solution", "merge_attempts", "rate_method", "solve_group"]

Attempts = list[tuple[np.ndarray, np.ndarray]]

SEARCHES = ("zero", "policy", "gradient")
"""The searches, in the order their deltas are compared (the best keeps the first on a tie)."""
ABLATED = {"zero": "model-no-search", "policy": "model-policy-search", "gradient": "model-gradient-search"}
"""The method that adapts with each search's delta instead of the chosen one."""
UNTAUGHT = "one demonstration: answered by the checkpoint as it is (no search, no adaptation)"
"""The note of a task with a single demonstration, where a search or adaptation was asked for."""

MAX_COLOURS = 100
"""Most colour versions a task is seen under (each multiplies its views and prompt texts)."""
Key = tuple[str, bool]
"""(delta's name, adapted?): which log-probabilities a method scores."""
Scorer = Callable[[Task, ViewSet, np.ndarray, int], Attempts]
"""``(task, its test views, their (V, S, S, 11) log-probs, the task's side) -> attempts``."""
LogProbs = dict[str, dict[Key, np.ndarray]]
"""Task id -> key -> (V, S, S, 11) class log-probabilities of the task's test views."""


@dataclass(frozen=True)
class SolveSettings:
    """How a checkpoint answers tasks (``python -m efe_ray.evaluate``'s options)."""

    tta_steps: int = 0
    """Adaptation steps per group (0: none)."""
    tta_lr: tuple[float, ...] = (3e-3,)
    """Adaptation learning rates (fresh AdamW, warm-up then cosine; ``--tta-lr``'s default): one
    adapted copy of each task per rate, their attempts merged (see the module docstring)."""
    tta_views: int = 16
    """Leave-one-out views per task per adaptation step."""
    augmentations: int = 8
    """D8 transforms every task is seen under (1..8; identity first)."""
    colours: int = 1
    """Colour versions every task is seen under, each under every D8 transform (1..100; 1: the task's
    own colours only, the plain views; ``--colours`` defaults to 8; efe_ray/evaluation/views.py): the
    checkpoint's own versions and their rows of the task table where it trained with as many
    (``learner.colour_versions``), else versions drawn from ``seed``. Adaptation learns a prompt
    offset per version."""
    search: Literal["none", "policy", "gradient", "best"] = "none"
    """Prompt delta: none (the default: over the two single-GPU ARC-AGI-1 leases of bench/RESULTS.md
    it solved 39 outputs, the policy's search 38, gradient search and the best of them 35 each), the
    RL policy's closed-loop search, gradient search, or the best of all."""
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
        if not 1 <= self.colours <= MAX_COLOURS:
            raise ValueError(f"colours must lie in 1..{MAX_COLOURS} (colour versions), got {self.colours}")
        for name in ("tta_steps", "search_rounds", "search_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.tta_lr, tuple) or not self.tta_lr:
            raise ValueError(f"tta_lr must be a non-empty tuple of rates, got {self.tta_lr!r}")
        if len(set(self.tta_lr)) != len(self.tta_lr):
            raise ValueError(f"tta_lr repeats a rate (the copies would be the same): {self.tta_lr}")
        if len(self.tta_lr) > 1 and self.tta_steps == 0:
            raise ValueError(f"tta_lr gives {len(self.tta_lr)} rates without adaptation (tta_steps=0): "
                             "every rate's pass would be the same")
        if self.tta_views < 1 or min(self.tta_lr) <= 0 or self.search_lr <= 0:
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
    give the same answers. Every task that fits the canvas is answered, whatever its shape: one with
    a single demonstration (no leave-one-out pair: nothing to search or adapt on) by the checkpoint
    as it is, with no prompt delta, under every method."""
    blinded = [blind(t) for t in tasks]
    with private_torch_rng(learner.device, settings.seed):
        shared = _prepare(learner, policy, blinded, settings)
        state = torch_rng_state(learner.device)  # where a run with one rate alone starts adapting
    runs = []
    for lr in settings.tta_lr:  # each rate's adaptation as in a run with that rate alone
        with private_torch_rng(learner.device, state=state):
            runs.append(_finish(learner, shared, replace(settings, tta_lr=(lr,))))
    if len(runs) == 1:
        return runs[0]
    return [_merged(list(copies), settings.tta_lr) for copies in zip(*runs)]


def rate_method(lr: float) -> str:
    """The method of one adaptation rate's own answers, where several are merged: ``model-lr0.01``."""
    return f"model-lr{lr:g}"


def merge_attempts(copies: list[Attempts]) -> Attempts:
    """Per test input, the attempts of several copies merged: every copy's first attempt, in order,
    then every copy's second; the first two distinct grids (the first twice if there is one)."""
    merged = []
    for per_input in zip(*copies):  # one (first, second) per copy
        order = [a[0] for a in per_input] + [a[1] for a in per_input]
        picked = [order[0]]
        for grid in order[1:]:
            if not any(g.shape == grid.shape and np.array_equal(g, grid) for g in picked):
                picked.append(grid)
                break
        merged.append((picked[0], picked[-1]))
    return merged


def _merged(copies: list[Solution], rates: tuple[float, ...]) -> Solution:
    """One task's solutions of the rates' passes as one: every method's attempts merged across the
    copies (:func:`merge_attempts`), each rate's ``model`` kept as ``model-lr<rate>``, and the
    first pass's info with every pass's adaptation figures under ``by_rate``."""
    first = copies[0]
    methods = {name: merge_attempts([c.methods[name] for c in copies]) for name in first.methods}
    methods.update((rate_method(lr), c.methods["model"]) for lr, c in zip(rates, copies))
    info = dict(first.info)
    fit = {f"{lr:g}": {k: c.info[k] for k in ("tta_demo_exact", "tta_loss") if k in c.info}
           for lr, c in zip(rates, copies)}
    if any(fit.values()):
        info["by_rate"] = fit
    return Solution(first.task_id, methods, first.unanswered, first.note, info)


@dataclass(frozen=True, eq=False)
class _Shared:
    """What every adaptation rate's pass of a group shares: the views, the searched deltas, the
    unadapted log-probabilities and the per-task info so far (:func:`_prepare`)."""

    tasks: list[Task]
    """Every task of the group, blinded, in order."""
    tests: dict[str, ViewSet]
    """Task id -> its test views (tasks within the canvas)."""
    taught: list[Task]
    """The tasks within the canvas with two or more demonstrations."""
    untaught: list[Task]
    """The tasks within the canvas with one demonstration."""
    stacked: Stacked | None
    """The taught tasks' demonstration views, stacked; None where nothing reads them (no adaptation,
    no search but the zero delta)."""
    deltas: dict[str, torch.Tensor]
    """Delta name -> (K, P) deltas of the taught tasks."""
    best_of: list[str]
    """Per taught task, the search whose delta ``best`` is."""
    plan: dict[str, tuple[Key, Scorer]]
    """Method name -> (the log-probs it scores, how): :func:`_plan`'s."""
    chosen: str
    """The delta the answer adapts (or scores) with."""
    names: list[str]
    """The searches that ran, zero first (:func:`_searches`)."""
    unadapted: dict[Key, dict[str, np.ndarray]]
    """(delta's name, False) -> task id -> test-view log-probs of the checkpoint's agent (taught tasks)."""
    plain: dict[str, np.ndarray]
    """Task id -> test-view log-probs of the checkpoint's agent without a delta (untaught tasks)."""
    info: dict[str, dict]
    """Task id -> its info before adaptation (the search, and the likelihoods where compared)."""


def _prepare(learner: EFELearner, policy: PolicyFn | None, tasks: list[Task], s: SolveSettings) -> _Shared:
    """Everything of :func:`solve_group` on blinded ``tasks`` before adaptation: one plan of methods
    for all; the views; the searches; the log-probs of every key that does not adapt."""
    canvas = learner.agent_cfg.canvas
    fits = [t for t in tasks if task_side(t) <= canvas]
    colours = {t.task_id: checkpoint_colours(learner, t.task_id, s.colours, s.seed) for t in fits}  # (perms, own)
    augs = {tid: under(perms, s.augmentations) for tid, (perms, _) in colours.items()}
    tests = {t.task_id: test_views(learner, t, augs[t.task_id], colours[t.task_id][1]) for t in fits}
    taught = [t for t in fits if has_demo_views(t)]
    untaught = [t for t in fits if not has_demo_views(t)]
    names = _searches(policy, s)
    chosen = s.search if s.search in (*names, "best") else "zero"
    plan = _plan(s, chosen, names)
    keys = {key for key, _ in plan.values()}
    stacked = None
    if taught and (any(a for _, a in keys) or len(names) > 1):  # the demonstrations are read
        stacked = stack_views([demo_views(learner, t, augs[t.task_id], colours[t.task_id][1]) for t in taught])
    deltas, likelihood, best_of = _search(learner, policy, taught, stacked, names, s)
    info = {}
    for i, t in enumerate(taught):
        info[t.task_id] = {"search": best_of[i] if chosen == "best" else chosen}
        if likelihood:
            info[t.task_id]["demo_log_lik"] = {n: round(v[i], 4) for n, v in likelihood.items()}
    unadapted = {(v, False): _unadapted(learner, taught, tests, deltas[v])
                 for v in sorted({v for v, a in keys if not a}, key=_order(chosen))} if taught else {}
    for t in untaught:
        info[t.task_id] = {"search": "none: fewer than two demonstrations"}
    return _Shared(tasks, tests, taught, untaught, stacked, deltas, best_of, plan, chosen, names, unadapted,
                   _unadapted(learner, untaught, tests), info)


def _finish(learner: EFELearner, shared: _Shared, s: SolveSettings) -> list[Solution]:
    """The group's solutions from ``shared`` at the one rate of ``s``: the adapted copies (where the
    plan adapts), then every method's attempts."""
    keys = {key for key, _ in shared.plan.values()}
    info = {tid: dict(v) for tid, v in shared.info.items()}
    by_key = dict(shared.unadapted)  # key -> task id -> log-probs
    adapted = sorted({v for v, a in keys if a}, key=_order(shared.chosen))
    if adapted and shared.taught:
        by_key.update(_adapt_keys(learner, shared, adapted, info, s))
    logp = {t.task_id: {key: by_key[key][t.task_id] for key in keys} for t in shared.taught}
    logp.update((tid, dict.fromkeys(keys, lp)) for tid, lp in shared.plain.items())  # nothing to search or adapt on
    untaught = {t.task_id for t in shared.untaught}
    note = UNTAUGHT if s.tta_steps or s.search != "none" else ""
    return [_answer(task, shared.tests, logp, shared.plan, learner.agent_cfg.canvas, info.get(task.task_id, {}),
                    note if task.task_id in untaught else "")
            for task in shared.tasks]


def _searches(policy: PolicyFn | None, s: SolveSettings) -> list[str]:
    """The searches run for a group (zero first): the chosen one, and with ``best`` or ablations
    every one, each where it can run (the policy search needs a policy and rounds, gradient steps)."""
    wanted = set(SEARCHES) if s.search == "best" or s.ablations else {"zero", s.search}
    runs = {"zero": True, "policy": policy is not None and s.search_rounds > 0, "gradient": s.search_steps > 0}
    return [n for n in SEARCHES if n in wanted and runs[n]]


def _plan(s: SolveSettings, chosen: str, names: list[str]) -> dict[str, tuple[Key, Scorer]]:
    """Method name -> (the log-probs it scores, how): ``model`` first, then the ablations (see the
    module docstring). The same for every task of a group, and for every group of a run."""
    tta = s.tta_steps > 0
    plan = {"model": ((chosen, tta), _poe)}
    if s.ablations:
        plan["model-no-tta"] = ((chosen, False), _poe)
        plan["model-old-voting"] = ((chosen, tta), _vote)
        plan.update((ABLATED[v], ((v, tta), _poe)) for v in names if tta or v == chosen)
    return plan


def _answer(task: Task, tests: dict[str, ViewSet], logp: LogProbs, plan: dict[str, tuple[Key, Scorer]],
            canvas: int, info: dict, note: str) -> Solution:
    """``task``'s attempts under every method of ``plan``; for a task larger than the canvas, copies
    of its test inputs under every method, each test input marked unanswered."""
    if task.task_id not in logp:
        copies = [(p.input.copy(), p.input.copy()) for p in task.test]
        return Solution(task.task_id, dict.fromkeys(plan, copies), tuple(range(len(task.test))),
                        f"larger than the {canvas}x{canvas} canvas")
    views, side, mine = tests[task.task_id], task_side(task), logp[task.task_id]
    methods = {name: score(task, views, mine[key], side) for name, (key, score) in plan.items()}
    return Solution(task.task_id, methods, note=note, info=info)


def _adapt_keys(learner: EFELearner, shared: _Shared, adapted: list[str], info: dict[str, dict],
                s: SolveSettings) -> dict[Key, dict[str, np.ndarray]]:
    """(v, True) -> task id -> test-view log-probs of the taught tasks' copies adapted with delta
    ``v``, for each of ``adapted``; each task's adaptation loss and fit go into ``info``. With
    ``best``, where every search is adapted anyway, each task's best copy is the one of its best search."""
    taught, chosen = shared.taught, shared.chosen
    reuse = chosen == "best" and set(shared.names) <= set(adapted)
    by_key, losses, fit = _adapted(learner, taught, shared.stacked, shared.tests, shared.deltas,
                                   [v for v in adapted if v != "best"] if reuse else adapted, s)
    if reuse:  # each task's best copy, its loss and its fit: those of its best search
        for table in (by_key, losses, fit):
            table[("best", True)] = {t.task_id: table[(shared.best_of[i], True)][t.task_id]
                                     for i, t in enumerate(taught)}
    for t in taught:
        first, last = losses[(chosen, True)][t.task_id]
        info[t.task_id]["tta_loss"] = [round(first, 4), round(last, 4)]
        info[t.task_id]["tta_demo_exact"] = round(fit[(chosen, True)][t.task_id], 4)
    return by_key


def _order(chosen: str) -> Callable[[str], tuple[bool, int]]:
    """Sort key of delta names: the chosen one first, then the searches in order."""
    return lambda v: (v != chosen, (*SEARCHES, "best").index(v))


def _search(learner: EFELearner, policy: PolicyFn | None, taught: list[Task], stacked: Stacked | None,
            names: list[str], s: SolveSettings) -> tuple[dict[str, torch.Tensor], dict[str, list[float]], list[str]]:
    """Deltas (K, P) by search name (``names``, and ``best``: per task, the first of them with the
    highest demonstration log-likelihood) of the tasks with demonstrations; the likelihoods, where
    ``names`` holds more than the zero delta (one delta alone has nothing to be compared with);
    which search each task's ``best`` is."""
    prompt_dim = learner.prompt.cfg.prompt_dim
    zero = torch.zeros((len(taught), prompt_dim), device=learner.device)
    if len(names) == 1 or not taught:  # the zero delta alone (or no task): nothing to compare
        return {"zero": zero, "best": zero}, {}, ["zero"] * len(taught)
    deltas = {"zero": zero}
    ll = {"zero": demo_log_lik(learner, stacked, zero)}
    if "policy" in names:
        deltas["policy"], ll["policy"] = policy_search(learner, policy, taught, stacked, rounds=s.search_rounds,
                                                       seed=s.seed)
    if "gradient" in names:
        deltas["gradient"], ll["gradient"] = gradient_search(learner, stacked, steps=s.search_steps, lr=s.search_lr)
    table = torch.stack([ll[n] for n in names])  # (searches, K)
    pick = table.argmax(0)  # first maximum: zero on a tie
    deltas["best"] = torch.stack([deltas[names[int(i)]][k] for k, i in enumerate(pick)])
    ll["best"] = table.max(0).values
    return deltas, {n: v.tolist() for n, v in ll.items()}, [names[int(i)] for i in pick]


def _adapted(learner, taught, stacked, tests, deltas, variants, s) -> tuple[dict, dict, dict]:
    """((variant, True) -> task id -> test-view log-probs of its adapted copy, one copy per (variant,
    task); (variant, True) -> task id -> the copy's loss at its first and last step; (variant, True)
    -> task id -> the share of its demonstration views the adapted copy predicts exactly)."""
    k = len(taught)
    copy_task = torch.arange(k, device=stacked.prompt.device).repeat(len(variants))  # (M,)
    copy_delta = torch.cat([deltas[v] for v in variants])  # (M, P)
    keys = torch.tensor([copy_key(s.seed, t.task_id, v) for v in variants for t in taught])  # (M,)
    adapted = adapt(learner, stacked, copy_task, copy_delta, steps=s.tta_steps, lr=s.tta_lr[0],
                    views=s.tta_views, keys=keys)

    def per_copy(value: Callable[[int, Task], Any]) -> dict:  # (variant, True) -> task id -> value(copy row, task)
        return {(v, True): {t.task_id: value(j * k + i, t) for i, t in enumerate(taught)}
                for j, v in enumerate(variants)}

    test_stack = stack_views([tests[t.task_id] for t in taught])
    lp = log_probs(adapted, test_stack, copy_task, learner).cpu().numpy()  # (M, V, S, S, 11)
    exact = demo_exact(adapted, stacked, copy_task, learner).tolist()  # (M,)
    ends = adapted.losses[[0, -1]].T.tolist()  # (M, 2): each copy's first and last loss
    return (per_copy(lambda c, t: lp[c, : len(tests[t.task_id])]), per_copy(lambda c, t: ends[c]),
            per_copy(lambda c, t: exact[c]))


def _unadapted(learner, tasks, tests, delta: torch.Tensor | None = None) -> dict[str, np.ndarray]:
    """Task id -> (V, S, S, 11) test-view log-probs of the checkpoint's agent, with the prompt plus
    ``delta[i]`` (K, P) for ``tasks[i]`` (no delta when None)."""
    out = {}
    for i, t in enumerate(tasks):
        views = tests[t.task_id]
        d = delta[i] if delta is not None else torch.zeros_like(views.prompt[0])
        with torch.no_grad(), learner.autocast():
            logits = learner.agent.eval()(views.canvas, views.prompt + d, views.view)
        out[t.task_id] = torch.log_softmax(logits.float(), -1).cpu().numpy()
    return out


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
