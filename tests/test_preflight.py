"""Settings are obeyed or refused before Ray starts: searched keys, YAML floats, storage, memory, canvas."""

from __future__ import annotations

import json

import pytest
import ray
from ray.tune.search.variant_generator import generate_variants

from efe_ray.config import ConfigError, DataConfig
from efe_ray.data.sources import SKIPPED_FILE, resolve_tasks, write_skipped_tasks
from efe_ray.tune import main as tune_main
from efe_ray.tune import param_space
from tuning.preflight import check_cpu_memory, check_storage, concurrent_trials
from tuning.presets import build_config, load_preset, parse_override

SMOKE = ["--preset", "smoke", "--no-dashboard"]


def _sampled(cfg, n=6):
    """``n`` trial configs as Tune samples them from the search space (no Ray needed)."""
    out = []
    for _ in range(n):
        for _, variant in generate_variants(param_space(cfg)):
            out.append(variant["env_config"]["experiment"]["learner"])
    return out


def test_an_explicit_learner_value_fixes_its_search_dimension_and_says_so():
    notes = []
    cfg = build_config("default", ["learner.agent_lr=0.001", "learner.reward_scale=7"], say=notes.append)
    assert cfg.learner.agent_lr == 0.001 and cfg.learner.reward_scale == 7.0
    assert cfg.tune.agent_lr == (0.001, 0.001) and cfg.tune.reward_scale == (7.0,)
    assert notes == ["learner.agent_lr=0.001 is fixed for every trial instead of searching tune.agent_lr=[0.002, 0.008]",
                     "learner.reward_scale=7 is fixed for every trial instead of searching "
                     "tune.reward_scale=[2.0, 5.0, 10.0]"]
    trials = _sampled(cfg)
    assert {t["agent_lr"] for t in trials} == {0.001} and {t["reward_scale"] for t in trials} == {7.0}
    assert len({t["qwen_lr"] for t in trials}) == len(trials)  # the untouched dimension is still searched


def test_without_explicit_values_every_dimension_is_searched():
    notes = []
    trials = _sampled(build_config("default", say=notes.append), n=20)
    assert notes == []
    assert all(0.002 <= t["agent_lr"] <= 0.008 for t in trials) and len({t["agent_lr"] for t in trials}) == 20
    assert {t["reward_scale"] for t in trials} <= {2.0, 5.0, 10.0}


def test_the_later_setting_wins_and_one_preset_may_not_say_both(tmp_path):
    cfg = build_config("default", ["learner.agent_lr=0.001", "tune.agent_lr=[0.001, 0.01]"], say=print)
    assert cfg.tune.agent_lr == (0.001, 0.01)  # the range came last: searched
    cfg = build_config("default", ["tune.agent_lr=[0.001, 0.01]", "learner.agent_lr=0.004"], say=print)
    assert cfg.tune.agent_lr == (0.004, 0.004)
    both = tmp_path / "both.yaml"
    both.write_text("learner:\n  qwen_lr: 1e-4\ntune:\n  qwen_lr: [1e-4, 1e-3]\n")
    with pytest.raises(ConfigError, match="sets both learner.qwen_lr and tune.qwen_lr: give one"):
        build_config(str(both))


def test_floats_in_e_notation_are_numbers():
    assert parse_override("learner.agent_lr=1e-3") == {"learner.agent_lr": 0.001}
    assert parse_override("tune.qwen_lr=[1E-4, 2e-3]") == {"tune.qwen_lr": [0.0001, 0.002]}
    assert parse_override("learner.grad_clip=-2e+1") == {"learner.grad_clip": -20.0}
    assert parse_override("data.train_source=1e3x") == {"data.train_source": "1e3x"}  # not a number: a string
    assert build_config("smoke", ["learner.agent_lr=1e-3"]).learner.agent_lr == 0.001


def test_preset_files_read_e_notation_too(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("learner:\n  agent_lr: 5e-4\n")
    assert load_preset(str(preset)) == {"learner": {"agent_lr": 0.0005}}


@pytest.mark.parametrize("argv, message", [
    (["--set", "tune.agent_lr=[2,3]"], "tune.agent_lr[0] (fills learner.agent_lr): must be > 0 and <= 1, got 2.0"),
    (["--set", "learner.reward_scale=-1"], "learner.reward_scale: must be >= 0 and <= 1000, got -1.0"),
    (["--set", "agent.canvas=100"], "agent.canvas: must be >= 1 and <= 30, got 100"),
    (["--set", "tune.metric=bogus"], "tune.metric: 'bogus' is not one of"),
])
def test_out_of_bounds_settings_stop_the_search_before_ray(argv, message, capsys):
    assert tune_main(SMOKE + argv) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def test_an_unwritable_storage_path_is_refused_before_ray(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert tune_main(SMOKE + ["--storage-path", str(a_file / "runs")]) == 2
    assert f"--storage-path {str(a_file / 'runs')!r}: {a_file} is not a folder" in capsys.readouterr().err
    assert not ray.is_initialized()
    with pytest.raises(ConfigError, match="cannot create files in /proc"):
        check_storage("/proc/efe-runs/x")  # /proc refuses new files, even to root
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a dangling link"):
        check_storage(tmp_path / "dangling" / "runs")
    assert check_storage(tmp_path / "new" / "runs") == tmp_path / "new" / "runs"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_cpu_trials_are_checked_against_memory(monkeypatch, capsys):
    cfg = build_config("default", say=print)
    train, _ = resolve_tasks(cfg.data, cfg.agent.canvas)
    assert concurrent_trials(cfg, num_cpus=2) == 2  # 2 samples, 1 CPU each
    line = check_cpu_memory(cfg, train, num_cpus=2, available_gib=64.0)
    assert line.startswith("one CPU trial needs ~1.") and "2 at once fit in the 64.0 GiB available" in line
    with pytest.raises(ConfigError, match=r"one CPU trial needs ~1\.\d GiB .* only 1 fit .* tune.max_concurrent=1"):
        check_cpu_memory(cfg, train, num_cpus=2, available_gib=2.5)
    with pytest.raises(ConfigError, match=r"this machine has 0.5 GiB available: lower agent.canvas"):
        check_cpu_memory(cfg, train, num_cpus=2, available_gib=0.5)
    monkeypatch.setattr("tuning.preflight.available_memory_gib", lambda: 0.5)
    assert tune_main(SMOKE) == 2
    assert "this machine has 0.5 GiB available" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_tasks_larger_than_the_canvas_are_counted_on_the_terminal(tmp_path, capsys):
    notes = []
    cfg = DataConfig(train_source="arc1-train", eval_source="arc1-eval")
    train, held = resolve_tasks(cfg, canvas=6, say=notes.append)
    assert len(train) == 46 and len(held) == 13
    assert notes == [
        "data.train_source='arc1-train': 46 of 400 tasks fit the 6x6 canvas (agent.canvas=6, data.max_side=30); "
        "354 with a larger grid are not used",
        "data.eval_source='arc1-eval': 13 of 400 tasks fit the 6x6 canvas (agent.canvas=6, data.max_side=30); "
        "387 with a larger grid are not used",
    ]
    # the search's pre-flight says it (here it then stops at the storage path, before Ray)
    assert tune_main(SMOKE + ["--set", "data.train_source=arc1-train", "--storage-path", "/proc/x"]) == 2
    assert "46 of 400 tasks fit the 6x6 canvas" in capsys.readouterr().err


def test_skipped_tasks_are_recorded_in_the_experiment_folder(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    good = {"train": [{"input": [[1]], "output": [[2]]}] * 2, "test": [{"input": [[1]], "output": [[2]]}]}
    (tasks / "good.json").write_text(json.dumps(good))
    (tasks / "big.json").write_text(json.dumps({**good, "test": [{"input": [[1] * 9] * 9, "output": [[2]]}]}))
    (tasks / "broken.json").write_text('{"train": [], "train": []}')
    cfg = build_config("smoke", ["data.train_source=" + str(tasks), "data.skip_invalid=true"])
    path = write_skipped_tasks(tmp_path / "exp", cfg)
    assert path == tmp_path / "exp" / SKIPPED_FILE
    record = json.loads(path.read_text())
    assert record["invalid"] == [{"file": str(tasks / "broken.json"), "task_id": "broken",
                                  "problems": [f"{tasks / 'broken.json'}: task 'broken': key 'train' appears twice "
                                               "in one JSON object (value: 'train')"]}]
    assert record["larger_than_canvas"] == {"train": ["big"], "eval": []}
    assert record["train_tasks"] == 1 and record["held_out_tasks"] == 3 and record["canvas"] == 6
