"""Answering tasks (efe_ray/evaluation/solve.py, adapt.py, search.py): adaptation on each task's own
demonstrations solves a task the untrained agent cannot, copies of a group learn independently,
no test output is ever read, the checkpoint and the caller's RNG are left alone, and the ablated
methods come from the same pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.data.task import Pair, Task, as_grid, blind
from efe_ray.evaluation.adapt import adapt, demo_exact, stack_views
from efe_ray.evaluation.search import _demo_accuracy, demo_log_lik, gradient_search, policy_search
from efe_ray.evaluation.solve import SolveSettings, solve_group
from efe_ray.evaluation import views as views_mod
from efe_ray.evaluation.views import d8_views, demo_views, task_side

MAPPING = np.array([0, 4, 5, 6, 4, 5, 6, 7, 8, 9])
"""Colour 1 -> 4, 2 -> 5, 3 -> 6: a rule the agent can only learn from the demonstrations."""


def colour_map_task(task_id: str, seed: int, demos: int = 4) -> Task:
    rng = np.random.default_rng(seed)
    grids = [rng.integers(1, 4, (3, 3)) for _ in range(demos + 1)]
    pairs = tuple(Pair(as_grid(g), as_grid(MAPPING[g])) for g in grids)
    return Task(task_id, pairs[:demos], pairs[demos:])


@pytest.fixture
def learner(make_learner):
    torch.manual_seed(0)
    learner, _ = make_learner(agent={"canvas": 6, "d_model": 32, "num_layers": 1, "num_heads": 2})
    return learner


def solved(solution, task) -> bool:
    return any(np.array_equal(a, task.test[0].output) for a in solution.methods["model"][0])


def test_adaptation_on_the_demonstrations_solves_what_the_untrained_agent_cannot(learner):
    task = colour_map_task("map", seed=1)
    settings = SolveSettings(augmentations=1, search="none", seed=0)
    before = solve_group(learner, None, [task], settings)[0]
    after = solve_group(learner, None, [task], SolveSettings(augmentations=1, search="none", tta_steps=150,
                                                              tta_lr=(3e-3,), tta_views=16, seed=0))[0]
    assert not solved(before, task) and solved(after, task)
    first, last = after.info["tta_loss"]
    assert last < 0.2 * first
    assert after.info["tta_demo_exact"] == 1.0 and "tta_demo_exact" not in before.info  # fit its demonstrations


def test_the_demonstration_fit_of_copies_counts_each_copys_own_real_views(learner):
    """demo_exact against a slow reference: view by view, a view counts if it is one of the copy's
    task's real views, and is right if every cell of its square is; padding never counts."""
    tasks = [colour_map_task("a", seed=1), colour_map_task("b", seed=2, demos=2)]
    stacked = stack_views([demo_views(learner, t, d8_views(4)) for t in tasks])
    assert stacked.count.tolist() == [16, 8]  # b's views are padded to a's count
    copy_task = torch.tensor([0, 1, 1])
    delta = torch.randn(3, learner.prompt.cfg.prompt_dim) * 0.1
    adapted = adapt(learner, stacked, copy_task, delta, steps=25, lr=3e-3, views=4, keys=torch.arange(3))
    assert torch.equal(adapted.offsets, delta[:, None])  # one colour version: the delta alone
    got = demo_exact(adapted, stacked, copy_task, learner).tolist()
    with torch.no_grad():
        pred = adapted.agent(stacked.canvas[copy_task], stacked.prompt[copy_task] + delta[:, None],
                             stacked.view[copy_task]).argmax(-1)
    ref = []
    for j, k in enumerate(copy_task.tolist()):
        right = [all(pred[j, v, y, x] == stacked.target[k, v, y, x] for y in range(pred.shape[2])
                     for x in range(pred.shape[3]) if stacked.weight[k, v, y, x] > 0)
                 for v in range(int(stacked.count[k]))]
        ref.append(sum(right) / len(right))
    assert got == pytest.approx(ref)
    assert any(0 < x < 1 for x in got) or len(set(got)) > 1, got  # not a constant: the check has teeth


def test_copies_of_a_group_adapt_each_to_its_own_task(learner):
    """Two tasks in one group: each copy is trained on its own task's views only, drawn from its own
    stream, so adapting a group gives each task what adapting it alone gives (same views, same keys)."""
    a, b = colour_map_task("a", seed=1), colour_map_task("b", seed=2)
    augs = d8_views(2)
    views = [demo_views(learner, t, augs) for t in (a, b)]
    together = stack_views(views)
    copy_task = torch.tensor([0, 1])
    keys = torch.tensor([11, 22])
    zero = torch.zeros(2, learner.prompt.cfg.prompt_dim)
    adapted = adapt(learner, together, copy_task, zero, steps=5, lr=1e-3, views=4, keys=keys)
    assert adapted.losses.shape == (5, 2) and torch.isfinite(adapted.losses).all()
    first = dict(adapted.agent.named_parameters())

    def gap(one, j):  # the largest difference between the group's copy j and a copy adapted alone
        out = 0.0
        for name, p in one.named_parameters():
            full = first[name].detach()
            mine = (full[:, j: j + 1] if name == "coord_emb" else full.view(2, -1)[j: j + 1] if name == "stem"
                    else full[j: j + 1])
            out = max(out, float((mine.reshape(p.shape) - p.detach()).abs().max()))
        return out

    def alone(j, key):
        return adapt(learner, stack_views(views[j: j + 1]), torch.tensor([0]), zero[:1], steps=5, lr=1e-3,
                     views=4, keys=torch.tensor([key])).agent

    # The same draws reach each copy either way. Float sums in batched products differ in order, and
    # Adam's normalised step can turn that into a visible difference of a near-zero gradient's
    # weights (6e-5 here); other draws move the weights a hundred times as far.
    for j in range(2):
        assert gap(alone(j, int(keys[j])), j) < 1e-3
        assert gap(alone(j, 99), j) > 3e-3


def test_no_test_output_is_read_and_the_checkpoint_and_rng_are_left_alone(learner):
    task = colour_map_task("map", seed=1)
    garbage = Task("map", task.train, (Pair(task.test[0].input, as_grid([[9] * 7] * 7)),))
    settings = SolveSettings(augmentations=2, tta_steps=3, tta_views=4, search="gradient", search_steps=2, seed=5)
    weights = {k: v.clone() for k, v in learner.agent.state_dict().items()}
    rng = torch.get_rng_state()
    one = solve_group(learner, None, [task], settings)[0]
    two = solve_group(learner, None, [garbage], settings)[0]
    for (x, y), (u, v) in zip(one.methods["model"], two.methods["model"]):
        assert np.array_equal(x, u) and np.array_equal(y, v)
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(weights[k], v) for k, v in learner.agent.state_dict().items())
    views = views_mod.test_views(learner, blind(task), d8_views(2))
    assert len(views) == 2 and views.target is None and task_side(task) == 3


def test_ablations_come_from_the_same_pass_and_a_task_too_large_is_unanswered(learner):
    tasks = [colour_map_task("map", seed=1), Task("big", (Pair(as_grid([[1] * 8] * 8), as_grid([[2]])),) * 2,
                                               (Pair(as_grid([[1] * 8] * 8), None),))]
    calls = []

    def policy(task, learner, feedback=None, seed=None):
        calls.append((task.task_id, feedback, seed))
        return np.full(learner.prompt.cfg.prompt_dim, 0.01 * len(calls), dtype=np.float32)

    settings = SolveSettings(augmentations=2, tta_steps=2, tta_views=4, search="best", search_rounds=3,
                             search_steps=2, ablations=True)
    answer, big = solve_group(learner, policy, tasks, settings)
    assert set(answer.methods) == {"model", "model-no-tta", "model-old-voting", "model-no-search",
                                   "model-policy-search", "model-gradient-search"}
    assert answer.info["search"] in ("zero", "policy", "gradient")
    assert set(answer.info["demo_log_lik"]) == {"zero", "policy", "gradient", "best"}
    assert answer.info["demo_log_lik"]["best"] == max(answer.info["demo_log_lik"][k] for k in ("zero", "policy", "gradient"))
    assert [c[0] for c in calls] == ["map"] * 3 and calls[0][1] is None and calls[1][1][0] == pytest.approx(1 / 3)
    same = {"zero": "model-no-search", "policy": "model-policy-search", "gradient": "model-gradient-search"}
    for (a, b), (c, d) in zip(answer.methods["model"], answer.methods[same[answer.info["search"]]]):
        assert np.array_equal(a, c) and np.array_equal(b, d)  # the chosen search's adapted copy, not another
    assert big.unanswered == (0,) and "canvas" in big.note  # an 8x8 task on a 6x6 canvas
    assert set(big.methods) == set(answer.methods)  # stand-ins under every method: no ablated row fails it


def test_by_default_no_search_runs_and_the_answer_adapts_the_zero_delta(learner):
    """The default (``search="none"``, as ``--search`` on the command line): the policy is never
    asked, and the answer is that of an explicit zero delta."""
    from efe_ray.evaluation.arguments import parse_args

    assert parse_args(["--split", "arc1-eval", "--baseline", "copy_input"]).search == SolveSettings().search == "none"
    task, calls = colour_map_task("map", seed=1), []

    def policy(task, learner, feedback=None, seed=None):
        calls.append(task.task_id)
        return np.ones(learner.prompt.cfg.prompt_dim, dtype=np.float32)

    default = solve_group(learner, policy, [task], SolveSettings(augmentations=2, tta_steps=3, tta_views=4))[0]
    assert calls == [] and default.info["search"] == "zero"
    assert "demo_log_lik" not in default.info  # one delta: no likelihood to compare it with
    alone = solve_group(learner, None, [task], SolveSettings(augmentations=2, tta_steps=3, tta_views=4, search="none"))[0]
    for (a, b), (c, d) in zip(default.methods["model"], alone.methods["model"]):
        assert np.array_equal(a, c) and np.array_equal(b, d)


def test_without_adaptation_or_search_the_demonstrations_views_are_never_built(learner, monkeypatch):
    """No adaptation and the zero delta alone (``--tta-steps 0``, the default search): nothing reads
    the demonstrations' views, so none are built (their prompts are most of such a run's cost), and
    the answers are those the checkpoint's agent gives with the zero delta: the ``model-no-tta``
    row of a run that adapts."""
    import efe_ray.evaluation.solve as solve

    tasks = [colour_map_task("map", seed=1), colour_map_task("other", seed=2)]
    adapting = solve_group(learner, None, tasks, SolveSettings(augmentations=2, tta_steps=2, tta_views=4,
                                                               ablations=True))

    def refuse(*args, **kw):
        raise AssertionError("demonstration views built where nothing reads them")

    monkeypatch.setattr(solve, "demo_views", refuse)
    plain = solve_group(learner, None, tasks, SolveSettings(augmentations=2))
    for mine, other in zip(plain, adapting):
        assert set(mine.methods) == {"model"} and mine.info == {"search": "zero"}
        for (a, b), (c, d) in zip(mine.methods["model"], other.methods["model-no-tta"]):
            assert np.array_equal(a, c) and np.array_equal(b, d)


def test_searches_keep_their_best_proposal(learner):
    task = colour_map_task("map", seed=1)
    demos = stack_views([demo_views(learner, task, d8_views(1))])
    zero = torch.zeros(1, learner.prompt.cfg.prompt_dim)
    base = demo_log_lik(learner, demos, zero)
    delta, ll = gradient_search(learner, demos, steps=5, lr=0.5)
    assert ll >= base and torch.allclose(demo_log_lik(learner, demos, delta), ll, atol=1e-4)
    p = learner.prompt.cfg.prompt_dim
    proposals = iter([np.zeros(p), np.ones(p) * 3, np.ones(p) * -3])
    delta, ll = policy_search(learner, lambda *a, **k: next(proposals).astype(np.float32), [task], demos,
                              rounds=3, seed=0)
    options = [demo_log_lik(learner, demos, torch.full((1, p), v)) for v in (0.0, 3.0, -3.0)]
    assert ll == pytest.approx(float(max(options)), abs=1e-4)


def one_demo_task(task_id: str) -> Task:
    """One demonstration (no leave-one-out pair: nothing to search or adapt on), two test inputs."""
    return Task(task_id, (Pair(as_grid([[1, 2], [3, 1]]), as_grid([[4, 5], [6, 4]])),),
                (Pair(as_grid([[2, 2], [1, 3]]), None), Pair(as_grid([[3]]), None)))


@pytest.mark.parametrize("search", ["best", "none", "policy", "gradient"])
def test_a_single_demonstration_task_is_answered_beside_adapted_neighbours(learner, search):
    """Regression: with adaptation, a group holding a one-demonstration task failed as a whole
    (KeyError: ('best', False)): its unadapted log-probabilities were asked for, never computed."""
    one, taught = one_demo_task("one"), colour_map_task("map", seed=1)
    settings = SolveSettings(augmentations=2, tta_steps=2, tta_views=4, search=search, search_steps=2, seed=0)
    got = {s.task_id: s for s in solve_group(learner, None, [taught, one], settings)}
    assert len(got["map"].info["tta_loss"]) == 2 and len(got["map"].methods["model"]) == 1
    assert got["one"].info["search"] == "none: fewer than two demonstrations" and "tta_loss" not in got["one"].info
    # Nothing to learn from: the checkpoint as it is, with no delta, answers it.
    plain = solve_group(learner, None, [one], SolveSettings(augmentations=2, search="none", seed=0))[0]
    assert len(got["one"].methods["model"]) == 2
    for (a, b), (c, d) in zip(got["one"].methods["model"], plain.methods["model"]):
        assert np.array_equal(a, c) and np.array_equal(b, d)


def small_policy(task, learner, feedback=None, seed=None):
    """A stand-in policy: a small delta that depends on the proposal's seed."""
    rng = np.random.default_rng(seed or 0)
    return (0.05 * rng.standard_normal(learner.prompt.cfg.prompt_dim)).astype(np.float32)


def test_every_task_gets_every_method_whatever_its_group(learner):
    """With ablations, a one-demonstration task is answered under every method its neighbours are,
    alone or beside them, so that no ablated row counts it as a failure; every method's answer is
    the checkpoint's own (there is nothing to search or adapt on), old voting aside."""
    one, taught = one_demo_task("one"), colour_map_task("map", seed=1)
    settings = SolveSettings(augmentations=2, tta_steps=2, tta_views=4, search="best", search_rounds=2,
                             search_steps=1, ablations=True)
    mixed = {s.task_id: s for s in solve_group(learner, small_policy, [taught, one], settings)}
    alone = solve_group(learner, small_policy, [one], settings)[0]
    every = {"model", "model-no-tta", "model-old-voting", "model-no-search", "model-policy-search",
             "model-gradient-search"}
    assert set(mixed["map"].methods) == set(mixed["one"].methods) == set(alone.methods) == every
    plain = solve_group(learner, None, [one], SolveSettings(augmentations=2, search="none"))[0].methods["model"]
    for name in every - {"model-old-voting"}:
        for got in (mixed["one"].methods[name], alone.methods[name]):
            assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(got, plain))
    assert mixed["one"].note.startswith("one demonstration") and not mixed["map"].note


@pytest.mark.parametrize("search, settings", [("policy", {}), ("gradient", {"search_steps": 0})])
def test_a_search_that_cannot_run_gives_the_zero_delta(learner, search, settings):
    """``--search policy`` without a policy, ``--search gradient`` without steps: the zero delta,
    adapted, said in the info (these failed with adaptation: nothing was adapted for the search)."""
    task = colour_map_task("map", seed=1)
    common = dict(augmentations=2, tta_steps=2, tta_views=4, seed=0, **settings)
    got = solve_group(learner, None, [task], SolveSettings(search=search, **common))[0]
    zero = solve_group(learner, None, [task], SolveSettings(search="none", **common))[0]
    assert got.info["search"] == "zero" and got.info["tta_loss"] == zero.info["tta_loss"]
    assert all(np.array_equal(a, c) and np.array_equal(b, d)
               for (a, b), (c, d) in zip(got.methods["model"], zero.methods["model"]))
