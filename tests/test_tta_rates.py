"""Several adaptation rates in one evaluation (efe_ray/evaluation/solve.py, ``--tta-lr A B``): each
rate's copy is the copy of a run with that rate alone, and the attempts merge the copies' best
answers first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.evaluation.arguments import parse_args
from efe_ray.evaluation.solve import SolveSettings, merge_attempts, rate_method, solve_group

MAPPING = np.array([0, 4, 5, 6, 4, 5, 6, 7, 8, 9])


def colour_map_task(task_id: str, seed: int, demos: int = 3, tests: int = 2) -> Task:
    rng = np.random.default_rng(seed)
    grids = [rng.integers(1, 4, (3, 3)) for _ in range(demos + tests)]
    pairs = tuple(Pair(as_grid(g), as_grid(MAPPING[g])) for g in grids)
    return Task(task_id, pairs[:demos], pairs[demos:])


def g(*cells: int) -> np.ndarray:
    return np.array([cells], dtype=np.int64)


def same(x: tuple, y: tuple) -> bool:
    return all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(x, y))


def reference_merge(copies: list[list[tuple]]) -> list[tuple]:
    """Slow reference: per test input, list every copy's first then every copy's second, drop
    repeats (by value), take the first two; one distinct grid is answered twice."""
    out = []
    for i in range(len(copies[0])):
        order = [c[i][0] for c in copies] + [c[i][1] for c in copies]
        distinct = []
        for grid in order:
            if all(not np.array_equal(grid, d) or grid.shape != d.shape for d in distinct):
                distinct.append(grid)
        out.append((distinct[0], distinct[1] if len(distinct) > 1 else distinct[0]))
    return out


def test_merging_takes_each_copys_best_answer_before_any_second_one():
    a1, a2, b1, b2 = g(1), g(2), g(3), g(4)
    assert same(merge_attempts([[(a1, a2)], [(b1, b2)]])[0], (a1, b1))  # two bests, distinct
    assert same(merge_attempts([[(a1, a2)], [(a1, b2)]])[0], (a1, a2))  # the same best: a's second
    assert same(merge_attempts([[(a1, a1)], [(a1, a1)]])[0], (a1, a1))  # one grid in all: twice
    assert same(merge_attempts([[(a1, a2)]])[0], (a1, a2))  # one copy: its own attempts
    assert same(merge_attempts([[(a1, a2)], [(a1, a1)], [(b1, a2)]])[0], (a1, b1))  # third copy's best
    # a grid of another shape with the same cells is another answer
    assert same(merge_attempts([[(g(1, 1), a2)], [(np.array([[1], [1]]), b2)]])[0], (g(1, 1), np.array([[1], [1]])))
    rng = np.random.default_rng(0)
    for _ in range(200):  # against the slow reference, on grids that often repeat
        copies = [[(g(*rng.integers(0, 3, 1)), g(*rng.integers(0, 3, 1))) for _ in range(2)] for _ in range(3)]
        for got, want in zip(merge_attempts(copies), reference_merge(copies)):
            assert same(got, want)


@pytest.fixture
def learner(make_learner):
    torch.manual_seed(0)
    learner, _ = make_learner(agent={"canvas": 6, "d_model": 32, "num_layers": 1, "num_heads": 2})
    return learner


@pytest.mark.parametrize("dropout", [0.0, 0.2])  # with dropout, adaptation draws on torch's global RNG
def test_two_rates_give_each_rates_own_copy_and_merge_their_attempts(make_learner, dropout):
    torch.manual_seed(0)
    learner, _ = make_learner(agent={"canvas": 6, "d_model": 32, "num_layers": 1, "num_heads": 2, "dropout": dropout})
    tasks = [colour_map_task("a", seed=1), colour_map_task("b", seed=2, demos=2, tests=1),
             Task("one", (Pair(as_grid([[1, 2]]), as_grid([[4, 5]])),), (Pair(as_grid([[2, 1]]), None),))]
    common = dict(augmentations=2, colours=2, tta_steps=6, tta_views=4, search="none", ablations=True, seed=3)
    rates = (3e-3, 0.3)
    both = solve_group(learner, None, tasks, SolveSettings(tta_lr=rates, **common))
    alone = [solve_group(learner, None, tasks, SolveSettings(tta_lr=(lr,), **common)) for lr in rates]
    for i, task in enumerate(tasks):
        mine, singles = both[i], [run[i] for run in alone]
        assert set(mine.methods) == set(singles[0].methods) | {"model-lr0.003", "model-lr0.3"}
        for lr, single in zip(rates, singles):  # each rate's copy: the run with that rate alone
            for x, y in zip(mine.methods[rate_method(lr)], single.methods["model"]):
                assert same(x, y)
        for name in singles[0].methods:  # every method merged across the rates' passes
            for x, y in zip(mine.methods[name], merge_attempts([s.methods[name] for s in singles])):
                assert same(x, y)
        for x, y in zip(mine.methods["model-no-tta"], singles[0].methods["model-no-tta"]):
            assert same(x, y)  # no adaptation: the same answers whatever the rate
    a = both[0]
    assert a.info["tta_demo_exact"] == alone[0][0].info["tta_demo_exact"]  # the first rate's fit, as before
    assert a.info["by_rate"] == {f"{lr:g}": {k: run[0].info[k] for k in ("tta_demo_exact", "tta_loss")}
                                 for lr, run in zip(rates, alone)}
    assert alone[0][0].info["tta_loss"] != alone[1][0].info["tta_loss"]  # the rates did differ
    assert "by_rate" not in both[2].info and "one demonstration" in both[2].note  # nothing adapted there


def test_two_rates_build_the_views_and_run_the_unadapted_agent_once(learner, monkeypatch):
    """What does not depend on the rate (views, prompts, searches, the checkpoint's own forward
    passes) is paid once for all rates, as for one."""
    import efe_ray.evaluation.solve as solve

    calls = {"test_views": 0, "demo_views": 0, "_unadapted": 0}
    for name in calls:
        def counted(*args, _f=getattr(solve, name), _n=name, **kw):
            calls[_n] += 1
            return _f(*args, **kw)
        monkeypatch.setattr(solve, name, counted)
    tasks = [colour_map_task("a", seed=1), colour_map_task("b", seed=2, demos=2, tests=1)]
    common = dict(augmentations=2, tta_steps=3, tta_views=4, search="none", ablations=True)
    solve_group(learner, None, tasks, SolveSettings(tta_lr=(3e-3,), **common))
    once = dict(calls)
    solve_group(learner, None, tasks, SolveSettings(tta_lr=(3e-3, 0.01, 0.1), **common))
    assert {k: v - once[k] for k, v in calls.items()} == once == {"test_views": 2, "demo_views": 2, "_unadapted": 2}


def test_rates_are_given_as_a_tuple_of_distinct_positive_values():
    assert SolveSettings().tta_lr == (3e-3,)
    for bad in (3e-3, (), (0.01, 0.01), (0.01, 0.0)):
        with pytest.raises(ValueError, match="tta_lr|learning rates"):
            SolveSettings(tta_steps=5, tta_lr=bad)
    with pytest.raises(ValueError, match="without adaptation"):
        SolveSettings(tta_lr=(0.003, 0.01))  # no steps: the rates' passes would be one
    base = ["--split", "arc1-eval", "--checkpoint", "ckpt"]
    assert parse_args(base).tta_lr == [3e-3]
    assert parse_args([*base, "--tta-steps", "5", "--tta-lr", "0.003", "0.01"]).tta_lr == [0.003, 0.01]
    for bad in (["--tta-steps", "5", "--tta-lr", "0.01", "0.01"], ["--tta-steps", "5", "--tta-lr", "0.01", "-1"],
                ["--tta-lr", "0.003", "0.01"]):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])
