"""Validating task JSON (efe_ray.data.loaders): every problem names file, task, pair, field and value."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from efe_ray.data.loaders import Problem, TaskValidationError, load_task_file, load_tasks, validate_task_json

from helpers_loaders import GOOD, good, with_grid, write


# (case name = task id, raw JSON (object or text), section, pair_index, field, value, message part)
CATALOGUE = [
    ("ragged", with_grid("train", 1, "output", [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3]]),
     "train", 1, "output", "[1, 2, 3]", "row 2 has length 3, expected 4"),
    ("ten", with_grid("train", 0, "input", [[1, 2], [3, 10]]),
     "train", 0, "input", "10", "cell (1, 1) is 10, outside 0..9"),
    ("minus_one", with_grid("test", 0, "input", [[-1]]),
     "test", 0, "input", "-1", "cell (0, 0) is -1, outside 0..9"),
    ("float", with_grid("train", 0, "output", [[4, 3], [2, 1.0]]),
     "train", 0, "output", "1.0", "cell (1, 1) is a float, expected an int"),
    ("string", with_grid("train", 1, "input", [["3"]]),
     "train", 1, "input", "'3'", "cell (0, 0) is a str, expected an int"),
    ("boolean", with_grid("train", 1, "input", [[True]]),
     "train", 1, "input", "True", "cell (0, 0) is a bool, expected an int"),
    ("empty_grid", with_grid("test", 0, "output", []),
     "test", 0, "output", "[]", "grid is empty"),
    ("empty_row", with_grid("train", 0, "input", [[]]),
     "train", 0, "input", "[]", "row 0 is empty"),
    ("too_tall", with_grid("train", 0, "output", [[0]] * 31),
     "train", 0, "output", "[[0], [0], [0], [0], [0], [0], [0], [0], [0], [0], [0], [...",
     "grid is 31x1, larger than 30x30"),
    ("grid_not_list", with_grid("train", 0, "input", 5),
     "train", 0, "input", "5", "expected a grid (list of rows), got int"),
    ("no_train", good(train=None),
     None, None, "train", "", "missing key 'train'"),
    ("train_not_list", good(train={"input": [[1]], "output": [[1]]}),
     None, None, "train", "{'input': [[1]], 'output': [[1]]}", "expected a list of pairs, got dict"),
    ("train_empty", good(train=[]),
     None, None, "train", "[]", "no pairs"),
    ("pair_not_dict", good(test=[[[1]]]),
     "test", 0, None, "[[1]]", "a pair must be an object"),
    ("no_output", good(train=[{"input": [[1]]}, GOOD["train"][1]]),
     "train", 0, "output", "", "missing key 'output'"),
    ("extra_key", good(name="x"),
     None, None, "name", "'x'", "unknown key 'name'"),
    ("not_object", [GOOD],
     None, None, None, None, "a task must be an object with 'train' and 'test', got list"),
    ("bad_json", '{"train": [{"input": [[1, 2]], "output": [[1, 2]]}],\n "test": [{"input": [[1 2]]}]}',
     None, None, None, "'st\": [{\"input\": [[1 2]]}]}'", "invalid JSON: Expecting ',' delimiter at line 2, column 25"),
]


@pytest.mark.parametrize(
    "task_id, raw, section, pair_index, field, value, message",
    CATALOGUE,
    ids=[case[0] for case in CATALOGUE],
)
def test_catalogue_problem_names_everything(tmp_path, task_id, raw, section, pair_index, field, value, message):
    path = write(tmp_path / f"{task_id}.json", raw)
    with pytest.raises(TaskValidationError) as info:
        load_tasks(path)
    problems = info.value.problems
    assert len(problems) == 1, problems
    (p,) = problems
    assert p.file == str(path)
    assert p.task_id == task_id
    assert p.section == section
    assert p.pair_index == pair_index
    assert p.field == field
    if value is not None:
        assert p.value == value
    assert len(p.value) <= 60
    assert message in p.message
    # The rendered problem, and the exception's message, carry all of it.
    text = str(p)
    assert text.startswith(f"{path}: task '{task_id}'")
    assert message in text
    if p.value:
        assert text.endswith(f" (value: {p.value})")
    assert text in str(info.value)


def test_problem_str_format():
    p = Problem("bad.json", "abc", "train", 1, "output", "[1, 2, 3]", "row 2 has length 3, expected 4")
    assert str(p) == "bad.json: task 'abc' train[1].output: row 2 has length 3, expected 4 (value: [1, 2, 3])"
    top = Problem("t.json", "abc", None, None, "train", "", "missing key 'train'")
    assert str(top) == "t.json: task 'abc' train: missing key 'train'"
    whole = Problem("t.json", "abc", None, None, None, "", "invalid JSON: x")
    assert str(whole) == "t.json: task 'abc': invalid JSON: x"


def test_ragged_problem_exact_text(tmp_path):
    path = write(tmp_path / "abc.json", with_grid("train", 1, "output", [[1, 2, 3, 4]] * 2 + [[1, 2, 3]]))
    with pytest.raises(TaskValidationError) as info:
        load_task_file(path)
    assert str(info.value.problems[0]) == (
        f"{path}: task 'abc' train[1].output: row 2 has length 3, expected 4 (value: [1, 2, 3])"
    )


def test_validate_reports_all_problems_not_just_first():
    raw = good()
    raw["train"][0]["input"] = [[1, 2], [3]]  # ragged
    raw["train"][1]["output"] = [[11, 0.5]]  # two bad cells
    raw["test"] = "nope"
    problems = validate_task_json(raw, file="f.json", task_id="t", require_test_outputs=False)
    assert [(p.location, p.value) for p in problems] == [
        ("train[0].input", "[3]"),
        ("train[1].output", "11"),
        ("train[1].output", "0.5"),
        ("test", "'nope'"),
    ]
    assert all(p.file == "f.json" and p.task_id == "t" for p in problems)


def test_bad_cells_are_capped_but_counted():
    raw = with_grid("train", 0, "input", [[10] * 20])
    problems = validate_task_json(raw, file="f", task_id="t", require_test_outputs=False)
    assert len(problems) == 6
    assert problems[-1].message == "15 more bad cell(s) in this grid"


def test_long_values_are_truncated():
    raw = with_grid("train", 0, "input", [[0] * 40 for _ in range(40)])
    (p,) = validate_task_json(raw, file="f", task_id="t", require_test_outputs=False)
    assert "40x40" in p.message
    assert len(p.value) <= 60 and p.value.endswith("...")


def test_test_outputs_optional_unless_required():
    raw = good(test=[{"input": [[1]]}])
    assert validate_task_json(raw, file="f", task_id="t", require_test_outputs=False) == []
    (p,) = validate_task_json(raw, file="f", task_id="t", require_test_outputs=True)
    assert (p.section, p.pair_index, p.field, p.message) == ("test", 0, "output", "missing key 'output'")


def test_valid_task_builds_int64_read_only_grids(tmp_path):
    path = write(tmp_path / "ok.json", good(test=[{"input": [[7, 8]]}]))
    (task,) = load_tasks(path)
    assert task.task_id == "ok" and task.source == str(path)
    assert len(task.train) == 2 and len(task.test) == 1
    assert task.test[0].output is None
    grid = task.train[0].input
    assert grid.dtype == np.int64 and grid.tolist() == [[1, 2], [3, 4]]
    assert not grid.flags.writeable


def test_error_pickles_with_its_problems():
    err = TaskValidationError([Problem("f", "t", "train", 0, "input", "10", "bad")])
    back = pickle.loads(pickle.dumps(err))
    assert back.problems == err.problems and str(back) == str(err)
