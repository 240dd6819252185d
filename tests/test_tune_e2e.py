"""End to end: a tiny Tune search that really trains, writes TensorBoard files and checkpoints.

This is the essential path of ``python -m efe_ray.tune``; it starts a local Ray (about 30 s).
"""

import contextlib
import glob
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from efe_ray import checkpoint as ckpt
from efe_ray.tune import main as tune_main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):  # the summary the search ends with
        rc = tune_main(["--preset", "smoke", "--no-dashboard", "--storage-path", str(storage), "--name", "e2e",
                        "--num-cpus", "2"])
    print(printed.getvalue())
    return rc, storage / "e2e", printed.getvalue()


def _accumulators(path):
    files = glob.glob(str(path / "*" / "events.out.tfevents.*"))
    out = []
    for f in files:
        ea = EventAccumulator(f, size_guidance={"scalars": 0, "images": 0})
        ea.Reload()
        out.append(ea)
    return out


def test_search_finishes_with_two_trials(search, capsys):
    rc, path, _ = search
    assert rc == 0
    trials = [d for d in os.listdir(path) if d.startswith("EFEPPO_")]
    assert len(trials) == 2


def test_the_summary_names_the_trial_and_checkpoint_that_evaluate_picks(search):
    """One rule for "the best trial": the highest last eval/score, then that trial's latest checkpoint."""
    from efe_ray.evaluation.resolve import last_metric, resolve_checkpoint

    _, path, printed = search
    picked = resolve_checkpoint(path, "eval/score")
    lines = printed.splitlines()
    named = [line.removeprefix("best trial: ") for line in lines if line.startswith("best trial: ")]
    shown = [line.strip().removeprefix("checkpoint: ") for line in lines if line.strip().startswith("checkpoint: ")]
    assert named == [picked.parent.name] and [Path(p).resolve() for p in shown] == [picked.resolve()]
    last = {t.name: last_metric(t / "result.json", "eval/score") for t in path.iterdir() if t.name.startswith("EFEPPO_")}
    assert last[picked.parent.name] == max(last.values())
    assert f"eval/score = {last[picked.parent.name]:.4f}" in printed  # the figure printed is that trial's last


def test_tensorboard_reader_loads_namespaced_scalars_and_images(search):
    _, path, _ = search
    accs = _accumulators(path)
    assert len(accs) == 2
    for ea in accs:
        tags = ea.Tags()
        for tag in ("losses/efe", "losses/risk", "losses/entropy", "charts/mask_ratio", "charts/reward",
                    "grads/qwen", "grads/agent", "eval/cell_acc", "eval/exact", "learner/skipped_steps"):
            assert tag in tags["scalars"], tag
        assert len(ea.Scalars("losses/efe")) == 3  # one point per training iteration
        assert {"eval/syn-eval-colour_map", "eval/syn-eval-flip", "eval/syn-eval-crop"} <= set(tags["images"])
        picture = ea.Images("eval/syn-eval-flip")[-1]
        assert picture.encoded_image_string.startswith(b"\x89PNG")


def test_trials_really_train(search):
    _, path, _ = search
    for ea in _accumulators(path):
        efe = [e.value for e in ea.Scalars("losses/efe")]
        acc = [e.value for e in ea.Scalars("eval/cell_acc")]
        assert efe[-1] < 0.8 * efe[0], efe
        assert acc[-1] > acc[0], acc
        assert all(e.value == 0 for e in ea.Scalars("learner/skipped_steps"))
        assert max(e.value for e in ea.Scalars("grads/qwen")) > 0


def test_each_trial_keeps_its_best_and_its_latest_checkpoint(search):
    _, path, _ = search
    for trial in glob.glob(str(path / "EFEPPO_*")):
        rows = [json.loads(line) for line in open(os.path.join(trial, "result.json"))]
        assert [r["training_iteration"] for r in rows] == [1, 2, 3]  # a checkpoint after each (checkpoint_every=1)
        scores = [r["eval/cell_acc"] for r in rows]
        best = max(range(3), key=lambda i: (scores[i], i))  # a tie goes to the later checkpoint
        kept = sorted(os.path.basename(f) for f in glob.glob(os.path.join(trial, "checkpoint_*")))
        assert kept == sorted({f"checkpoint_{best:06d}", "checkpoint_000002"}), (scores, kept)


def test_checkpoints_hold_the_learner_and_what_it_trained_on(search):
    _, path, _ = search
    folders = sorted(glob.glob(str(path / "EFEPPO_*" / "checkpoint_000002")))
    assert len(folders) == 2
    state, cfg, meta = ckpt.load(folders[-1])
    assert {t["id"] for t in meta["trained_tasks"]} == {"syn-colour_map", "syn-flip", "syn-crop"}
    assert state["steps"] == 3 * cfg.rl.train_batch_size * cfg.env.learner_steps_per_action  # K learner steps an action
    assert meta["env_stats"]["episodes"] >= 1
    results = [json.loads(line) for line in open(glob.glob(str(path / "EFEPPO_*" / "result.json"))[0])]
    assert "images" not in results[0]  # pictures go to TensorBoard only
    assert 0.0 <= results[-1]["eval/cell_acc"] <= 1.0


def test_evaluate_reads_the_search_and_refuses_its_training_tasks(search, tmp_path):
    from efe_ray.evaluate import main as evaluate_main

    _, path, _ = search
    out = tmp_path / "eval"
    rc = evaluate_main(["--checkpoint", str(path), "--split", "synthetic-eval", "--workers", "0",
                        "--augmentations", "2", "--baselines", "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["leaks"] == []
    submission = json.loads((out / "submission.json").read_text())
    assert set(submission) == {"syn-eval-colour_map", "syn-eval-flip", "syn-eval-crop"}
    assert all(len(entries) == 4 for entries in submission.values())  # 4 test inputs per task
    rc = evaluate_main(["--checkpoint", str(path), "--split", "synthetic", "--workers", "0",
                        "--augmentations", "1", "--out", str(tmp_path / "leak"), "--quiet"])
    assert rc == 3  # the tasks it trained on are refused
    rc = evaluate_main(["--checkpoint", str(path), "--split", "synthetic", "--workers", "0", "--drop-leaked",
                        "--augmentations", "1", "--out", str(tmp_path / "drop"), "--quiet"])
    assert rc == 2  # every task was a training task: nothing left to score


class _WritesSentinel:
    """Unpickling this writes a file: what a crafted checkpoint pickle could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "code ran while loading a checkpoint"))


def test_evaluation_reads_no_pickle_of_the_experiment(search, tmp_path):
    from efe_ray.evaluate import main as evaluate_main
    from efe_ray.data.sources import load_source
    from efe_ray.evaluation.model import build_learner
    from efe_ray.evaluation.predict import predict
    from efe_ray.rl.policy import load_policy

    _, path, _ = search
    experiment = tmp_path / "experiment"
    shutil.copytree(path, experiment)
    sentinel = tmp_path / "sentinel"
    trap = pickle.dumps(_WritesSentinel(sentinel))
    pickles = list(experiment.rglob("*.pkl"))
    assert len(pickles) > 20  # tuner.pkl, params.pkl, RLlib's module, learner and env-runner files, ...
    assert any("rl_module" in str(f) for f in pickles)
    for f in pickles:
        f.write_bytes(trap)

    folder = sorted(experiment.glob("EFEPPO_*/checkpoint_000002"))[0]
    refine = load_policy(folder)
    state, cfg, _ = ckpt.load(folder)
    learner = build_learner(state, cfg)
    task = load_source("synthetic-eval")[0]
    delta = refine(task, learner)
    assert delta.shape == (cfg.prompt.prompt_dim,) and np.isfinite(delta).all() and np.abs(delta).sum() > 0
    assert predict(learner, task, delta)[0].ndim == 2

    out = tmp_path / "eval"
    rc = evaluate_main(["--checkpoint", str(experiment), "--split", "synthetic-eval", "--workers", "0",
                        "--augmentations", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"].startswith(str(experiment))
    assert not sentinel.exists()
    pickle.loads(trap)  # the trap is live: loading any of those files would have run it
    assert sentinel.exists()


def test_hparams_compare_trials_on_the_search_metric(search):
    from tensorboard.plugins.hparams import plugin_data_pb2

    _, path, _ = search
    for trial in glob.glob(str(path / "EFEPPO_*")):
        ea = EventAccumulator(glob.glob(os.path.join(trial, "events.out.tfevents.*"))[0])
        ea.Reload()
        content = ea.PluginTagToContent("hparams")
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        metrics = [m.name.tag for m in experiment.metric_infos]
        assert metrics[0] == "eval/score"  # the search metric leads
        assert {"eval/cell_acc", "eval/exact", "losses/efe"} <= set(metrics)
        session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        params = json.load(open(os.path.join(trial, "params.json")))["env_config"]["experiment"]["learner"]
        assert session.hparams["env_config/experiment/learner/agent_lr"].number_value == pytest.approx(params["agent_lr"])
        last = [e.value for e in ea.Scalars("eval/score")][-1]  # the value HParams shows for the trial
        rows = [json.loads(line) for line in open(os.path.join(trial, "result.json"))]
        assert last == pytest.approx(rows[-1]["eval/score"])
