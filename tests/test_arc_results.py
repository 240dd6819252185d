"""bench/arc_results.py: the ARC table is rebuilt exactly from what a lease brought back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import arc_results  # noqa: E402  (a script of bench/, beside its helper command.py)

LEASE = BENCH / "arc_lease" / "2026-12-06"
SCALING = BENCH / "arc_lease" / "2026-12-06-b"


def test_the_first_single_gpu_lease_rebuilds_its_table():
    rows = arc_results.records(LEASE, "NVIDIA H100 80GB HBM3", "cf66d43", "2026-12-06", train_command="train it")
    by = {(r["split"], r["method"]): r for r in rows}
    model = by["arc1-eval", "model"]
    assert (model["pass2_task"], model["solved_outputs"], model["outputs"]) == (2.38, 13, 418)
    assert model["not_answered_in_time"] == 63
    assert by["arc1-eval", "model-no-ema"]["not_answered_in_time"] == 271  # the average's ablation, renamed
    assert by["arc1-train", "model-no-tta"]["solved_outputs"] == 30
    assert ("arc1-train", "model") not in by  # the fit is scored without adaptation, named so
    assert (model["train_gpu_min"], model["eval_gpu_min"]) == (5.9, 6.6)  # stages.jsonl: 356 s; 241 + 156 s
    assert model["commands"][0] == "train it" and "--tta-steps 200" in model["commands"][1]


def test_the_scaling_lease_is_the_committed_records():
    rows = arc_results.records(SCALING, "NVIDIA H100 80GB HBM3", "702de3f", "2026-12-06")
    by = {(r["split"], r["method"]): r for r in rows}
    assert [(m, by["arc1-eval", m]["solved_outputs"], by["arc1-eval", m]["not_answered_in_time"])
            for m in ("model-train-4min", "model-train-7min", "model", "model-no-search", "model-no-tta")] == \
        [("model-train-4min", 13, 79), ("model-train-7min", 20, 111), ("model", 22, 47),
         ("model-no-search", 25, 47), ("model-no-tta", 13, 47)]
    # arc2-eval's and the fit's budgets ended before the model answered a task: no model rows, named
    assert ("arc2-eval", "model") not in by and ("arc1-train", "model-no-tta") not in by
    assert ("arc2-eval", "demo_rule") in by
    assert arc_results.unanswered(SCALING) == ["arc2-eval: model (120 tasks)", "arc1-train: model-no-tta (400 tasks)"]
    # stages.jsonl: 219 s (the first try, no checkpoint) + 541 s of training; 291 + 267 + 93 s of evaluation
    assert (by["arc1-eval", "model"]["train_gpu_min"], by["arc1-eval", "model"]["eval_gpu_min"]) == (12.7, 10.8)
    stored = json.loads((BENCH / "arc_results.json").read_text())  # the committed file is these records
    assert [{k: v for k, v in r.items() if k != "commands"} for r in stored] == \
        [{k: v for k, v in r.items() if k != "commands"} for r in rows]
    assert all("bash bench/arc_lease.sh train" in r["commands"][0] for r in stored)


def test_an_empty_folder_is_refused(tmp_path, capsys):
    assert arc_results.main([str(tmp_path), "--card", "x", "--revision", "y", "--date", "z"]) == 1
    assert "no report.json" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["arc1-eval-train-3min", "arc1-eval-train-12min", "arc1-eval-ablate-no-warmup",
                                  "arc1-eval-no-tta", "arc1-eval-tta600"])
def test_snapshots_and_recipe_arms_become_their_rows(tmp_path, name):
    src = LEASE / "arc1-eval-no-ema" / "report.json"
    (tmp_path / name).mkdir()
    (tmp_path / name / "report.json").write_text(src.read_text())
    rows = arc_results.records(tmp_path, "c", "r", "d")
    assert [r["method"] for r in rows] == ["model-" + name.removeprefix("arc1-eval-")]
