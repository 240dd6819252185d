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
REPLICATE = BENCH / "arc_lease" / "2026-12-06-c"
COSINE = BENCH / "arc_lease" / "2026-12-06-e"
EVAL_ONLY = BENCH / "arc_lease" / "2026-12-07-f"  # the cosine lease's exports scored with colour versions
ONE_LEASE = BENCH / "arc_lease" / "2026-12-07-g"  # trained and scored on one H100, two adaptation rates merged
TWO_RATES = BENCH / "arc_lease" / "2026-12-07-h"  # the same, the two rates in one evaluation as the model
RESCORED = BENCH / "arc_lease" / "2026-12-07-i"  # TWO_RATES's exports scored again: 6 minutes, equal time, ARC-AGI-2
GROUPED = BENCH / "arc_lease" / "2026-12-07-j"  # TWO_RATES's export, evaluation groups of one side


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
    # budgets that reached different tasks, compared on the 288 that every model row answered
    assert (by["arc1-eval", "model"]["common_tasks"], by["arc1-eval", "model-train-4min"]["solved_on_common"],
            by["arc1-eval", "model-train-7min"]["solved_on_common"], by["arc1-eval", "model"]["solved_on_common"]) == \
        (288, 9.0, 15.0, 16.0)


def test_the_replicate_lease_answers_every_task():
    rows = arc_results.records(REPLICATE, "NVIDIA H100 80GB HBM3", "78f6279", "2026-12-06")
    by = {(r["split"], r["method"]): r for r in rows}
    model = by["arc1-eval", "model"]
    assert (model["solved_outputs"], model["outputs"], model["not_answered_in_time"], model["pass2_task"]) == \
        (16, 418, 0, 3.26)
    assert "--search none" in model["commands"][0] and "--workers 4 --gpus-per-task 0.25" in model["commands"][0]
    assert "--tta-steps 200 --augmentations 8 --tta-lr 0.001 --tta-views 16" in model["commands"][0]
    assert by["arc1-eval", "model-tta400"]["not_answered_in_time"] == 15
    assert {m: by["arc1-eval", m]["solved_on_common"] for m in
            ("model-train-3min", "model-train-6min", "model", "model-tta400", "model-no-tta")} == \
        {"model-train-3min": 5.0, "model-train-6min": 11.5, "model": 13.0, "model-tta400": 14.5, "model-no-tta": 1.0}
    assert {r["common_tasks"] for r in rows if "common_tasks" in r} == {352}
    assert "common_tasks" not in by["arc1-train", "model-no-tta"]  # only arc1-eval rows are compared
    # stages.jsonl: 571 s of training; 188 + 231 + 263 + 117 s of evaluation
    assert (model["train_gpu_min"], model["eval_gpu_min"]) == (9.5, 13.3)


def test_the_cosine_lease_compares_adaptation_rates_on_one_model_and_says_how_far_they_fit():
    rows = arc_results.records(COSINE, "NVIDIA H200", "fffa884", "2026-12-06")
    by = {(r["split"], r["method"]): r for r in rows}
    assert {m: (by["arc1-eval", m]["solved_outputs"], by["arc1-eval", m]["solved_on_common"]) for m in
            ("model", "model-no-tta", "model-tta200-lr3e-3", "model-tta200-lr3e-4")} == \
        {"model": (19, 15.0), "model-no-tta": (3, 3.0), "model-tta200-lr3e-3": (24, 18.5), "model-tta200-lr3e-4": (12, 8.0)}
    assert {r["common_tasks"] for r in rows if "common_tasks" in r} == {399}
    assert "--tta-lr 0.003 --tta-views 16" in by["arc1-eval", "model-tta200-lr3e-3"]["commands"][-1]
    fit = {m: by["arc1-eval", m]["demo_fit"] for m in ("model", "model-tta200-lr3e-3", "model-tta200-lr3e-4")}
    assert {m: (f["all_demos_exact"], f["all_demos_exact_and_solved"]) for m, f in fit.items()} == \
        {"model": (260, 15), "model-tta200-lr3e-3": (310, 18), "model-tta200-lr3e-4": (144, 7)}
    assert all(f["tasks"] == 399 for f in fit.values())


def test_the_evaluation_lease_scores_the_cosine_export_with_colour_versions_and_names_its_training():
    stored = json.loads((BENCH / "arc_results.json").read_text())
    trained = arc_results.training_lease(stored, "fffa884", "2026-12-06")
    assert (trained["card"], trained["train_gpu_min"]) == ("NVIDIA H200", 9.6)
    assert "learner.lr_schedule=cosine" in trained["train_command"]
    rows = arc_results.records(EVAL_ONLY, "NVIDIA H100 80GB HBM3", "801b0d3", "2026-12-07", trained_in=trained)
    by = {r["method"]: r for r in rows}
    assert {m: (r["solved_outputs"], r["solved_on_common"], r["not_answered_in_time"]) for m, r in by.items()} == \
        {"model-tta200-colours8": (38, 33.0, 0), "model-tta400-colours8": (47, 42.0, 0),
         "model-train-6min-tta400-colours8": (46, 41.5, 0)}
    assert by["model-tta400-colours8"]["pass2_task"] == 10.53 and {r["common_tasks"] for r in rows} == {399}
    assert "--tta-steps 400 --augmentations 8 --tta-lr 0.003 --tta-views 16 --colours 8" in \
        by["model-tta400-colours8"]["commands"][1]
    fit = by["model-tta400-colours8"]["demo_fit"]
    assert (fit["all_demos_exact"], fit["all_demos_exact_and_solved"], fit["solved_without_all_demos_exact"]) == (242, 36, 6)
    # no training in this lease: the training lease's minutes and command; 187 + 254 + 250 s of evaluation
    assert all(r["trained_in"] == {"revision": "fffa884", "date": "2026-12-06", "card": "NVIDIA H200",
                                   "train_gpu_min": 9.6} for r in rows)
    assert all((r["train_gpu_min"], r["eval_gpu_min"]) == (9.6, 11.5) for r in rows)
    assert all(r["commands"][0] == trained["train_command"] for r in rows)


def test_a_training_lease_missing_from_the_records_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "records.json"
    out.write_text(json.dumps([{"revision": "aaa", "date": "2026-12-06", "card": "c", "train_gpu_min": 1.0,
                                "commands": ["x"]}]))
    before = out.read_text()
    with pytest.raises(SystemExit):
        arc_results.main([str(EVAL_ONLY), "--card", "c", "--revision", "r", "--date", "2026-12-07",
                          "--trained-in", "bbb,2026-12-06", "--write", str(out), "--append"])
    assert "--trained-in bbb,2026-12-06: no such lease in the records (they hold aaa,2026-12-06)" in capsys.readouterr().err
    assert out.read_text() == before
    with pytest.raises(SystemExit):  # nothing to look it up in
        arc_results.main([str(EVAL_ONLY), "--card", "c", "--revision", "r", "--date", "2026-12-07",
                          "--trained-in", "aaa,2026-12-06"])
    assert "needs --write FILE" in capsys.readouterr().err


def test_the_lease_that_scored_the_two_rates_export_again_is_the_committed_records():
    """2026-12-07-i: no training; the 6-minute snapshot at the final row's one-rate settings, one rate
    with the two copies' steps (the equal-time row) and ARC-AGI-2, every task answered."""
    stored = json.loads((BENCH / "arc_results.json").read_text())
    trained = arc_results.training_lease(stored, "8697afa", "2026-12-07")
    rows = arc_results.records(RESCORED, "NVIDIA H100 80GB HBM3", "1331b06", "2026-12-07", trained_in=trained)
    by = {(r["split"], r["method"]): r for r in rows}
    got = {m: (by["arc1-eval", m]["pass2_task"], by["arc1-eval", m]["solved_outputs"])
           for m in ("model-train-6min", "model-tta800-lr1e-2")}
    assert got == {"model-train-6min": (9.77, 44), "model-tta800-lr1e-2": (12.41, 55)}
    assert "--tta-steps 400 --augmentations 8 --tta-lr 0.003 --tta-views 16" in by["arc1-eval", "model-train-6min"]["commands"][1]
    assert "--tta-steps 800 --augmentations 8 --tta-lr 0.01 --tta-views 16" in by["arc1-eval", "model-tta800-lr1e-2"]["commands"][1]
    assert all(r["not_answered_in_time"] == 0 for r in rows)  # ARC-AGI-2 too (32 of 120 unanswered before)
    assert by["arc2-eval", "model"]["outputs"] == 167 and by["arc1-train", "model-no-tta"]["solved_outputs"] == 17
    # no training in this lease: the training lease's 9.7 minutes; 251 + 212 + 448 s of evaluation
    assert all((r["train_gpu_min"], r["eval_gpu_min"]) == (9.7, 15.2) for r in rows)
    assert all(r["trained_in"]["revision"] == "8697afa" and r["commands"][0] == trained["train_command"] for r in rows)


def test_the_two_rates_row_scored_with_groups_of_one_side():
    """2026-12-07-j: the 8697afa export's row ``model`` (two rates merged) at ac7afbd, whose evaluation
    groups tasks of one square side and gives each adapted copy its own random stream."""
    stored = json.loads((BENCH / "arc_results.json").read_text())
    rows = arc_results.records(GROUPED, "NVIDIA H100 80GB HBM3", "ac7afbd", "2026-12-07",
                               trained_in=arc_results.training_lease(stored, "8697afa", "2026-12-07"))
    got = {r["method"]: (r["pass2_task"], r["solved_outputs"], r["not_answered_in_time"]) for r in rows}
    assert got == {"model": (13.91, 61, 0), "model-lr0.003": (10.53, 48, 0), "model-lr0.01": (13.53, 59, 0)}
    assert "--tta-lr 0.003 0.01 --tta-views 16" in rows[0]["commands"][1]
    assert all((r["train_gpu_min"], r["eval_gpu_min"]) == (9.7, 8.0) for r in rows)  # one 477 s stage


def test_the_committed_records_are_the_eight_single_gpu_leases():
    stored = json.loads((BENCH / "arc_results.json").read_text())
    rows = (arc_results.records(SCALING, "NVIDIA H100 80GB HBM3", "702de3f", "2026-12-06")
            + arc_results.records(REPLICATE, "NVIDIA H100 80GB HBM3", "78f6279", "2026-12-06")
            + arc_results.records(COSINE, "NVIDIA H200", "fffa884", "2026-12-06")
            + arc_results.records(EVAL_ONLY, "NVIDIA H100 80GB HBM3", "801b0d3", "2026-12-07",
                                  trained_in=arc_results.training_lease(stored, "fffa884", "2026-12-06"))
            + arc_results.records(ONE_LEASE, "NVIDIA H100 80GB HBM3", "c0f7e25", "2026-12-07")
            + arc_results.records(TWO_RATES, "NVIDIA H100 80GB HBM3", "8697afa", "2026-12-07")
            + arc_results.records(RESCORED, "NVIDIA H100 80GB HBM3", "1331b06", "2026-12-07",
                                  trained_in=arc_results.training_lease(stored, "8697afa", "2026-12-07"))
            + arc_results.records(GROUPED, "NVIDIA H100 80GB HBM3", "ac7afbd", "2026-12-07",
                                  trained_in=arc_results.training_lease(stored, "8697afa", "2026-12-07")))
    assert [{k: v for k, v in r.items() if k != "commands"} for r in stored] == \
        [{k: v for k, v in r.items() if k != "commands"} for r in rows]
    assert all("bash bench/arc_lease.sh train" in r["commands"][0] for r in stored)


def test_append_replaces_a_lease_of_the_same_revision_and_date(tmp_path):
    out = tmp_path / "records.json"
    args = [str(REPLICATE), "--card", "c", "--date", "2026-12-06", "--write", str(out)]
    assert arc_results.main(args + ["--revision", "aaa"]) == 0
    first = json.loads(out.read_text())
    assert arc_results.main(args + ["--revision", "bbb", "--append"]) == 0
    assert arc_results.main(args + ["--revision", "bbb", "--append"]) == 0  # again: replaced, not doubled
    stored = json.loads(out.read_text())
    assert [r["revision"] for r in stored] == ["aaa"] * len(first) + ["bbb"] * len(first)


def test_common_tasks_are_those_every_model_row_answered(tmp_path):
    header = "task_id,method,outputs,solved,score,cell_acc,seconds,leaked,unanswered,note,error\n"
    src = json.loads((LEASE / "arc1-eval-no-ema" / "report.json").read_text())
    src["methods"] = {"model": {**src["methods"]["model"], "tasks": 3, "errors": []}}
    for sub, lines in {"arc1-eval-no-tta": ["a,model,1,1,1.0,1,0,0,0,,", "b,model,1,0,0.0,0,0,0,0,,",
                                            "c,model,1,1,1.0,1,0,0,0,,"],
                       "arc1-eval-train-3min": ["a,model,1,1,1.0,1,0,0,0,,", "b,model,1,1,0.5,1,0,0,0,,",
                                                "c,model,1,0,0.0,0,0,0,1,,TimeBudgetEnded: late"]}.items():
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "report.json").write_text(json.dumps(src))
        (tmp_path / sub / "per_task.csv").write_text(header + "\n".join(lines) + "\n")
    tasks, solved = arc_results.common(tmp_path)
    assert tasks == ["a", "b"]  # c was not reached by the snapshot's budget
    assert solved == {"model-no-tta": 1.0, "model-train-3min": 1.5}


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


def test_the_adaptation_fit_of_a_report_goes_into_its_record_and_the_printout(tmp_path, capsys):
    src = json.loads((REPLICATE / "arc1-eval" / "report.json").read_text())
    fit = {"tasks": 390, "mean_demo_exact": 0.8125, "all_demos_exact": 300, "all_demos_exact_and_solved": 14,
           "solved_without_all_demos_exact": 2}
    src["methods"]["model"]["demo_fit"] = fit
    (tmp_path / "arc1-eval").mkdir()
    (tmp_path / "arc1-eval" / "report.json").write_text(json.dumps(src))
    rows = {r["method"]: r for r in arc_results.records(tmp_path, "c", "r", "d")}
    assert rows["model"]["demo_fit"] == fit and "demo_fit" not in rows["copy_input"]
    assert arc_results.main([str(tmp_path), "--card", "c", "--revision", "r", "--date", "d"]) == 0
    assert ("arc1-eval model: after adaptation, 300 of 390 adapted tasks predict every demonstration view exactly "
            "(mean 81.2% of views); 14 of those solved, 2 solved without") in capsys.readouterr().out


def test_the_lease_that_trained_and_scored_on_one_h100_is_the_committed_records():
    """2026-12-07-g: both rates' rows, and their merge (bench/merge_submissions.py) as the row
    model-merged, whose command is the one evaluation that answers the same (--tta-lr 0.003 0.01)."""
    rows = arc_results.records(ONE_LEASE, "NVIDIA H100 80GB HBM3", "c0f7e25", "2026-12-07", train_command="train it")
    by = {(r["split"], r["method"]): r for r in rows}
    got = {m: (by["arc1-eval", m]["pass2_task"], by["arc1-eval", m]["solved_outputs"])
           for m in ("model", "model-tta400-lr1e-2", "model-merged", "model-train-6min")}
    assert got == {"model": (9.52, 42), "model-tta400-lr1e-2": (9.77, 43), "model-merged": (11.28, 49),
                   "model-train-6min": (8.77, 39)}
    merged = by["arc1-eval", "model-merged"]
    assert merged["derived_from"] == ["arc1-eval", "arc1-eval-tta400-lr1e-2"]
    assert "--tta-steps 400 --augmentations 8 --tta-lr 0.003 0.01 --tta-views 16 --colours 8" in merged["commands"][1]
    assert "derived_from" not in by["arc1-eval", "model"]
    assert (merged["train_gpu_min"], merged["eval_gpu_min"]) == (9.7, 17.0)  # 579 s; 357 + 119 + 257 + 289 s


def test_the_lease_with_two_rates_as_the_model_is_the_committed_records():
    """2026-12-07-h: one evaluation at both rates gives the row model and each rate's own copy beside
    it; every ARC-AGI-1 row and the fit answered every task."""
    rows = arc_results.records(TWO_RATES, "NVIDIA H100 80GB HBM3", "8697afa", "2026-12-07", train_command="train it")
    by = {(r["split"], r["method"]): r for r in rows}
    got = {m: (by["arc1-eval", m]["pass2_task"], by["arc1-eval", m]["solved_outputs"])
           for m in ("model", "model-lr0.003", "model-lr0.01", "model-no-tta")}
    assert got == {"model": (13.78, 61), "model-lr0.003": (10.78, 49), "model-lr0.01": (13.03, 57),
                   "model-no-tta": (0.63, 3)}
    assert all(r["not_answered_in_time"] == 0 for r in rows if r["split"] != "arc2-eval")
    assert by["arc2-eval", "model"]["not_answered_in_time"] == 32
    model = by["arc1-eval", "model"]
    assert "--tta-lr 0.003 0.01" in model["commands"][1] and "derived_from" not in model
    assert (model["train_gpu_min"], model["eval_gpu_min"]) == (9.7, 11.9)  # 581 s; 451 + 60 + 203 s


def test_every_evaluation_stage_counts_as_evaluation_time(tmp_path):
    stages = [("train", 600), ("resume", 60), ("eval-main", 540), ("eval-more", 120), ("eval-notta", 60),
              ("eval-scale", 300), ("eval-tta", 240), ("pack", 1)]
    (tmp_path / "stages.jsonl").write_text("".join(json.dumps({"stage": s, "seconds": t, "gpus": 1}) + "\n"
                                                   for s, t in stages))
    assert arc_results.gpu_minutes(tmp_path) == (11.0, 21.0)  # 660 s; 540 + 120 + 60 + 300 + 240 s
