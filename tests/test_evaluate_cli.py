"""python -m efe_ray.evaluate end to end (efe_ray.evaluate.main): the report, the submission and the
table; leaked tasks refused; failures, tasks beyond the canvas and skipped files reported, never
scored as answers; a checkpoint that cannot load stops the run before any task.

``tiny_checkpoint`` (tests/conftest.py) is built once for this file.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from efe_ray.data.loaders import SkippedTasksWarning
from efe_ray.data.task import Task
from efe_ray.evaluate import EXIT_LEAKAGE, main, parse_args
from efe_ray.evaluation.report import EXIT_FAILED, EXIT_PARTIAL
from efe_ray.evaluation.submission import validate_submission

from helpers_eval import eval_tasks, make_task, rule_task, write_tasks


def evaluate_eval_tasks(folder, tmp_path, *options: str):
    """``evaluate`` of the experiment holding ``folder`` on :func:`eval_tasks`, in this process:
    (exit code, the tasks, the output folder)."""
    tasks = eval_tasks()
    split = write_tasks(tmp_path / "evtasks", tasks)
    out = tmp_path / "out"
    code = main(["--checkpoint", str(folder.parent), "--split", str(split), "--workers", "0", "--no-policy",
                 "--augmentations", "2", *options, "--out", str(out), "--quiet"])
    return code, tasks, out


def test_cli_end_to_end(tiny_checkpoint, tmp_path, capsys):
    folder, _ = tiny_checkpoint
    code, tasks, out = evaluate_eval_tasks(folder, tmp_path, "--baselines", "--colours", "2", "--tta-steps", "1",
                                           "--seed", "5")
    assert code == 0
    printed = capsys.readouterr().out
    for word in ("task score", "output score", "cell acc", "model", "copy_input", "demo_rule"):
        assert word in printed
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok" and report["seed"] == 5 and report["leaks"] == []
    assert report["checkpoint"] == str(folder) and report["leakage_checked"]
    assert set(report["methods"]) == {"model", "copy_input", "demo_rule"}
    assert report["methods"]["model"]["outputs"] == 6 and report["methods"]["model"]["errors"] == []
    # demo_rule solves the flip and colour-map tasks (2 outputs each), not the crop task.
    assert report["methods"]["demo_rule"]["solved_outputs"] == 4
    assert report["methods"]["demo_rule"]["task_score"] == pytest.approx(2 / 3)
    with open(out / "per_task.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(tasks) and {r["method"] for r in rows} == {"model", "copy_input", "demo_rule"}
    # the model's rows carry its per-task info, the adaptation's demonstration fit summed up in the report
    fits = [json.loads(r["info"])["tta_demo_exact"] for r in rows if r["method"] == "model"]
    assert len(fits) == len(tasks) and all(0.0 <= x <= 1.0 for x in fits)
    assert all(r["info"] == "" for r in rows if r["method"] != "model")
    assert report["methods"]["model"]["demo_fit"]["tasks"] == len(tasks) and report["settings"]["colours"] == 2
    assert (report["settings"]["precision"], report["precision"]) == ("checkpoint", "fp32")  # the checkpoint's
    sub = json.loads((out / "submission.json").read_text())
    assert validate_submission(sub, tasks) == []
    assert (out / "submission_demo_rule.json").is_file()


def test_cli_refuses_leaked_tasks_unless_allowed(tiny_checkpoint, tmp_path, capsys):
    folder, trained = tiny_checkpoint
    t = trained[0]
    pairs = list(t.train + t.test)[::-1]
    renamed = Task("renamed", tuple(pairs[:-1]), (pairs[-1],))
    split = write_tasks(tmp_path / "leaky", [renamed, trained[1]])
    out = tmp_path / "out"
    argv = ["--checkpoint", str(folder), "--split", str(split), "--workers", "0", "--no-policy",
            "--augmentations", "1", "--out", str(out), "--quiet"]
    assert main(argv) == EXIT_LEAKAGE
    assert "refused" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["status"].startswith("refused")
    assert {d["task_id"] for d in report["leaks"]} == {"renamed", trained[1].task_id}
    assert not (out / "submission.json").exists()
    assert main(argv + ["--allow-leakage"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok" and len(report["leaks"]) == 2


def test_cli_baseline_needs_no_checkpoint_and_bad_source_is_a_usage_error(tmp_path, capsys):
    split = write_tasks(tmp_path / "t", [rule_task("flip", lambda g: g[:, ::-1])])
    assert main(["--baseline", "demo_rule", "--split", str(split), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["methods"]["demo_rule"]["output_score"] == 1.0
    assert main(["--baseline", "copy_input", "--split", str(tmp_path / "nope")]) == 2
    assert main(["--split", str(split)]) == 2
    assert "error" in capsys.readouterr().err


def test_a_relative_checkpoint_path_is_made_absolute(tiny_checkpoint, tmp_path, monkeypatch):
    folder, _ = tiny_checkpoint
    monkeypatch.chdir(folder.parent.parent)
    args = parse_args(["--checkpoint", f"{folder.parent.name}/{folder.name}", "--split", "synth/tasks"])
    assert args.checkpoint == str(folder) and args.split == str(folder.parent.parent / "synth" / "tasks")
    assert args.out == str(folder.parent.parent / "eval_out" / "tasks")
    assert parse_args(["--baseline", "copy_input", "--split", "arc1-eval"]).split == "arc1-eval"


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(f.read_bytes()[:100]), "efe_learner.pt: contents do not match the recorded SHA-256"),
    (lambda f: f.write_bytes(bytes(len(f.read_bytes()))), "efe_learner.pt: contents do not match the recorded SHA-256"),
    (lambda f: f.unlink(), "efe_learner.pt is missing"),
])
@pytest.mark.parametrize("workers", [0, 2])
def test_an_unloadable_checkpoint_stops_before_any_task(tiny_checkpoint, tmp_path, capsys, damage, message, workers):
    import ray

    folder, _ = tiny_checkpoint
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    damage(copy / "efe_learner.pt")
    split = write_tasks(tmp_path / "t", eval_tasks())
    rc = main(["--checkpoint", str(copy), "--split", str(split), "--workers", str(workers), "--no-policy",
               "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: ") and message in err[-1]
    assert not ray.is_initialized() and not (tmp_path / "out" / "report.json").exists()


def _cli(folder, split, out, *extra):
    return main(["--checkpoint", str(folder), "--split", str(split), "--workers", "0", "--no-policy",
                 "--augmentations", "1", "--group-size", "1", "--out", str(out), "--quiet", *extra])


def test_cli_reports_failures_and_never_ok(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import efe_ray.evaluation.model as model_mod

    folder, _ = tiny_checkpoint
    tasks = eval_tasks()
    split = write_tasks(tmp_path / "t", tasks)
    real = model_mod.solve_group

    def fail_on(ids):
        def solve(learner, policy, group, settings):
            if any(t.task_id in ids for t in group):
                raise MemoryError("out of memory")
            return real(learner, policy, group, settings)
        return solve

    monkeypatch.setattr(model_mod, "solve_group", fail_on({tasks[0].task_id}))
    assert _cli(folder, split, tmp_path / "some") == EXIT_PARTIAL
    report = json.loads((tmp_path / "some" / "report.json").read_text())
    assert report["status"] == "partial: failed (model on 1 of 3 tasks); those tasks score 0"
    assert report["methods"]["model"]["errors"] == [{"task_id": tasks[0].task_id, "error": "MemoryError: out of memory"}]
    sub = json.loads((tmp_path / "some" / "submission.json").read_text())
    assert sub[tasks[0].task_id][0]["attempt_1"] == tasks[0].test[0].input.tolist()  # a stand-in, not scored
    assert "failed on 1 of 3 task(s), scored 0" in capsys.readouterr().err

    monkeypatch.setattr(model_mod, "solve_group", fail_on({t.task_id for t in tasks}))
    assert _cli(folder, split, tmp_path / "all") == EXIT_FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: failed: model failed on every one of 3 tasks (first: {tasks[0].task_id}: " \
                      "MemoryError: out of memory)"
    report = json.loads((tmp_path / "all" / "report.json").read_text())
    assert report["status"].startswith("failed") and report["methods"]["model"]["solved_outputs"] == 0
    assert not (tmp_path / "all" / "submission.json").exists()


def test_one_task_that_fails_never_fails_its_group(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """A group that raises is answered again task by task: only the task that fails alone is an
    error, named with its error; its neighbours are answered; report.json counts the group."""
    import efe_ray.evaluation.model as model_mod

    folder, _ = tiny_checkpoint
    tasks = eval_tasks()
    bad = tasks[1].task_id
    split = write_tasks(tmp_path / "t", tasks)
    real = model_mod.solve_group
    seen = []

    def solve(learner, policy, group, settings):
        seen.append(sorted(t.task_id for t in group))
        if any(t.task_id == bad for t in group):
            raise ValueError(f"cannot answer {bad}")
        return real(learner, policy, group, settings)

    monkeypatch.setattr(model_mod, "solve_group", solve)
    assert _cli(folder, split, tmp_path / "out", "--group-size", "16") == EXIT_PARTIAL
    ids = sorted(t.task_id for t in tasks)
    assert seen == [ids] + [[i] for i in ids]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    model = report["methods"]["model"]
    assert model["errors"] == [{"task_id": bad, "error": f"ValueError: cannot answer {bad}"}]
    assert model["group_fallbacks"] == 1
    assert model["fallback_groups"] == [{"tasks": ids, "error": f"ValueError: cannot answer {bad}"}]
    assert model["extra"]["unanswered_outputs"] == 2  # the failed task's two; its neighbours' four are answered
    assert report["status"] == "partial: failed (model on 1 of 3 tasks); those tasks score 0"
    err = capsys.readouterr().err
    assert (f"warning: 1 group(s) of tasks raised and were answered again task by task (first: 3 tasks, "
            f"ValueError: cannot answer {bad}); only tasks that failed alone are errors") in err


def test_cli_counts_tasks_beyond_the_canvas_and_scores_them_zero(tiny_checkpoint, tmp_path, capsys):
    folder, _ = tiny_checkpoint  # canvas 8
    small = eval_tasks()[:1]
    big = [make_task(f"big{i}", [([[1] * 9] * 9, [[1] * 9] * 9)] * 2, [([[2] * 9] * 9, [[2] * 9] * 9)]) for i in range(2)]
    split = write_tasks(tmp_path / "t", small + big)
    assert _cli(folder, split, tmp_path / "out", "--baselines") == 0
    err = capsys.readouterr().err
    assert ("warning: 2 of 3 tasks (2 of 4 test inputs) are larger than the checkpoint's 8x8 canvas: the model "
            "cannot answer them") in err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["methods"]["model"]["unanswered"] == {"big0": [0], "big1": [0]}
    assert report["methods"]["model"]["extra"]["unanswered_outputs"] == 2
    assert report["methods"]["copy_input"]["solved_outputs"] == 2  # copying solves the identity tasks ...
    rows = {(r["task_id"], r["method"]): r for r in csv.DictReader(open(tmp_path / "out" / "per_task.csv"))}
    assert rows[("big0", "model")]["solved"] == "0" and rows[("big0", "model")]["unanswered"] == "1"  # ... not for the model
    only_big = write_tasks(tmp_path / "big", big)
    assert _cli(folder, only_big, tmp_path / "none") == EXIT_FAILED
    assert "error: failed: model answered none of 2 test outputs" in capsys.readouterr().err


def test_cli_records_skipped_tasks(tiny_checkpoint, tmp_path):
    folder, _ = tiny_checkpoint
    split = write_tasks(tmp_path / "t", eval_tasks())
    (split / "broken.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.warns(SkippedTasksWarning, match="broken"):
        assert _cli(folder, split, tmp_path / "out", "--skip-invalid") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(s["task_id"], s["problems"][0].split(": ", 2)[-1]) for s in report["skipped_tasks"]] == [
        ("broken", "JSON nested 5000 deep, more than the 32 allowed (a task nests 5 deep)")]


def test_the_help_description_is_the_entry_points_first_docstring_line():
    import efe_ray.evaluate
    from efe_ray.evaluation.arguments import DESCRIPTION

    assert efe_ray.evaluate.__doc__.split("\n")[0] == DESCRIPTION


def test_cli_with_two_adaptation_rates_reports_the_merge_and_each_rate(tiny_checkpoint, tmp_path, capsys):
    """``--tta-lr A B``: the row ``model`` merges one adapted copy per rate, each rate's own answers
    are the rows ``model-lr<rate>``, and the report keeps the rates as given."""
    folder, _ = tiny_checkpoint
    code, tasks, out = evaluate_eval_tasks(folder, tmp_path, "--colours", "1", "--tta-steps", "2",
                                           "--tta-lr", "0.003", "0.01")
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"model", "model-lr0.003", "model-lr0.01"}
    assert report["settings"]["tta_lr"] == [0.003, 0.01] and report["primary"] == "model"
    assert all(report["methods"][m]["outputs"] == 6 for m in report["methods"])
    assert "model-lr0.003" in printed and "model-lr0.01" in printed
    with open(out / "per_task.csv") as f:
        infos = [json.loads(r["info"]) for r in csv.DictReader(f) if r["method"] == "model"]
    assert len(infos) == len(tasks) and all(set(i["by_rate"]) == {"0.003", "0.01"} for i in infos)
    assert validate_submission(json.loads((out / "submission.json").read_text()), tasks) == []
