"""Loading a folder of task files (efe_ray.data.loaders.load_folder): one error listing every bad
file, or with skip_invalid a warning and the good tasks."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from efe_ray.data.loaders import Problem, SkippedTasksWarning, TaskValidationError, load_folder, load_tasks

from helpers_loaders import good, with_grid, write


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
