"""Colour versions in evaluation (``--colours``, efe_ray/evaluation/views.py, adapt.py, solve.py): a
task is seen under each of its colour versions (permutations fixing the background, the identity
first) under each D8 transform; every view carries its version; adaptation learns a prompt offset
for every version but the first; answers are mapped back to the task's own colours; and a checkpoint
trained with colour versions is seen under its own, with their rows of its task table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from efe_ray.data.augment import IDENTITY_COLOURS, colour_versions
from efe_ray.data.canvas import from_canvas, to_canvas
from efe_ray.evaluate import parse_args
from efe_ray.evaluation.adapt import adapt, log_probs, stack_views
from efe_ray.evaluation.solve import SolveSettings, solve_group
from efe_ray.evaluation.streams import copy_key
from efe_ray.evaluation import views as views_mod  # not its test_views by name: pytest would collect it
from efe_ray.evaluation.views import checkpoint_colours, colour_index, d8_views, demo_views, task_side, under

from test_colour_versions import TASKS, versioned  # noqa: F401  (a fixture)
from test_solve import colour_map_task, solved


def task_views(task_id: str, augmentations: int, colours: int, seed: int):
    """What evaluation sees a task under without versions of its own (checkpoint_colours' fallback)."""
    return under(colour_versions(task_id, seed, colours), augmentations)


@pytest.fixture
def learner(make_learner):
    torch.manual_seed(0)
    learner, _ = make_learner(agent={"canvas": 6, "d_model": 32, "num_layers": 1, "num_heads": 2})
    return learner


def test_views_are_every_colour_version_under_every_d8_transform_and_each_has_an_inverse():
    assert task_views("t", 8, 1, 0) == d8_views(8)
    views = task_views("t", 2, 3, seed=7)
    assert [a.d8 for a in views] == [0, 1] * 3
    assert [a.colours for a in views[::2]] == [tuple(p) for p in colour_versions("t", 7, 3)]
    assert views[0].colours == IDENTITY_COLOURS and all(a.colours[0] == 0 for a in views)  # background kept
    assert len({a.colours for a in views}) == 3 and colour_index(views) == [0, 0, 1, 1, 2, 2]
    assert task_views("t", 2, 3, seed=7) == views  # a function of the task, the seed and the counts
    assert task_views("t", 2, 3, seed=8) != views and task_views("u", 2, 3, seed=7) != views
    grid = np.random.default_rng(0).integers(0, 10, (3, 5))
    for a in task_views("t", 8, 4, seed=0):
        assert np.array_equal(a.invert(a.apply(grid)), grid)


def test_views_carry_their_colour_version_and_its_permuted_grids(learner):
    task = colour_map_task("map", seed=1, demos=3)
    augs = task_views("map", 2, 3, seed=0)
    demos, tests = demo_views(learner, task, augs), views_mod.test_views(learner, task, augs)
    assert demos.colour.tolist() == [c for c in colour_index(augs) for _ in range(3)]  # 3 leave-one-out views each
    assert tests.colour.tolist() == colour_index(augs)  # one test input
    side = demos.canvas.shape[-1]
    for i, (a, j) in enumerate(zip(demos.augs, demos.query)):
        assert torch.equal(demos.canvas[i], torch.as_tensor(to_canvas(a.apply(task.train[j].input), side)))
        assert torch.equal(demos.target[i], torch.as_tensor(to_canvas(a.apply(task.train[j].output), side)))
    assert stack_views([demos]).colour.tolist() == [demos.colour.tolist()]


def test_adaptation_learns_an_offset_for_every_colour_version_but_the_first(learner):
    tasks = [colour_map_task("a", seed=1), colour_map_task("b", seed=2, demos=2)]
    stacked = stack_views([demo_views(learner, t, task_views(t.task_id, 2, 3, seed=0)) for t in tasks])
    copy_task = torch.tensor([0, 1])
    delta = torch.randn(2, learner.prompt.cfg.prompt_dim) * 0.1
    adapted = adapt(learner, stacked, copy_task, delta, steps=10, lr=3e-3, views=4, keys=torch.arange(2))
    assert adapted.offsets.shape == (2, 3, learner.prompt.cfg.prompt_dim)
    assert torch.equal(adapted.offsets[:, 0], delta)  # the task's own colours: the delta, unlearned
    assert (adapted.offsets[:, 1:] - delta[:, None]).abs().amin(-1).gt(0).all()  # every other version moved
    # each view is scored with its own version's offset: against the copies' forward, prompt by prompt
    tests = stack_views([views_mod.test_views(learner, t, task_views(t.task_id, 2, 3, seed=0)) for t in tasks])
    prompts = torch.stack([torch.stack([tests.prompt[k, v] + adapted.offsets[k, int(tests.colour[k, v])]
                                        for v in range(tests.prompt.shape[1])]) for k in range(2)])
    with torch.no_grad():
        ref = torch.log_softmax(adapted.agent(tests.canvas, prompts, tests.view).float(), -1)
    torch.testing.assert_close(log_probs(adapted, tests, copy_task, learner), ref)


def test_answers_under_colour_versions_are_mapped_back_to_the_tasks_colours(learner):
    """A task whose rule names colours (1 -> 4, 2 -> 5, 3 -> 6), adapted under three colour versions:
    the answer comes back in the task's own colours, and so does every version's read-off alone."""
    task = colour_map_task("map", seed=1)
    settings = SolveSettings(augmentations=1, colours=3, search="none", tta_steps=150, tta_lr=(3e-3,), tta_views=16, seed=0)
    answer = solve_group(learner, None, [task], settings)[0]
    assert solved(answer, task) and answer.info["tta_demo_exact"] == 1.0
    # every version on its own: its read-off, mapped back through its inverse, is the answer
    augs = task_views("map", 1, 3, seed=0)
    demos = stack_views([demo_views(learner, task, augs)])
    adapted = adapt(learner, demos, torch.tensor([0]), torch.zeros(1, learner.prompt.cfg.prompt_dim),
                    steps=150, lr=3e-3, views=16, keys=torch.tensor([copy_key(0, "map", "zero")]))
    tests = views_mod.test_views(learner, task, augs)
    logp = log_probs(adapted, stack_views([tests]), torch.tensor([0]), learner)[0]  # (3, S, S, 11)
    side = task_side(task)
    for a, lp in zip(tests.augs, logp):
        read = a.invert(from_canvas(lp[:side, :side].argmax(-1).numpy()))
        assert np.array_equal(read, task.test[0].output), a
    assert len({a.colours for a in tests.augs}) == 3


@pytest.mark.parametrize("colours", [0, 101])
def test_a_colour_count_out_of_range_is_refused(colours, capsys):
    with pytest.raises(ValueError, match="colours must lie in 1..100"):
        SolveSettings(colours=colours)
    with pytest.raises(SystemExit):
        parse_args(["--checkpoint", "x", "--split", "arc1-eval", "--colours", str(colours)])
    assert f"--colours must lie in 1..100 (colour versions), got {colours}" in capsys.readouterr().err



def test_a_checkpoint_trained_with_colour_versions_is_seen_under_its_own_versions_and_rows(versioned):
    """With learner.colour_versions V >= --colours on a task of its table, evaluation uses the
    checkpoint's own versions (from the learner's seed, not the evaluation's) and each version's row
    of the task table; otherwise the evaluation seed's versions and the task's one row."""
    learner, _ = versioned()  # V = 3 versions, learner seed 7, a table of TASKS
    task, index = TASKS[1], 1
    perms, own = checkpoint_colours(learner, task.task_id, 3, seed=0)
    assert own and np.array_equal(perms, colour_versions(task.task_id, 7, 3))
    perms, own = checkpoint_colours(learner, task.task_id, 2, seed=0)
    assert own and np.array_equal(perms, colour_versions(task.task_id, 7, 3)[:2])
    for tid, c in ((task.task_id, 4), ("not-in-the-table", 3), (task.task_id, 1)):
        perms, own = checkpoint_colours(learner, tid, c, seed=0)
        assert not own and np.array_equal(perms, colour_versions(tid, 0, c))
    with torch.no_grad():
        learner.prompt.task_table.normal_()  # rows that differ
    augs = under(colour_versions(task.task_id, 7, 3), 2)
    table = learner.prompt.task_table.detach()
    for build in (demo_views, views_mod.test_views):
        own_rows, one_row = build(learner, task, augs, own_rows=True), build(learner, task, augs)
        assert sorted(set(own_rows.colour.tolist())) == [0, 1, 2]
        torch.testing.assert_close(own_rows.prompt - one_row.prompt, table[3 * index + own_rows.colour] - table[3 * index])
    settings = SolveSettings(augmentations=1, colours=3, search="none", tta_steps=2, tta_views=2, seed=0)
    answer = solve_group(learner, None, [task], settings)[0]
    assert len(answer.methods["model"]) == len(task.test) and "tta_demo_exact" in answer.info


def test_the_adapted_copies_score_views_in_chunks_as_in_one_pass(learner, monkeypatch):
    """log_probs and demo_exact pass VIEW_CHUNK views a copy at a time: with chunks of 5 views (not a
    divisor of the 16 views a copy) they give what one pass gives."""
    from efe_ray.evaluation import adapt as adapt_mod

    tasks = [colour_map_task("a", seed=1), colour_map_task("b", seed=2, demos=2)]
    stacked = stack_views([demo_views(learner, t, task_views(t.task_id, 2, 2, seed=0)) for t in tasks])
    copy_task = torch.tensor([0, 1])
    adapted = adapt(learner, stacked, copy_task, torch.zeros(2, learner.prompt.cfg.prompt_dim), steps=15, lr=3e-3,
                    views=4, keys=torch.arange(2))
    whole = (log_probs(adapted, stacked, copy_task, learner), adapt_mod.demo_exact(adapted, stacked, copy_task, learner))
    monkeypatch.setattr(adapt_mod, "VIEW_CHUNK", 5)
    chunked = (log_probs(adapted, stacked, copy_task, learner), adapt_mod.demo_exact(adapted, stacked, copy_task, learner))
    assert stacked.canvas.shape[1] == 16
    torch.testing.assert_close(chunked[0], whole[0])
    assert torch.equal(chunked[1], whole[1])
