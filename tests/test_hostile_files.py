"""Hostile task files (efe_ray.data.loaders): deep nesting, huge integers, duplicate keys, bad
encodings, symbolic links, formula-like ids and oversized files each cost only their own task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from efe_ray.data.loaders import (Problem, SkippedTasksWarning, TaskValidationError, group_problems, load_folder,
                                  load_kaggle, load_task_file, load_tasks)

from helpers_loaders import CHALLENGES, good, write


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
