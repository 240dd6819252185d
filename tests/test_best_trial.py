"""The tune summary's best trial is the one evaluate scores: the highest last search metric."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from efe_ray.checkpoint import META_FILE
from efe_ray.evaluation.resolve import resolve_checkpoint
from efe_ray.rl.outcome import best_result


def trial(root: Path, name: str, scores: list[float | None]) -> SimpleNamespace:
    """A trial folder with one result.json line per score (None: a line without the metric) and a
    checkpoint, as Tune writes them; and the Result-like object Tune's ResultGrid holds for it."""
    path = root / name
    (path / "checkpoint_000001").mkdir(parents=True)
    (path / "checkpoint_000001" / META_FILE).write_text("{}")
    lines = [{"training_iteration": i + 1, **({} if s is None else {"eval/score": s})} for i, s in enumerate(scores)]
    (path / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return SimpleNamespace(path=str(path), metrics=lines[-1])


def test_the_highest_last_score_wins_not_the_highest_ever(tmp_path):
    peaked = trial(tmp_path, "EFEPPO_0", [0.2, 0.9, 0.3])  # best ever 0.9, last 0.3
    steady = trial(tmp_path, "EFEPPO_1", [0.1, 0.4, 0.5])
    assert best_result([peaked, steady], "eval/score") is steady
    assert resolve_checkpoint(tmp_path, "eval/score").parent.name == "EFEPPO_1"  # the same trial


def test_a_last_line_without_the_metric_keeps_the_last_reported_value_and_ties_go_to_the_first_folder(tmp_path):
    a = trial(tmp_path, "EFEPPO_a", [0.5, None])  # its last line lacks the metric: 0.5 still counts
    b = trial(tmp_path, "EFEPPO_b", [0.5])
    c = trial(tmp_path, "EFEPPO_c", [None])  # never reported
    assert best_result([c, b, a], "eval/score") is a
    assert resolve_checkpoint(tmp_path, "eval/score").parent.name == "EFEPPO_a"
    assert best_result([c], "eval/score") is None
