"""efe_ray/data/store.py, device_views.py and device_sampler.py against the host implementation:
every D8 gather equals numpy's transform and its inverse; for the same draws, canvases, targets,
masks, features and prompt token ids equal the host's; the draws' statistics equal the host
sampler's (query, leave-one-out demonstrations, D8, colour permutations, rehearsal by size)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from efe_ray.config import LearnerConfig
from efe_ray.data.augment import Augmentation
from efe_ray.data.batching import MAX_DEMOS, TaskSampler, known_pairs
from efe_ray.data.canvas import to_canvas
from efe_ray.data.device_sampler import DeviceSampler
from efe_ray.data.device_views import cells, identity_colours, prompt_tokens
from efe_ray.data.serialize import grid_tokenizer
from efe_ray.data.store import TaskStore
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.models.prompt import _char_ids

from strategies import SETTINGS, grids

CPU = torch.device("cpu")


def arc_like_tasks(seed: int, n: int = 5, max_side: int = 9) -> list[Task]:
    """Tasks of 2..7 pairs whose grids differ in shape within a pair and between pairs."""
    rng = np.random.default_rng(seed)

    def grid():
        return as_grid(rng.integers(0, 10, size=rng.integers(1, max_side + 1, size=2)))

    return [Task(f"t{k}", tuple(Pair(grid(), grid()) for _ in range(rng.integers(1, 6))),
                 (Pair(grid(), grid()),) * int(rng.integers(1, 3))) for k in range(n)]


@given(grid=grids(max_side=12), d8=st.integers(0, 7), perm=st.permutations(range(1, 10)))
@SETTINGS
def test_each_d8_gather_equals_the_numpy_transform_and_its_inverse(grid, d8, perm):
    aug = Augmentation(d8, (0, *perm))
    store = TaskStore.build([Task("g", (Pair(as_grid(grid), as_grid(grid)),) * 2, ())])
    side = 12
    i, j = torch.arange(side)[:, None], torch.arange(side)[None, :]
    lut = torch.tensor([list(aug.colours) + [10]])
    got = cells(store, torch.tensor([[0]]), 0, i[None], j[None], torch.tensor([[[d8]]]), lut)[0]
    np.testing.assert_array_equal(got.numpy(), to_canvas(aug.apply(grid), side))
    # the inverse gather of the transformed grid gives the grid back
    back_store = TaskStore.build([Task("b", (Pair(aug.apply(grid), aug.apply(grid)),) * 2, ())])
    inv = aug.inverse()
    back = cells(back_store, torch.tensor([[0]]), 1, i[None], j[None], torch.tensor([[[inv.d8]]]),
                 torch.tensor([list(inv.colours) + [10]]))[0]
    np.testing.assert_array_equal(back.numpy(), to_canvas(np.asarray(grid), side))


@pytest.mark.parametrize("augment,colours", [(True, True), (True, False), (False, False)])
def test_device_tensors_equal_the_host_batch_of_the_same_draws(augment, colours):
    tasks = arc_like_tasks(seed=1)
    cfg = LearnerConfig(batch_size=24, rehearsal=40, augment=augment, augment_colours=colours, seed=3)
    sampler = DeviceSampler(tasks, cfg, side=12)
    for task in tasks[:3]:
        batch = sampler.batch(task)
        host = batch.host_batch()  # the same views, made by the host's Augmentation and Batch code
        got, want = batch.tensors(CPU), host.tensors(CPU)
        for name in ("canvas", "target", "loss_mask", "target_mask", "view"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=0, msg=name)
        # features: the host computes them from the augmented views themselves
        torch.testing.assert_close(got.features, want.features, rtol=1e-6, atol=1e-7)
        assert batch.side == max(max(max(g.shape) for p in known_pairs(tasks[r]) for g in (p.input, p.output))
                                 for r in batch.rows_host)
        assert batch.side >= max(s.side for s in list(host.samples) + [s for _, s in host.rehearsal])
        assert batch.task_ids() == host.task_ids()


@pytest.mark.parametrize("max_tokens", [4096, 40])
def test_prompt_token_ids_built_on_the_device_equal_the_tokenizer(max_tokens):
    tokenizer = grid_tokenizer()
    ids = _char_ids(tokenizer)
    tasks = arc_like_tasks(seed=2)
    sampler = DeviceSampler(tasks, LearnerConfig(batch_size=8, rehearsal=16, seed=5), side=12)
    batch = sampler.batch(tasks[0])
    index = list(range(batch.size))
    got = batch.prompt_tokens(index, ids, max_tokens)
    want = tokenizer(batch.prompt_texts(index), padding=True, truncation=True, max_length=max_tokens,
                     return_tensors="np")
    t = want["input_ids"].shape[1]
    assert got["input_ids"].shape[1] >= t  # padded to a bound known on the host, never shorter
    np.testing.assert_array_equal(got["input_ids"][:, :t].numpy(), want["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"][:, :t].numpy(), want["attention_mask"])
    assert (got["attention_mask"][:, t:] == 0).all() and (got["input_ids"][:, t:] == tokenizer.pad_token_id).all()


def test_a_tokenizer_that_is_not_character_level_gets_no_device_ids():
    class Merging:  # "\n" followed by a letter is one token, as in a BPE vocabulary
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

        def __call__(self, text, add_special_tokens=True):
            body = [ord(c) for c in text.replace("\nO", "\x01")]
            return {"input_ids": ([1] + body + [2]) if add_special_tokens else body}

    assert _char_ids(Merging()) is None
    assert _char_ids(grid_tokenizer()) is not None


def _draw_counts(sampler: TaskSampler, task: Task, device: bool, n: int):
    queries, demo_orders, d8s, perms = Counter(), Counter(), Counter(), []
    pairs = [p.key() for p in known_pairs(task)]
    for _ in range(n // sampler.cfg.batch_size):
        batch = sampler.batch(task)
        samples = batch.host_batch().samples if device else batch.samples
        for s in samples:
            aug = s.aug
            q = pairs.index(Pair(aug.invert(s.query), aug.invert(s.target)).key())
            demos = tuple(pairs.index(aug.invert_pair(d).key()) for d in s.demos)
            assert q not in demos and len(demos) == min(MAX_DEMOS, len(pairs) - 1)
            queries[q] += 1
            demo_orders[(q, *demos)] += 1
            d8s[aug.d8] += 1
            perms.append(aug.colours)
    return queries, demo_orders, d8s, np.array(perms)


def test_device_draws_have_the_host_samplers_statistics():
    rng = np.random.default_rng(0)
    task = Task("six", tuple(Pair(as_grid(rng.integers(0, 10, (2, k + 1))), as_grid(rng.integers(0, 10, (3, k + 1))))
                             for k in range(6)), ())  # 6 distinct pairs: 6 queries, 5*4*3*2 demo orders each
    cfg = LearnerConfig(batch_size=200, rehearsal=0, seed=1)
    n = 12_000
    host = _draw_counts(TaskSampler([task, task_b()], cfg, side=6), task, False, n)
    dev = _draw_counts(DeviceSampler([task, task_b()], cfg, side=6), task, True, n)
    for (hq, hd, h8, hp), name in [((host), "host"), ((dev), "device")]:
        # each query 1/6, each D8 transform 1/8: within 5 standard deviations
        assert all(abs(hq[k] - n / 6) < 5 * np.sqrt(n / 6) for k in range(6)), (name, hq)
        assert all(abs(h8[k] - n / 8) < 5 * np.sqrt(n / 8) for k in range(8)), (name, h8)
        # for each query, every ordered choice of 4 of the other 5 pairs occurs, none far from the mean
        assert len(hd) == 6 * 120 and max(hd.values()) < 3 * n / 720, name
        # colour 0 stays; each other colour goes to each of 1..9 about equally often
        assert (hp[:, 0] == 0).all()
        for c in range(1, 10):
            counts = np.bincount(hp[:, c], minlength=10)[1:]
            assert abs(counts - n / 9).max() < 5 * np.sqrt(n / 9), (name, c, counts)


def task_b() -> Task:
    return Task("other", (Pair(as_grid([[1]]), as_grid([[2]])), Pair(as_grid([[3]]), as_grid([[4]]))), ())


def test_rehearsal_draws_from_the_host_samplers_window_uniformly():
    small = synthetic_tasks(side=3, seed=0, prefix="s")
    large = synthetic_tasks(side=20, seed=0, prefix="l")
    cfg = LearnerConfig(batch_size=2, rehearsal=300, rehearsal_window=2, seed=4)
    host, dev = TaskSampler(small + large, cfg, side=30), DeviceSampler(small + large, cfg, side=30)
    for task in (small[0], large[1]):
        h = Counter(k for _ in range(4) for k, _ in host.batch(task).rehearsal)
        d = Counter(k for _ in range(4) for k in dev.batch(task).task_ids()[2:])
        assert set(h) == set(d) and task.task_id not in d  # the same window of tasks of similar size
        assert all(abs(d[k] - 1200 / len(d)) < 5 * np.sqrt(1200 / len(d)) for k in d), d  # uniform over it
    assert dev.batch(small[0]).side == 3 and dev.batch(large[0]).side == 20  # the canvas stays small


def test_without_augmentation_views_are_the_identity():
    tasks = arc_like_tasks(seed=4)
    sampler = DeviceSampler(tasks, LearnerConfig(batch_size=16, rehearsal=8, augment=False), side=12)
    batch = sampler.batch(tasks[1])
    assert (batch.draw.d8 == 0).all() and torch.equal(batch.draw.colours, identity_colours(24, CPU))


def test_the_view_generator_is_part_of_the_sampler_state():
    tasks = arc_like_tasks(seed=5)
    cfg = LearnerConfig(batch_size=8, rehearsal=8, seed=2)
    a = DeviceSampler(tasks, cfg, side=12)
    a.batch(a.sample_task())
    state = a.state_dict()
    b = DeviceSampler(tasks, dataclasses.replace(cfg, seed=9), side=12)
    b.load_state_dict(state)
    ta, tb = a.sample_task(), b.sample_task()
    assert ta is tb
    xa, xb = a.batch(ta).tensors(CPU), b.batch(tb).tensors(CPU)
    assert torch.equal(xa.canvas, xb.canvas) and torch.equal(xa.target, xb.target)


def test_a_task_with_one_known_pair_is_refused_by_name():
    lonely = Task("lonely", (Pair(as_grid([[1]]), as_grid([[2]])),), (Pair(as_grid([[3]]), None),))
    with pytest.raises(ValueError, match="lonely"):
        TaskStore.build([lonely])


def test_prompt_tokens_of_a_single_view_need_no_padding():
    tokenizer = grid_tokenizer()
    task = Task("x", (Pair(as_grid([[1, 2]]), as_grid([[3]])), Pair(as_grid([[4]]), as_grid([[5, 6], [7, 8]]))), ())
    store = TaskStore.build([task])
    sampler = DeviceSampler([task], LearnerConfig(batch_size=1, rehearsal=0, augment=False), side=4)
    batch = sampler.batch(task)
    draw = batch.draw
    tokens, mask = prompt_tokens(store, draw, _char_ids(tokenizer), 4096, int(store.text_host[0]))
    text = batch.prompt_texts()[0]
    n = len(text) + 2
    assert tokens[0, :n].tolist() == tokenizer(text)["input_ids"] and mask[0].sum() == n


def test_a_device_named_without_its_index_is_the_current_one(monkeypatch):
    from efe_ray.data.device_sampler import same_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert same_device(torch.device("cuda"), torch.device("cuda:0"))  # env.device=cuda, the store on cuda:0
    assert not same_device(torch.device("cuda:1"), torch.device("cuda:0"))
    assert same_device(CPU, torch.device("cpu")) and not same_device(CPU, torch.device("cuda:0"))
