"""Scoring ARC answers (efe_ray.evaluation.scoring): the task and output scores, cell accuracy."""

from __future__ import annotations

import pytest

from efe_ray.evaluation.scoring import cell_accuracy, score_task, summarise


def test_scoring_both_conventions_by_hand():
    t = [[1, 2], [3, 4]]
    wrong = [[1, 2], [3, 0]]  # 3 of 4 cells right
    # Task A: 2 outputs, the first solved by attempt 2, the second not (same shape, 3/4 cells).
    a = score_task("A", [(wrong, t), (wrong, wrong)], [t, t], [t, t])
    # Task B: 1 output solved by attempt 1.
    b = score_task("B", [(t, wrong)], [t], [[[0]]])
    # Task C: 1 output, attempt 1 has the wrong shape (cell acc 0), attempt 2 wrong too.
    c = score_task("C", [([[1, 2, 3]], [[9]])], [t], [[[1, 2, 3]]])
    # Task D: 2 test inputs, the second has no known target: only the first is scored.
    d = score_task("D", [(t, t), (t, t)], [[[5]], None], [[[5]], [[5]]])
    assert [s.num_outputs for s in (a, b, c, d)] == [2, 1, 1, 1]
    assert a.outputs[0].solved_by == 2 and a.outputs[1].solved_by == 0 and b.outputs[0].solved_by == 1
    s = summarise([a, b, c, d])
    # Task score: mean over tasks of the fraction solved = (1/2 + 1 + 0 + 0) / 4.
    assert s.task_score == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    # Output score: solved / outputs = 2 / 5.
    assert s.output_score == pytest.approx(2 / 5)
    # Cell acc of attempt 1 per output: A: 3/4, 3/4; B: 1; C: 0 (shape); D: 0 (1x1 vs 2x2 target).
    assert s.cell_acc == pytest.approx((0.75 + 0.75 + 1 + 0 + 0) / 5)
    assert (s.tasks, s.outputs, s.solved_outputs, s.solved_tasks, s.solved_by_attempt_2) == (4, 5, 2, 1, 1)
    # Outputs whose input has the target's shape: A (2 outputs) and D.
    assert s.copy_shape_outputs == 3
    assert s.cell_acc_same_shape == pytest.approx((0.75 + 0.75 + 0) / 3)
    assert cell_accuracy([[1]], [[1, 1]]) == 0.0


def test_scoring_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one of each"):
        score_task("X", [([[1]], [[1]])], [[[1]], [[1]]], [[[1]]])
