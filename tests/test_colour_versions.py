"""Colour versions (``learner.colour_versions``): each training task has V fixed colour permutations,
version 0 the identity, each with its own row of the task table.

The versions are permutations fixing 0, distinct, the same in every process and sampler, and
follow the seed; a view's grids are its version's permutation (and its D8 transform) of one of its
task's pairs, on the host and on the device; the device draws versions uniformly and its rows
follow the host's rule, ``task index * V + version``, so that two tasks never share a row; a
learner step moves only the rows of its (task, version) pairs; checkpoints, exports and evaluation
keep the table and look a task up by its version-0 row; and inconsistent settings are refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from efe_ray import checkpoint as ckpt
from efe_ray import export as exp
from efe_ray.config import ConfigError, ExperimentConfig, LearnerConfig, from_dict
from efe_ray.data.augment import IDENTITY_COLOURS, Augmentation, colour_versions, version_table
from efe_ray.data.batching import TaskSampler, known_pairs
from efe_ray.data.canvas import OUTSIDE
from efe_ray.data.device_sampler import DeviceSampler
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.evaluation.model import load_model
from efe_ray.learner import METRICS, EFELearner
from test_device_step import no_host_reads
from tuning.presets import build_config

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[1]
V = 3
"""Colour versions per task in most tests."""


def many_colour_tasks(n: int = 5, seed: int = 0) -> list[Task]:
    """Tasks of 3..4 known pairs of (2..5, 5) and (5, 2..5) grids that each hold every colour 0..9, so
    that two colour permutations never give the same grid."""
    rng = np.random.default_rng(seed)

    def grid():
        h = int(rng.integers(2, 6))
        cells = np.concatenate([np.arange(10), rng.integers(0, 10, size=5 * h - 10)])  # (5h,) every colour
        g = rng.permutation(cells).reshape(h, 5)
        return as_grid(g if rng.random() < 0.5 else g.T)

    return [Task(f"c{k}", tuple(Pair(grid(), grid()) for _ in range(int(rng.integers(2, 4)))), (Pair(grid(), grid()),))
            for k in range(n)]


TASKS = many_colour_tasks()


@pytest.fixture
def versioned(tiny_prompt, tiny_agent):
    """``(versions=V, sampler=TaskSampler, order=TASKS, **learner_kw) -> (EFELearner, sampler)``: a tiny
    learner with a task table of :data:`TASKS` (in that order) and a sampler of ``order``."""

    def make(versions=V, sampler=TaskSampler, order=None, **kw):
        cfg = LearnerConfig(**{"batch_size": 4, "rehearsal": 4, "colour_versions": versions, "seed": 7, **kw})
        learner = EFELearner(tiny_prompt(task_embedding=True), tiny_agent(), cfg,
                             task_ids=tuple(t.task_id for t in TASKS))
        return learner, sampler(list(order or TASKS), cfg, 6)

    return make


def view_list(batch):
    """(task id, sample) of every view of a host batch, own views first."""
    return [(batch.task_id, s) for s in batch.samples] + list(batch.rehearsal)


def crop(canvas: np.ndarray) -> np.ndarray:
    """The grid at the top left of an OUTSIDE-padded (S, S) canvas."""
    inside = canvas != OUTSIDE
    return canvas[: int(inside[:, 0].sum()), : int(inside[0].sum())]


# ------------------------------------------------------------------------------------------------
# The versions


def test_versions_are_distinct_permutations_fixing_zero_with_the_identity_first():
    for task_id in ("c0", "007bbfc7", "a much longer task id / with symbols"):
        table = colour_versions(task_id, seed=3, versions=50)
        assert table.shape == (50, 10) and table.dtype == np.int64
        assert tuple(table[0]) == IDENTITY_COLOURS
        assert (table[:, 0] == 0).all()
        assert (np.sort(table, axis=1) == np.arange(10)).all()  # each a permutation of 0..9
        assert len({tuple(r) for r in table}) == 50  # no two versions alike
        assert all(not r[1:].tolist() == list(range(1, 10)) for r in table[1:])  # only version 0 is the identity
    assert colour_versions("x", 0, 1).tolist() == [list(range(10))]
    with pytest.raises(ValueError, match="colour versions: 0"):
        colour_versions("x", 0, 0)


def test_versions_are_deterministic_and_follow_the_seed_and_the_task():
    a = colour_versions("c1", 5, 20)
    assert np.array_equal(a, colour_versions("c1", 5, 20))
    assert not np.array_equal(a, colour_versions("c1", 6, 20))  # another seed, other versions
    assert not np.array_equal(a, colour_versions("c2", 5, 20))  # another task, other versions
    # every sampler, host or device, of the same seed holds the same versions, whatever its task order
    cfg = LearnerConfig(colour_versions=20, seed=5)
    host, other = TaskSampler(TASKS, cfg, 6), TaskSampler(TASKS[::-1], dataclasses.replace(cfg, batch_size=3), 6)
    device = DeviceSampler(TASKS[::-1], cfg, 6)
    for t in TASKS:
        want = colour_versions(t.task_id, 5, 20)
        assert np.array_equal(host.task_versions(t.task_id), want)
        assert np.array_equal(other.task_versions(t.task_id), want)
        luts = device.version_luts[device.row[t.task_id]].long()  # (V, 11): the versions, OUTSIDE kept
        assert torch.equal(luts[:, :10], torch.from_numpy(want)) and (luts[:, 10] == OUTSIDE).all()
    assert np.array_equal(version_table([t.task_id for t in TASKS], 5, 20),
                          np.stack([colour_versions(t.task_id, 5, 20) for t in TASKS]))


def test_versions_are_the_same_in_a_process_with_another_hash_seed():
    code = ("from efe_ray.data.augment import colour_versions; "
            "print(colour_versions('007bbfc7', 11, 6).tolist())")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert json.loads(out.stdout) == colour_versions("007bbfc7", 11, 6).tolist()


# ------------------------------------------------------------------------------------------------
# Rows


@pytest.mark.parametrize("sampler", [TaskSampler, DeviceSampler])
def test_the_rows_of_a_tasks_versions_are_its_own(versioned, sampler):
    """row // V is the task's index in the learner's table and row % V the view's version, for every
    view of many batches (the device store in the reverse order of the learner's tasks)."""
    learner, s = versioned(sampler=sampler, order=TASKS[::-1], batch_size=8, rehearsal=8)
    assert learner.prompt.task_table.shape == (len(TASKS) * V + 1, 32)
    seen = Counter()
    for i in range(40):
        batch = s.batch(TASKS[i % len(TASKS)])
        rows = learner.table_rows(batch).tolist()
        versions = batch.versions(CPU).tolist()
        index = [learner.prompt.task_index[t] for t in batch.task_ids()]
        assert [r // V for r in rows] == index  # never another task's row
        assert [r % V for r in rows] == versions
        assert max(rows) < learner.prompt.unknown_row
        seen.update(zip(index, versions))
    assert len(seen) == len(TASKS) * V  # every (task, version) was drawn


@pytest.mark.parametrize("sampler", [TaskSampler, DeviceSampler])
def test_without_versions_the_rows_are_the_tasks_rows(versioned, sampler):
    learner, s = versioned(versions=0, sampler=sampler, order=TASKS[::-1])
    assert learner.prompt.versions == 0 and learner.prompt.task_table.shape == (len(TASKS) + 1, 32)
    batch = s.batch(TASKS[1])
    assert learner.table_rows(batch).tolist() == [learner.prompt.task_index[t] for t in batch.task_ids()]
    assert not batch.versions(CPU).any()


# ------------------------------------------------------------------------------------------------
# Views


def test_a_host_view_is_its_versions_permutation_of_its_tasks_pairs(versioned):
    _, sampler = versioned(batch_size=12, rehearsal=12)
    by_id = {t.task_id: t for t in TASKS}
    versions = Counter()
    for i in range(10):
        for task_id, s in view_list(sampler.batch(TASKS[i % len(TASKS)])):
            pairs = [p.key() for p in known_pairs(by_id[task_id])]
            assert s.aug.colours == tuple(colour_versions(task_id, 7, V)[s.version])
            assert Pair(s.aug.invert(s.query), s.aug.invert(s.target)).key() in pairs
            assert all(s.aug.invert_pair(d).key() in pairs for d in s.demos)
            plain = Augmentation(s.aug.d8)  # the D8 alone: the grids differ unless the version is 0
            original = Pair(plain.invert(s.query), plain.invert(s.target)).key()
            assert (original in pairs) == (s.version == 0)
            versions[s.version] += 1
    assert set(versions) == set(range(V))


def test_a_device_view_is_its_versions_permutation_of_its_query_pair(versioned):
    """The device-built canvases and targets, cropped, turned back by the inverse of the view's D8
    transform and of its version's permutation (from the pure function, not the sampler), are the
    stored pair's grids; the prompt texts' demonstrations too."""
    _, sampler = versioned(sampler=DeviceSampler, batch_size=12, rehearsal=12)
    versions = Counter()
    for i in range(6):
        batch = sampler.batch(TASKS[i % len(TASKS)])
        t = batch.tensors(CPU)
        d = batch.draw
        offset = sampler.store.offset.numpy()
        for k, (task_id, row) in enumerate(zip(batch.task_ids(), batch.rows_host)):
            v, d8 = int(d.version[k]), int(d.d8[k])
            aug = Augmentation(d8, tuple(colour_versions(task_id, 7, V)[v]))
            pair = known_pairs(TASKS[int(row)])[int(d.query[k]) - int(offset[row])]
            assert np.array_equal(aug.invert(crop(t.canvas[k].numpy())), pair.input)
            assert np.array_equal(aug.invert(crop(t.target[k].numpy())), pair.output)
            assert int(t.view[k]) == d8
            versions[v] += 1
        for (task_id, s), v in zip(view_list(batch.host_batch()), d.version.tolist()):
            assert s.version == v and s.aug.colours == tuple(colour_versions(task_id, 7, V)[v])
            pairs = [p.key() for p in known_pairs(sampler.tasks[sampler.row[task_id]])]
            assert all(s.aug.invert_pair(x).key() in pairs for x in s.demos)
    assert set(versions) == set(range(V))


def test_device_tensors_with_versions_equal_the_host_batch_of_the_same_draws(versioned):
    _, sampler = versioned(sampler=DeviceSampler, batch_size=8, rehearsal=8)
    batch = sampler.batch(TASKS[2])
    got, want = batch.tensors(CPU), batch.host_batch().tensors(CPU)
    for name in ("canvas", "target", "loss_mask", "target_mask", "view"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
    assert torch.equal(batch.versions(CPU), batch.host_batch().versions(CPU))


# ------------------------------------------------------------------------------------------------
# Draws


def test_device_version_draws_are_uniform_and_keep_the_d8_draws_uniform():
    cfg = LearnerConfig(batch_size=250, rehearsal=0, colour_versions=6, seed=2)
    n = 15_000
    for sampler in (DeviceSampler(TASKS, cfg, 6), TaskSampler(TASKS, cfg, 6)):
        versions, d8s = Counter(), Counter()
        for i in range(n // cfg.batch_size):
            batch = sampler.batch(TASKS[i % 2])
            if isinstance(sampler, DeviceSampler):
                versions.update(batch.draw.version.tolist())
                d8s.update(batch.draw.d8.tolist())
            else:
                versions.update(s.version for s in batch.samples)
                d8s.update(s.aug.d8 for s in batch.samples)
        # each version 1/6, each D8 transform 1/8: within 5 standard deviations of the mean
        assert set(versions) == set(range(6)), versions
        assert all(abs(versions[v] - n / 6) < 5 * np.sqrt(n / 6 * 5 / 6) for v in range(6)), versions
        assert all(abs(d8s[k] - n / 8) < 5 * np.sqrt(n / 8 * 7 / 8) for k in range(8)), d8s
        chi2 = sum((versions[v] - n / 6) ** 2 / (n / 6) for v in range(6))
        assert chi2 < 20.5  # chi-square with 5 degrees of freedom: p < 0.001 above 20.5


def test_device_draws_gather_the_versions_table_and_the_host_rule_gives_their_rows(versioned):
    learner, sampler = versioned(sampler=DeviceSampler, order=TASKS[::-1], batch_size=16, rehearsal=16)
    for i in range(5):
        batch = sampler.batch(TASKS[i])
        d = batch.draw
        for k, task_id in enumerate(batch.task_ids()):
            v = int(d.version[k])
            want = list(colour_versions(task_id, 7, V)[v]) + [OUTSIDE]
            assert d.colours[k].tolist() == want
        host_rule = [learner.prompt.task_index[t] * V + v for t, v in zip(batch.task_ids(), d.version.tolist())]
        assert learner.table_rows(batch).tolist() == host_rule
        # the same views as a host batch get the same rows
        assert learner.table_rows(batch.host_batch()).tolist() == host_rule


def test_the_host_sampler_without_versions_draws_as_before():
    """colour_versions=0: the same random augmentations, from the same RNG calls, as
    Augmentation.random on a generator of the same seed."""
    cfg = LearnerConfig(batch_size=1, rehearsal=0, seed=4)
    sampler = TaskSampler(TASKS[:1], cfg, 6)
    rng = np.random.default_rng(4)
    for _ in range(20):
        s = sampler.make_samples(TASKS[0], 1)[0]
        rng.integers(len(known_pairs(TASKS[0])))
        rng.permutation(len(known_pairs(TASKS[0])) - 1)
        assert s.aug == Augmentation.random(rng) and s.version == 0


# ------------------------------------------------------------------------------------------------
# Training, checkpoints and evaluation


@pytest.mark.parametrize("sampler", [TaskSampler, DeviceSampler])
def test_a_step_moves_only_the_rows_of_its_task_versions(versioned, sampler):
    lr = 1e-2
    learner, s = versioned(sampler=sampler, task_lr=lr, task_weight_decay=0.1, batch_size=3, rehearsal=2)
    table = learner.prompt.task_table
    learner.step(s.batch(TASKS[0]))  # the rows start at zero; after a step some are not
    for i in range(1, 5):
        before = table.detach().clone()
        batch = s.batch(TASKS[i])
        rows = set(learner.table_rows(batch).tolist())
        learner.step(batch)
        grad = table.grad
        assert {int(r) for r in torch.nonzero(grad.abs().sum(-1)).flatten()} == rows
        moved = torch.zeros(len(table), 1, dtype=torch.bool)
        moved[list(rows)] = True
        assert torch.equal(table.detach(), before - (torch.sign(grad) + 0.1 * before * moved) * lr)
        others = [r for r in range(len(table)) if r not in rows]
        assert len(others) >= len(table) - 5 and torch.equal(table[others], before[others])  # bit for bit
    assert not table[-1].any()  # the unknown-task row never moves
    assert table[: len(TASKS) * V].abs().sum(-1).gt(0).sum() > len(TASKS)  # versions of one task moved apart


def test_a_device_step_with_versions_reads_nothing_back_and_trains_as_the_host_batch(versioned):
    """Two learners alike: one steps on device batches, the other on the same views as host batches
    (fresh and cached Qwen steps); then a device step runs with every host read refused."""
    a, sampler = versioned(sampler=DeviceSampler, task_lr=1e-2, cache_every=2)
    b, _ = versioned(task_lr=1e-2, cache_every=2)
    for i in range(4):
        batch = sampler.batch(TASKS[i % 3])
        assert a.step(batch)["loss"] == pytest.approx(b.step(batch.host_batch())["loss"], rel=1e-5)
    moved = a.prompt.task_table.detach().ne(0).any(-1)  # (T * V + 1,) the rows the steps moved
    assert torch.equal(moved, b.prompt.task_table.detach().ne(0).any(-1)) and moved.sum() > len(TASKS)
    with no_host_reads():
        values = a.train_step(sampler.batch(TASKS[0]))
    assert values.shape == (len(METRICS),)


def test_a_checkpoint_and_an_export_keep_the_table_and_evaluation_reads_version_0(versioned, tmp_path):
    learner, sampler = versioned(agent_lr=0.02, task_lr=0.05)
    for i in range(6):
        learner.step(sampler.batch(TASKS[i % len(TASKS)]))
    table = learner.prompt.task_table.detach().clone()  # (T * V + 1, P)
    cfg = ExperimentConfig(prompt=learner.prompt.cfg, agent=learner.agent_cfg, learner=learner.cfg)
    folder = tmp_path / "checkpoint_000001"
    ckpt.save(folder, {**learner.state_dict(), **sampler.state_dict()}, cfg, TASKS)
    exp.export(folder, tmp_path / "exported", "fp32", 4)
    for source in (folder, tmp_path / "exported"):
        loaded = load_model(source, device="cpu", use_policy=False)
        assert loaded.cfg.learner.colour_versions == V
        prompt = loaded.learner.prompt
        assert prompt.task_table.shape == (len(TASKS) * V + 1, 32) and torch.equal(prompt.task_table, table), source
        ids = [t.task_id for t in TASKS] + ["never-trained"]
        rows = prompt.task_rows(ids, CPU)
        assert rows.tolist() == [i * V for i in range(len(TASKS))] + [len(TASKS) * V]  # version 0; unknown
        got = prompt.task_vectors(ids, CPU)
        assert torch.equal(got[:-1], table[rows[:-1]]) and not got[-1].any()
    resumed, _ = versioned(agent_lr=0.02, task_lr=0.05)
    resumed.load_state_dict(ckpt.load(folder)[0])
    assert torch.equal(resumed.prompt.task_table, table)


def test_a_checkpoint_is_refused_by_a_learner_of_another_version_count(versioned, tmp_path):
    learner, sampler = versioned()
    learner.step(sampler.batch(TASKS[0]))
    other, _ = versioned(versions=V + 1)
    with pytest.raises(RuntimeError, match="task_table"):
        other.load_state_dict(learner.state_dict())


# ------------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(("raw", "message"), [
    ({"learner": {"colour_versions": 4}}, "learner.colour_versions: 4 needs prompt.task_embedding=true"),
    ({"prompt": {"task_embedding": True}, "learner": {"colour_versions": 4, "augment_colours": False}},
     "learner.colour_versions: 4 needs augment=true and augment_colours=true (got augment=True, "
     "augment_colours=False)"),
    ({"prompt": {"task_embedding": True}, "learner": {"colour_versions": 2, "augment": False}},
     "learner.colour_versions: 2 needs augment=true and augment_colours=true (got augment=False"),
    ({"learner": {"colour_versions": 1001}}, "learner.colour_versions: must be >= 0 and <= 1000, got 1001"),
    ({"learner": {"colour_versions": -1}}, "learner.colour_versions: must be >= 0 and <= 1000, got -1"),
])
def test_inconsistent_settings_are_refused_with_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, raw)
    assert message in str(err.value)


def test_versions_are_off_by_default_and_a_consistent_config_passes(tiny_prompt, tiny_agent):
    assert LearnerConfig().colour_versions == 0
    cfg = from_dict(ExperimentConfig, {"prompt": {"task_embedding": True}, "learner": {"colour_versions": 8}})
    assert cfg.learner.colour_versions == 8
    # the arc preset turns colour permutations off: versions need them back on
    with pytest.raises(ConfigError, match="learner.colour_versions: 8 needs augment=true and augment_colours=true"):
        build_config("arc", ["learner.colour_versions=8"], say=lambda _: None)
    arc = build_config("arc", ["learner.colour_versions=8", "learner.augment_colours=true"], say=lambda _: None)
    assert arc.learner.colour_versions == 8
    with pytest.raises(ValueError, match="learner.colour_versions=2 needs prompt.task_embedding=true"):
        EFELearner(tiny_prompt(), tiny_agent(), LearnerConfig(colour_versions=2), task_ids=("a",))
