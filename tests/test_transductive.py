"""Transductive training, provably clean: evaluation tasks are read blinded, their demonstrations
are trained on, one is held out per task for the in-trial score, and their test outputs reach no
batch, no prompt text and no checkpoint; the leakage guard tells demonstrations-only exposure
from a test pair seen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from efe_ray import checkpoint as ckpt
from efe_ray.config import DataConfig, ExperimentConfig, LearnerConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.serialize import grid_to_text
from efe_ray.data.sources import resolve_tasks
from efe_ray.data.task import Pair, Task, as_grid, blind, pair_hash
from efe_ray.data.transductive import held_out_index, split
from efe_ray.evaluation.leakage import demonstrations_only, find_leaks

SENTINEL = as_grid([[9, 1, 9, 1, 9], [1, 9, 1, 9, 1], [9, 9, 9, 9, 9]])
"""A test output no demonstration contains: it must never be read when the task is blinded."""


def task_json(seed: int, demos: int) -> dict:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(demos):
        x = rng.integers(0, 9, (3, 5))
        pairs.append({"input": x.tolist(), "output": np.flipud(x).tolist()})
    return {"train": pairs, "test": [{"input": rng.integers(0, 9, (3, 5)).tolist(), "output": SENTINEL.tolist()}]}


@pytest.fixture
def eval_folder(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    for i, demos in enumerate([4, 3, 2, 5]):
        (folder / f"ev{i}.json").write_text(json.dumps(task_json(i, demos)))
    return folder


def test_split_holds_out_one_demonstration_of_tasks_with_three_or_more():
    tasks = [blind(Task(f"t{n}", tuple(Pair(as_grid([[i]]), as_grid([[i + 1]])) for i in range(n)),
                        (Pair(as_grid([[0]]), SENTINEL),))) for n in (2, 3, 5)]
    train, held = split(tasks, seed=0)
    assert [len(t.train) for t in train] == [2, 2, 4] and all(t.test == () and t.blinded for t in train)
    assert [t.task_id for t in held] == ["t3", "t5"]
    for h, full in zip(held, tasks[1:]):
        i = held_out_index(full, 0)
        assert h.test[0].key() == full.train[i].key()  # the held-out demonstration is the query
        assert all(p.key() != full.train[i].key() for p in h.train)
    assert held_out_index(tasks[2], 0) == held_out_index(tasks[2], 0)  # (seed, id) decides
    with pytest.raises(ValueError, match="is not blinded"):
        split([Task("x", tasks[0].train, (Pair(as_grid([[0]]), SENTINEL),))], seed=0)


def test_sentinel_test_outputs_never_reach_a_batch_a_prompt_or_a_checkpoint(eval_folder, make_learner, tmp_path):
    cfg = DataConfig(train_source="synthetic", eval_source=str(eval_folder), transductive=True)
    train, held = resolve_tasks(cfg, canvas=6, say=lambda line: None)
    blinded = [t for t in train if t.blinded]
    assert sorted(t.task_id for t in blinded) == ["ev0", "ev1", "ev2", "ev3"]
    assert sorted(t.task_id for t in held) == ["ev0", "ev1", "ev3"]  # ev2 has only two demonstrations
    every_pair = [p for t in train + held for p in t.train + t.test]
    assert not any(p.output is not None and np.array_equal(p.output, SENTINEL) for p in every_pair)

    learner, _ = make_learner(batch_size=8, rehearsal=4, augment=False)
    sampler = TaskSampler(train, LearnerConfig(batch_size=8, rehearsal=4, augment=False), side=6)
    sentinel_text = grid_to_text(SENTINEL)
    for task in blinded * 3:
        batch = sampler.batch(task)
        assert not any(sentinel_text in text for text in batch.prompt_texts())
        t = batch.tensors(learner.device)
        for grid in (t.canvas, t.target):
            assert not (grid[:, :3, :5] == grid.new_tensor(SENTINEL)).all(-1).all(-1).any()
        learner.step(batch)

    folder = tmp_path / "ckpt"
    ckpt.save(folder, learner.state_dict(), ExperimentConfig(), train)
    meta = json.loads((folder / ckpt.META_FILE).read_text())
    records = {r["id"]: r for r in meta["trained_tasks"]}
    assert all(records[t.task_id]["exposure"] == "demonstrations" for t in blinded)
    unblinded = [Task(f"ev{i}", b.train, (Pair(b.test[0].input if b.test else SENTINEL, SENTINEL),))
                 for i, b in enumerate(sorted(blinded, key=lambda x: x.task_id))]
    seen = {h for r in meta["trained_tasks"] for h in r["pairs"]}
    assert not any(pair_hash(p) in seen for t in unblinded for p in t.test)
    assert b"\x09\x01\x09\x01\x09" not in b"".join(f.read_bytes() for f in folder.iterdir())


def test_leakage_guard_accepts_demonstrations_and_refuses_a_test_pair(eval_folder):
    from efe_ray.data.sources import load_source

    full = load_source(str(eval_folder))
    blinded_train, _ = split([blind(t) for t in full], seed=0)
    records = [ckpt.trained_record(t) for t in blinded_train]
    assert find_leaks(full, records) == []
    assert demonstrations_only(full, records) == [t.task_id for t in full]

    trained_fully = [ckpt.trained_record(t) for t in full]  # the evaluation tasks as training tasks
    assert [t for t, _ in find_leaks(full, trained_fully)] == [t.task_id for t in full]

    # a test pair trained on as a demonstration of a task with another id
    leaks = find_leaks(full, [ckpt.trained_record(Task("other-id", (full[0].test[0], full[0].train[0]), ()))])
    assert leaks == [(full[0].task_id, "test pair 0 trained on (with task 'other-id')")]


def test_training_tasks_that_are_evaluation_tasks_leave_transduction(eval_folder, tmp_path):
    train_folder = tmp_path / "train"
    train_folder.mkdir()
    (train_folder / "copy.json").write_text((eval_folder / "ev1.json").read_text())  # ev1 under another id
    (train_folder / "own.json").write_text(json.dumps(task_json(99, 3)))
    cfg = DataConfig(train_source=str(train_folder), eval_source=str(eval_folder), transductive=True)
    lines = []
    with pytest.warns(UserWarning, match="dropped from the held-out set: ev1"):
        train, held = resolve_tasks(cfg, canvas=6, say=lines.append)
    assert "ev1" not in {t.task_id for t in train + held}
    assert any("training on the demonstrations of 3 tasks" in line for line in lines)


def test_sources_train_on_tasks_with_two_known_pairs_and_name_the_others(tmp_path):
    """One demonstration and known test outputs: trained on. One demonstration and nothing else
    known (a training task without its test output, an evaluation task read blinded): skipped by
    name, on the terminal and in skipped_tasks.json, never handed to the sampler; the trainee
    builds, steps on every training task and scores the held-out demonstrations."""
    from efe_ray.data.sources import SKIPPED_FILE, write_skipped_tasks
    from efe_ray.evaluation.predict import evaluate
    from envs.arc_prompt_env import ArcPromptEnv
    from envs.trainee import build_trainee
    from tuning.presets import build_config

    pair = lambda seed: {"input": (x := np.random.default_rng(seed).integers(0, 9, (2, 3))).tolist(),  # noqa: E731
                         "output": np.flipud(x).tolist()}
    train_folder, eval_folder = tmp_path / "train", tmp_path / "eval"
    train_folder.mkdir(), eval_folder.mkdir()
    tasks = {train_folder / "one-demo-solved.json": {"train": [pair(0)], "test": [pair(1)]},
             train_folder / "one-demo-many-tests.json": {"train": [pair(2)], "test": [pair(3), pair(4), pair(5)]},
             train_folder / "one-demo-unsolved.json": {"train": [pair(6)], "test": [{"input": pair(7)["input"]}]},
             eval_folder / "ev-one-demo.json": {"train": [pair(8)], "test": [pair(9), pair(10)]},
             eval_folder / "ev-four-demos.json": {"train": [pair(11 + i) for i in range(4)], "test": [pair(15)]}}
    for path, raw in tasks.items():
        path.write_text(json.dumps(raw))
    cfg = build_config("smoke", [f"data.train_source={train_folder}", f"data.eval_source={eval_folder}",
                                 "data.transductive=true"])
    lines = []
    train, held = resolve_tasks(cfg.data, cfg.agent.canvas, say=lines.append)
    assert sorted(t.task_id for t in train) == ["ev-four-demos", "one-demo-many-tests", "one-demo-solved"]
    assert [t.task_id for t in held] == ["ev-four-demos"]
    assert f"data.train_source={str(train_folder)!r}: 1 task(s) with fewer than 2 pairs of known output (a single " \
           "demonstration) are not trained on: one-demo-unsolved" in lines
    assert f"data.eval_source={str(eval_folder)!r}: 1 task(s) with fewer than 2 pairs of known output (a single " \
           "demonstration read blinded) are not trained on: ev-one-demo" in lines
    record = json.loads(write_skipped_tasks(tmp_path / "exp", cfg).read_text())
    assert (tmp_path / "exp" / SKIPPED_FILE).is_file() and record["train_tasks"] == 3
    assert record["fewer_than_two_known_pairs"] == {"train": ["one-demo-unsolved"], "eval": ["ev-one-demo"]}

    trainee = build_trainee(cfg)
    assert sorted(t.task_id for t in trainee.train_tasks) == sorted(t.task_id for t in train)
    for task in trainee.train_tasks:
        metrics = trainee.learner.step(trainee.sampler.batch(task))
        assert np.isfinite(metrics["efe_loss"])
        assert np.isfinite(trainee.observation(task)).all()  # what the policy sees of it
    env = ArcPromptEnv(trainee=trainee)
    env.reset(seed=0)
    for _ in range(cfg.env.steps_per_episode):
        assert np.isfinite(env.step(env.action_space.sample())[1])
    assert trainee.learner.steps == 3 + cfg.env.steps_per_episode * cfg.env.learner_steps_per_action
    assert evaluate(trainee.learner, trainee.eval_tasks)["outputs"] == 1.0


def test_a_training_source_with_nothing_to_train_on_stops_before_a_trial(tmp_path):
    from efe_ray.config import ConfigError

    (tmp_path / "only.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}],
                                                    "test": [{"input": [[3]]}]}))
    with pytest.raises(ConfigError, match=r"no task to train on \(none fits a 6x6 canvas with 2 pairs of known output"):
        resolve_tasks(DataConfig(train_source=str(tmp_path), eval_source="synthetic-eval"), canvas=6,
                      say=lambda line: None)
