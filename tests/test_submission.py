"""The Kaggle submission file (efe_ray.evaluation.submission): building, validating, writing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from efe_ray.data.task import Task
from efe_ray.evaluation.submission import (SubmissionError, build_submission, validate_submission,
                                           write_submission)

from helpers_eval import make_task


def _sub_tasks() -> list[Task]:
    return [make_task("t1", [([[1]], [[2]])] * 2, [([[1]], [[2]]), ([[3]], None)]),
            make_task("t2", [([[1]], [[2]])] * 2, [([[1, 1]], None)])]


def _good_sub() -> dict:
    return {"t1": [{"attempt_1": [[2]], "attempt_2": [[0]]}, {"attempt_1": [[3]], "attempt_2": [[3]]}],
            "t2": [{"attempt_1": [[1, 2], [3, 4]], "attempt_2": [[9]]}]}


def test_good_submission_passes_and_build_gives_python_ints():
    tasks = _sub_tasks()
    assert validate_submission(_good_sub(), tasks) == []
    built = build_submission({"t1": [(np.array([[2]]), np.array([[0]])), (np.array([[3]]), np.array([[3]]))],
                              "t2": [(np.array([[1, 2], [3, 4]], dtype=np.int8), np.array([[9]]))]})
    assert built == _good_sub()
    assert type(built["t2"][0]["attempt_1"][0][0]) is int
    assert validate_submission(built, tasks) == []


@pytest.mark.parametrize("mutate, where, words", [
    (lambda s: s["t1"][0].__setitem__("attempt_1", [[np.int64(2)]]), ("t1", 0, "attempt_1"), "int64"),
    (lambda s: s["t1"][0].__setitem__("attempt_2", [[True]]), ("t1", 0, "attempt_2"), "bool"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", [[1, 2], [3]]), ("t2", 0, "attempt_1"), "ragged"),
    (lambda s: s["t1"][1].__setitem__("attempt_1", [[10]]), ("t1", 1, "attempt_1"), "outside 0..9"),
    (lambda s: s.pop("t2"), ("t2", None, None), "missing"),
    (lambda s: s["t1"].pop(), ("t1", None, None), "1 entries for 2 test input"),
    (lambda s: s["t1"][1].pop("attempt_2"), ("t1", 1, "attempt_2"), "missing"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", []), ("t2", 0, "attempt_1"), "empty"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", [[1.0]]), ("t2", 0, "attempt_1"), "float"),
])
def test_submission_defects_are_flagged_precisely(mutate, where, words):
    sub = _good_sub()
    mutate(sub)
    problems = validate_submission(sub, _sub_tasks())
    assert len(problems) == 1, problems
    p = problems[0]
    assert (p.task_id, p.index, p.key) == where
    assert words in p.message


def test_write_submission_validates_then_writes(tmp_path):
    tasks = _sub_tasks()
    bad = _good_sub()
    bad["t1"][0]["attempt_1"] = [[np.int64(1)]]
    with pytest.raises(SubmissionError, match="t1"):
        write_submission(tmp_path / "s.json", bad, tasks)
    assert not (tmp_path / "s.json").exists()
    write_submission(tmp_path / "s.json", _good_sub(), tasks)
    assert json.loads((tmp_path / "s.json").read_text()) == _good_sub()
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left behind
