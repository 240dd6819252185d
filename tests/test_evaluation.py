"""Tests of the ARC evaluation harness (efe_ray.evaluation and python -m efe_ray.evaluate)."""

from __future__ import annotations

import csv
import io
import json
import pickle
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from efe_ray.checkpoint import save as save_checkpoint
from efe_ray.config import AgentConfig, ExperimentConfig, LearnerConfig, PromptConfig
from efe_ray.data.augment import Augmentation, all_d8
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task, as_grid
from efe_ray.data.loaders import SkippedTasksWarning
from efe_ray.evaluate import EXIT_LEAKAGE, main, parse_args
from efe_ray.evaluation.baselines import copy_input, demo_rule, fitting_rules
from efe_ray.evaluation.leakage import find_leaks
from efe_ray.evaluation.model import ModelPredictor, ModelSettings, cached_model
from efe_ray.evaluation.solve import SolveSettings, solve_group
from efe_ray.evaluation.resolve import CheckpointNotFoundError, resolve_checkpoint
from efe_ray.evaluation.report import (EXIT_FAILED, EXIT_PARTIAL, MethodResult, format_table, per_task_csv,
                                      run_status, safe_cell, score_method)
from efe_ray.evaluation.runner import failed, root_cause, run_parallel, run_serial
from efe_ray.evaluation.scoring import TaskScore, cell_accuracy, score_task, summarise
from efe_ray.evaluation.submission import (SubmissionError, build_submission, validate_submission,
                                           write_submission)
from efe_ray.evaluation.voting import rank, vote, vote_augmented

G = as_grid


def make_task(task_id: str, train: list[tuple], test: list[tuple]) -> Task:
    """A task from lists of (input rows, output rows or None)."""
    def pairs(items):
        return tuple(Pair(G(i), None if o is None else G(o)) for i, o in items)
    return Task(task_id, pairs(train), pairs(test))


def random_grid(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 10, size=(h, w))


def rule_task(task_id: str, fn, *, seed: int = 0, n_train: int = 3, n_test: int = 1, shape=(3, 4)) -> Task:
    rng = np.random.default_rng(seed)
    items = [(g, fn(g)) for g in (random_grid(rng, *shape) for _ in range(n_train + n_test))]
    return make_task(task_id, items[:n_train], items[n_train:])


# ------------------------------------------------------------------------------ scoring


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


# ------------------------------------------------------------------------------ submission


def _sub_tasks() -> list[Task]:
    return [make_task("t1", [([[1]], [[2]])] * 2, [([[1]], [[2]]), ([[3]], None)]),
            make_task("t2", [([[1]], [[2]])] * 2, [([[1, 1]], None)])]


def _good_sub() -> dict:
    return {"t1": [{"attempt_1": [[2]], "attempt_2": [[0]]}, {"attempt_1": [[3]], "attempt_2": [[3]]}],
            "t2": [{"attempt_1": [[1, 2], [3, 4]], "attempt_2": [[9]]}]}


def test_good_submission_passes_and_build_gives_python_ints():
    tasks = _sub_tasks()
    assert validate_submission(_good_sub(), tasks) == []
    built = build_submission({"t1": [(np.array([[2]]), np.array([[0]])), (np.array([[3]]), np.array([[3]]))],
                              "t2": [(np.array([[1, 2], [3, 4]], dtype=np.int8), np.array([[9]]))]})
    assert built == _good_sub()
    assert type(built["t2"][0]["attempt_1"][0][0]) is int
    assert validate_submission(built, tasks) == []


@pytest.mark.parametrize("mutate, where, words", [
    (lambda s: s["t1"][0].__setitem__("attempt_1", [[np.int64(2)]]), ("t1", 0, "attempt_1"), "int64"),
    (lambda s: s["t1"][0].__setitem__("attempt_2", [[True]]), ("t1", 0, "attempt_2"), "bool"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", [[1, 2], [3]]), ("t2", 0, "attempt_1"), "ragged"),
    (lambda s: s["t1"][1].__setitem__("attempt_1", [[10]]), ("t1", 1, "attempt_1"), "outside 0..9"),
    (lambda s: s.pop("t2"), ("t2", None, None), "missing"),
    (lambda s: s["t1"].pop(), ("t1", None, None), "1 entries for 2 test input"),
    (lambda s: s["t1"][1].pop("attempt_2"), ("t1", 1, "attempt_2"), "missing"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", []), ("t2", 0, "attempt_1"), "empty"),
    (lambda s: s["t2"][0].__setitem__("attempt_1", [[1.0]]), ("t2", 0, "attempt_1"), "float"),
])
def test_submission_defects_are_flagged_precisely(mutate, where, words):
    sub = _good_sub()
    mutate(sub)
    problems = validate_submission(sub, _sub_tasks())
    assert len(problems) == 1, problems
    p = problems[0]
    assert (p.task_id, p.index, p.key) == where
    assert words in p.message


def test_write_submission_validates_then_writes(tmp_path):
    tasks = _sub_tasks()
    bad = _good_sub()
    bad["t1"][0]["attempt_1"] = [[np.int64(1)]]
    with pytest.raises(SubmissionError, match="t1"):
        write_submission(tmp_path / "s.json", bad, tasks)
    assert not (tmp_path / "s.json").exists()
    write_submission(tmp_path / "s.json", _good_sub(), tasks)
    assert json.loads((tmp_path / "s.json").read_text()) == _good_sub()
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary file left behind


# ------------------------------------------------------------------------------ voting


def test_vote_undoes_augmentations():
    rng = np.random.default_rng(0)
    answer = random_grid(rng, 3, 5)  # non-square and asymmetric: every D8 image differs
    augs = [Augmentation(a.d8, Augmentation.random(rng).colours) for a in all_d8()]
    cands = [(aug, aug.apply(answer), -0.1 * i) for i, aug in enumerate(augs)]
    assert len({aug.apply(answer).tobytes() + bytes(aug.apply(answer).shape) for aug in augs}) > 1
    a1, a2 = vote_augmented(cands)
    np.testing.assert_array_equal(a1, answer)
    np.testing.assert_array_equal(a2, answer)  # one distinct candidate: attempt 2 repeats it


def test_majority_beats_a_confident_minority_and_score_breaks_count_ties():
    x, y, z = np.array([[1]]), np.array([[2]]), np.array([[3, 3]])
    a1, a2 = vote([(x, -5.0), (y, -0.01), (x, -5.0), (z, -1.0)])
    assert a1.tolist() == [[1]]  # 2 votes beat 1, whatever the scores
    assert a2.tolist() == [[2]]  # y and z have one vote each; y's score is higher
    ranked = rank([(x, -1.0), (y, -0.5)])
    assert [r.grid.tolist() for r in ranked] == [[[2]], [[1]]]


def test_tie_break_is_deterministic_under_candidate_order():
    rng = np.random.default_rng(1)
    cands = [(np.array([[c]]), -1.0) for c in (4, 2, 7, 2, 4, 7)]  # three grids, equal counts and scores
    outcomes = set()
    for _ in range(10):
        order = rng.permutation(len(cands))
        a1, a2 = vote([cands[i] for i in order])
        outcomes.add((a1.tobytes(), a2.tobytes()))
    assert len(outcomes) == 1
    assert vote(cands)[0].tolist() == [[2]] and vote(cands)[1].tolist() == [[4]]
    with pytest.raises(ValueError):
        vote([])


# ------------------------------------------------------------------------------ baselines


def test_copy_input_solves_identity_and_not_flip():
    ident = rule_task("ident", lambda g: g)
    flip = rule_task("flip", lambda g: g[:, ::-1])
    for task, solved in ((ident, 1), (flip, 0)):
        s = score_task(task.task_id, copy_input(task), [p.output for p in task.test], [p.input for p in task.test])
        assert s.num_solved == solved


@pytest.mark.parametrize("fn", [
    lambda g: g[:, ::-1],                                        # flip left-right
    lambda g: np.rot90(g),                                       # rotate (shape changes)
    lambda g: np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 9])[g],        # colour map
    lambda g: np.array([0, 2, 1, 4, 3, 6, 5, 8, 7, 9])[g.T],      # transpose + colour map
])
def test_demo_rule_solves_rule_tasks(fn):
    task = rule_task("r", fn, n_test=2, shape=(5, 6))  # 90 demo cells: every colour is seen
    attempts = demo_rule(task)
    s = score_task("r", attempts, [p.output for p in task.test], [p.input for p in task.test])
    assert s.num_solved == 2
    assert fitting_rules(task)


def test_demo_rule_falls_back_to_copy():
    task = make_task("noise", [([[1, 2]], [[3]]), ([[2, 1]], [[4, 4]])], [([[5, 5]], None)])
    assert demo_rule(task)[0][0].tolist() == [[5, 5]]


# ------------------------------------------------------------------------------ leakage


def test_leakage_by_id_and_by_signature():
    a = rule_task("a", lambda g: g[:, ::-1], seed=1)
    b = rule_task("b", lambda g: g.T, seed=2)
    trained = [{"id": t.task_id, "signature": t.pair_set_signature()} for t in (a, b)]
    # A renamed copy of b whose pairs are reordered (and the test pair moved into train).
    pairs = list(b.train + b.test)[::-1]
    renamed = Task("b-renamed", tuple(pairs[:-1]), (pairs[-1],))
    same_id = rule_task("a", lambda g: g, seed=9)  # other pairs, same id
    fresh = rule_task("c", lambda g: g, seed=10)
    leaks = dict(find_leaks([same_id, renamed, fresh], trained))
    assert set(leaks) == {"a", "b-renamed"}
    assert leaks["a"] == "id"
    assert leaks["b-renamed"].startswith("signature") and "'b'" in leaks["b-renamed"]
    assert find_leaks([a], trained) == [("a", "id; signature (as trained task 'a')")]


# ------------------------------------------------------------------------------ checkpoint resolution


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


# ------------------------------------------------------------------------------ the model

PROMPT = PromptConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, prompt_dim=32)
AGENT = AgentConfig(canvas=8, d_model=32, num_layers=1, num_heads=2)
LEARNER = LearnerConfig(batch_size=2)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[Path, list[Task]]:
    """A checkpoint of a tiny learner trained a few steps on synthetic tasks: (folder, trained tasks)."""
    from efe_ray.data.batching import TaskSampler
    from efe_ray.learner import EFELearner

    tasks = synthetic_tasks(side=4, seed=0, prefix="tr")
    with torch.random.fork_rng(devices=[]):
        learner, sampler = EFELearner(PROMPT, AGENT, LEARNER), TaskSampler(tasks, LEARNER, AGENT.canvas)
        for i in range(3):
            learner.step(sampler.batch(tasks[i % len(tasks)]))
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001"
    save_checkpoint(folder, learner.state_dict(), ExperimentConfig(prompt=PROMPT, agent=AGENT, learner=LEARNER), tasks)
    return folder, tasks


def _eval_tasks() -> list[Task]:
    return synthetic_tasks(side=4, seed=1, prefix="ev", num_test=2)


def _weights(learner) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m, mod in (("agent", learner.agent), ("prompt", learner.prompt))
            for k, v in mod.state_dict().items()}


def test_tta_leaves_loaded_weights_untouched_and_never_needs_test_outputs(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    learner = cached_model(folder, device="cpu", use_policy=False).learner
    before = _weights(learner)
    task = _eval_tasks()[1]
    garbage = Task(task.task_id, task.train, tuple(Pair(p.input, G([[9] * 7] * 7)) for p in task.test))
    rng_before = torch.get_rng_state()
    settings = SolveSettings(tta_steps=2, tta_views=2, augmentations=2, search_steps=1, seed=3)
    one, two = (solve_group(learner, None, [t], settings)[0] for t in (task, garbage))
    assert len(one.methods["model"]) == 2 and len(one.info["tta_loss"]) == 2
    for (a, b), (c, d) in zip(one.methods["model"], two.methods["model"]):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    after = _weights(learner)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's torch RNG is untouched


def test_same_seed_same_submission_and_canvas_fallback(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    tasks = _eval_tasks()[:2]
    big = make_task("big", [([[1] * 4] * 4, [[1] * 4] * 4)] * 2, [([[2] * 10] * 10, None)])  # 10x10 > canvas 8
    settings = ModelSettings(SolveSettings(tta_steps=1, tta_views=2, augmentations=2, seed=7), use_policy=False,
                             device="cpu")
    predictor = ModelPredictor(folder, settings)
    clone = pickle.loads(pickle.dumps(predictor))  # what Ray ships: the path and the settings only
    assert len(pickle.dumps(predictor)) < 2000
    subs = []
    for fn, order in ((predictor, tasks + [big]), (clone, [big] + tasks[::-1])):
        results = {r.task_id: r.attempts for r in run_serial(order, fn, progress=False)}
        subs.append(build_submission({t.task_id: results[t.task_id] for t in tasks + [big]}))
    assert subs[0] == subs[1]
    assert validate_submission(subs[0], tasks + [big]) == []
    result = run_serial([big], predictor, progress=False)[0]
    assert result.attempts[0][0].tolist() == [[2] * 10] * 10 and "canvas" in result.note and not result.error


# ------------------------------------------------------------------------------ the CLI


def _write_tasks(folder: Path, tasks: list[Task]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (folder / f"{t.task_id}.json").write_text(json.dumps(t.to_json()))
    return folder


def test_cli_end_to_end(tiny_checkpoint, tmp_path, capsys):
    folder, _ = tiny_checkpoint
    tasks = _eval_tasks()
    split = _write_tasks(tmp_path / "evtasks", tasks)
    out = tmp_path / "out"
    code = main(["--checkpoint", str(folder.parent), "--split", str(split), "--workers", "0", "--no-policy",
                 "--baselines", "--augmentations", "2", "--tta-steps", "1", "--seed", "5", "--out", str(out),
                 "--quiet"])
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
    sub = json.loads((out / "submission.json").read_text())
    assert validate_submission(sub, tasks) == []
    assert (out / "submission_demo_rule.json").is_file()


def test_cli_refuses_leaked_tasks_unless_allowed(tiny_checkpoint, tmp_path, capsys):
    folder, trained = tiny_checkpoint
    t = trained[0]
    pairs = list(t.train + t.test)[::-1]
    renamed = Task("renamed", tuple(pairs[:-1]), (pairs[-1],))
    split = _write_tasks(tmp_path / "leaky", [renamed, trained[1]])
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
    split = _write_tasks(tmp_path / "t", [rule_task("flip", lambda g: g[:, ::-1])])
    assert main(["--baseline", "demo_rule", "--split", str(split), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["methods"]["demo_rule"]["output_score"] == 1.0
    assert main(["--baseline", "copy_input", "--split", str(tmp_path / "nope")]) == 2
    assert main(["--split", str(split)]) == 2
    assert "error" in capsys.readouterr().err


# ------------------------------------------------------------------------------ honest failure


def _flaky(task: Task):
    """copy_input, except on task "b" (an identity task, where copying would be the right answer)."""
    if task.task_id == "b":
        raise RuntimeError("boom")
    return copy_input(task)


def test_a_failed_prediction_is_never_scored_as_an_answer():
    tasks = [rule_task("a", lambda g: g), rule_task("b", lambda g: g, seed=1)]  # copying solves both
    results = run_serial(tasks, _flaky, progress=False)
    assert results[1].attempts == [] and results[1].error == "RuntimeError: boom"
    m = score_method("flaky", tasks, results, 0.0)
    assert [s.num_solved for s in m.scores] == [1, 0] and m.scores[1].cell_acc == 0.0
    assert m.summary.task_score == 0.5 and m.summary.solved_outputs == 1 and m.unanswered_outputs == 1
    assert run_status([m]) == ("partial: failed (flaky on 1 of 2 tasks); those tasks score 0", EXIT_PARTIAL)
    every = score_method("down", tasks, [failed(t, OSError("disk")) for t in tasks], 0.0)
    assert every.summary.solved_outputs == 0 and every.summary.cell_acc == 0.0
    assert run_status([every]) == ("failed: down failed on every one of 2 tasks", EXIT_FAILED)
    ok = score_method("ok", tasks, run_serial(tasks, copy_input, progress=False), 0.0)
    assert ok.summary.solved_outputs == 2 and run_status([ok]) == ("ok", 0)


def test_unanswered_outputs_score_zero_even_where_the_stand_in_is_right():
    tasks = [rule_task("a", lambda g: g, n_test=2)]
    result = replace(run_serial(tasks, copy_input, progress=False)[0], unanswered=(1,))
    m = score_method("model", tasks, [result], 0.0)
    assert [o.solved for o in m.scores[0].outputs] == [True, False]
    assert m.scores[0].outputs[1].cell_acc == 0.0 and m.unanswered_outputs == 1
    assert "no answer" in format_table([m])
    csv_row = list(csv.DictReader(io.StringIO(per_task_csv([m]))))[0]
    assert csv_row["unanswered"] == "1" and csv_row["solved"] == "1"


def test_csv_cells_never_become_formulas():
    assert [safe_cell(v) for v in ("=HYPERLINK(1)", "+1", "-2", "@x", "\tx", "ok", 3)] == \
        ["'=HYPERLINK(1)", "'+1", "'-2", "'@x", "'\tx", "ok", 3]
    task = rule_task("a", lambda g: g)
    result = replace(failed(task, ValueError("=cmd|' /C calc'!A0")), task_id="=HYPERLINK(\"x\")")
    m = MethodResult("m", [result], [TaskScore(result.task_id, ())], summarise([]), 0.0)
    row = list(csv.reader(io.StringIO(per_task_csv([m]))))[1]
    assert row[0] == "'=HYPERLINK(\"x\")" and row[-1] == "ValueError: =cmd|' /C calc'!A0"
    assert not any(cell.startswith(("=", "+", "@")) for cell in row)


def test_progress_is_a_tqdm_bar_on_stderr(capsys):
    tasks = [rule_task(f"t{i}", lambda g: g, seed=i) for i in range(3)]
    run_serial(tasks, copy_input, progress=True, desc="copy")
    err = capsys.readouterr().err
    assert "copy: 100%" in err and "3/3" in err
    run_serial(tasks, copy_input, progress=False, desc="quiet")
    assert "quiet" not in capsys.readouterr().err


def test_root_cause_unwraps_ray_task_errors():
    from ray.exceptions import RayTaskError

    inner = KeyError("missing")
    outer = RayTaskError("f", "traceback", RayTaskError("g", "traceback", inner))
    assert root_cause(outer) is inner
    assert failed(rule_task("a", lambda g: g), root_cause(outer)).error == "KeyError: 'missing'"
    from ray.exceptions import RaySystemError

    assert root_cause(RaySystemError(inner, "traceback")) is inner
    assert root_cause(RaySystemError("a string", "traceback")).client_exc == "a string"  # nothing to unwrap


def test_a_prepared_predictor_carries_verified_weights_not_the_path(tiny_checkpoint, tmp_path):
    from ray import cloudpickle

    import efe_ray.evaluation.model as model_mod

    folder, _ = tiny_checkpoint
    copy = tmp_path / "ckpt"
    shutil.copytree(folder, copy)
    settings = ModelSettings(SolveSettings(augmentations=1), use_policy=False, device="cpu")
    predictor = ModelPredictor(copy, settings)
    predictor.prepare(device="cpu")
    shipped = cloudpickle.dumps(predictor)  # what ray.put sends to the workers
    task = _eval_tasks()[0]
    expected = predictor(task).attempts
    shutil.rmtree(copy)  # a worker never reads the folder
    model_mod._CACHE.clear()
    clone = cloudpickle.loads(shipped)
    assert clone._loaded is None
    for (a, b), (c, d) in zip(expected, clone(task).attempts):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


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
    split = _write_tasks(tmp_path / "t", _eval_tasks())
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
    tasks = _eval_tasks()
    split = _write_tasks(tmp_path / "t", tasks)
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


def test_cli_counts_tasks_beyond_the_canvas_and_scores_them_zero(tiny_checkpoint, tmp_path, capsys):
    folder, _ = tiny_checkpoint  # canvas 8
    small = _eval_tasks()[:1]
    big = [make_task(f"big{i}", [([[1] * 9] * 9, [[1] * 9] * 9)] * 2, [([[2] * 9] * 9, [[2] * 9] * 9)]) for i in range(2)]
    split = _write_tasks(tmp_path / "t", small + big)
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
    only_big = _write_tasks(tmp_path / "big", big)
    assert _cli(folder, only_big, tmp_path / "none") == EXIT_FAILED
    assert "error: failed: model answered none of 2 test outputs" in capsys.readouterr().err


def test_cli_records_skipped_tasks(tiny_checkpoint, tmp_path):
    folder, _ = tiny_checkpoint
    split = _write_tasks(tmp_path / "t", _eval_tasks())
    (split / "broken.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.warns(SkippedTasksWarning, match="broken"):
        assert _cli(folder, split, tmp_path / "out", "--skip-invalid") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(s["task_id"], s["problems"][0].split(": ", 2)[-1]) for s in report["skipped_tasks"]] == [
        ("broken", "JSON nested 5000 deep, more than the 32 allowed (a task nests 5 deep)")]


# ------------------------------------------------------------------------------ Ray


def test_a_task_not_started_by_the_deadline_fails_and_scores_zero():
    tasks = [rule_task(k, lambda g: g) for k in "abc"]
    seen = []

    def slow(task: Task):
        seen.append(task.task_id)
        time.sleep(0.3)
        return copy_input(task)

    results = run_serial(tasks, slow, progress=False, deadline=time.monotonic() + 0.1)
    assert seen == ["a"]  # started before the deadline, finished; the others never started
    assert [bool(r.error) for r in results] == [False, True, True]
    assert results[1].error == "TimeBudgetEnded: the time budget ended before this task was answered"
    method = score_method("model", tasks, results, 1.0)
    assert method.summary.solved_outputs == 1 and len(method.errors) == 2
    assert run_status([method])[1] == EXIT_PARTIAL


@pytest.mark.slow
def test_run_parallel_on_a_local_ray():
    import ray

    tasks = [rule_task("a", lambda g: g), rule_task("b", lambda g: g[:, ::-1])]

    def flaky(task: Task):  # defined here: shipped by value (workers cannot import this test module)
        if task.task_id == "b":
            raise RuntimeError("boom")
        return copy_input(task)

    class Unshippable:
        """A predictor that cannot be rebuilt in a worker: the Ray task fails outside run_task."""

        def __call__(self, task):
            return copy_input(task)

        def __reduce__(self):
            return (int, ("cannot be rebuilt here",))  # int("...") raises ValueError when unpickled

    def slow_on_b(task: Task):
        if task.task_id == "b":
            time.sleep(60)
        return copy_input(task)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_parallel(tasks, flaky, num_cpus_per_task=1, progress=False)
        broken = run_parallel(tasks[:1], Unshippable(), num_cpus_per_task=1, progress=False)
        start = time.monotonic()
        late = run_parallel(tasks, slow_on_b, num_cpus_per_task=1, progress=False, deadline=start + 8)
        waited = time.monotonic() - start
    finally:
        ray.shutdown()
    assert waited < 30  # "b" was cancelled at the deadline, not awaited
    assert not late[0].error and late[1].error.startswith("TimeBudgetEnded: ") and late[1].attempts == []
    assert [r.task_id for r in results] == ["a", "b"]
    np.testing.assert_array_equal(results[0].attempts[0][0], tasks[0].test[0].input)
    assert not results[0].error and results[1].error == "RuntimeError: boom" and results[1].attempts == []
    assert broken[0].error == "ValueError: invalid literal for int() with base 10: 'cannot be rebuilt here'"
    assert broken[0].attempts == [] and "Traceback" in broken[0].traceback

