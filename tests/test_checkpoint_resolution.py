"""Finding the checkpoint to evaluate (efe_ray.evaluation.resolve): the best trial of an experiment
folder by its last reported metric, then its latest checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efe_ray.evaluation.resolve import CheckpointNotFoundError, resolve_checkpoint


def _fake_trial(root: Path, name: str, values: list, ckpts: list[int], nested: bool = False) -> Path:
    trial = root / name
    trial.mkdir(parents=True)
    lines = []
    for v in values:
        lines.append(json.dumps({"eval": {"score": v}} if nested else {"eval/score": v, "other": 1}))
    (trial / "result.json").write_text("\n".join(lines) + "\n{truncated")
    for n in ckpts:
        (trial / f"checkpoint_{n:06d}").mkdir()
        (trial / f"checkpoint_{n:06d}" / "efe_meta.json").write_text("{}")
    return trial


def test_resolve_checkpoint_picks_best_trial_by_last_value_then_latest_checkpoint(tmp_path):
    exp = tmp_path / "exp"
    _fake_trial(exp, "trial_a", [0.9, 0.2], [1, 2])  # best value early, but the last is low
    best = _fake_trial(exp, "trial_b", [0.1, 0.5], [2, 10, 3], nested=True)
    _fake_trial(exp, "trial_c", [], [5])  # never reported the metric
    assert resolve_checkpoint(exp) == best / "checkpoint_000010"
    assert resolve_checkpoint(best / "checkpoint_000002") == best / "checkpoint_000002"
    with pytest.raises(CheckpointNotFoundError, match="no trial"):
        resolve_checkpoint(exp, metric="eval/nothing")
    with pytest.raises(CheckpointNotFoundError):
        resolve_checkpoint(tmp_path / "missing")
