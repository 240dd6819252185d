"""Configs and presets: unknown keys, bad values and names are rejected with the key and value."""

import math

import pytest

from efe_ray.config import ConfigError, ExperimentConfig, LearnerConfig, from_dict, merge, to_dict
from efe_ray.tune import main as tune_main
from tuning.presets import build_config, load_preset, parse_override, preset_names


def test_defaults_round_trip():
    cfg = ExperimentConfig()
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


def test_every_shipped_preset_builds():
    assert {"default", "smoke", "gpu"} <= set(preset_names())
    for name in preset_names():
        cfg = build_config(name)
        assert cfg.prompt.dtype == "float32"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learner": {"agent_lrr": 1e-3}}, "unknown config key 'learner.agent_lrr' (did you mean 'agent_lr'?)"),
        ({"lerner": {}}, "unknown config key 'lerner' (did you mean 'learner'?)"),
        ({"learner": {"agent_lr": 0.0}}, "learner.agent_lr: must be > 0"),
        ({"learner": {"qwen_lr": -1e-4}}, "learner.qwen_lr: must be > 0"),
        ({"learner": {"reward_scale": math.nan}}, "learner.reward_scale: must be finite, got nan"),
        ({"learner": {"precision": "fp8"}}, "learner.precision: 'fp8' is not one of"),
        ({"learner": {"batch_size": 0}}, "learner.batch_size: must be a positive integer, got 0"),
        ({"learner": {"augment": "yes"}}, "learner.augment: expected true/false, got 'yes'"),
        ({"tune": {"agent_lr": [1e-2, 1e-3]}}, "tune.agent_lr: need 0 < low <= high"),
        ({"tune": {"reward_scale": [1.0, math.nan]}}, "tune.reward_scale[1]: must be finite"),
        ({"tune": {"gpus_per_trial": -0.5}}, "tune.gpus_per_trial: must be >= 0"),
        ({"prompt": {"hidden_size": 30, "num_heads": 4}}, "prompt.hidden_size: 30 is not divisible by num_heads=4"),
    ],
)
def test_bad_values_are_rejected_with_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, raw)
    assert message in str(err.value)


def test_merge_and_overrides():
    merged = merge({"learner": {"agent_lr": 1.0, "seed": 3}}, {"learner.agent_lr": 2.0})
    assert merged == {"learner": {"agent_lr": 2.0, "seed": 3}}
    assert parse_override("learner.precision=bf16") == {"learner.precision": "bf16"}
    assert parse_override("tune.agent_lr=[0.001, 0.01]") == {"tune.agent_lr": [0.001, 0.01]}
    cfg = build_config("smoke", ["learner.agent_lr=0.002"], num_samples=5)
    assert cfg.learner.agent_lr == 0.002 and cfg.tune.num_samples == 5
    assert isinstance(cfg.learner, LearnerConfig)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: default"):
        load_preset("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learner: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_preset(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("learner:\n  agent_lrate: 0.1\n")
    with pytest.raises(ConfigError, match="learner.agent_lrate"):
        build_config(str(typo))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--preset", "smoke", "--set", "learner.agent_lr=-1"], "learner.agent_lr: must be > 0"),
        (["--preset", "smoke", "--set", "learner.reward_scale=.nan"], "learner.reward_scale: must be finite"),
        (["--preset", "smoke", "--set", "learner.agent_lrr=0.1"], "unknown config key 'learner.agent_lrr'"),
        (["--preset", "smoke", "--set", "data.train_source=/no/such/folder"], "/no/such/folder"),
        (["--preset", "smoke", "--set", "prompt.model_name=Qwen/Qwen2.5-1.5B"], "--set prompt.model_name=/path/to/Qwen2.5-1.5B"),
        (["--preset", "smoke", "--gpus-per-trial", "64"], "tune.gpus_per_trial=64: this machine has"),
    ],
)
def test_tune_cli_rejects_bad_input_before_ray_starts(argv, message, capsys, monkeypatch):
    import ray

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert tune_main(argv + ["--no-dashboard"]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()


def _write_task(folder, name, train):
    import json

    (folder / f"{name}.json").write_text(json.dumps({"train": train, "test": [train[0]]}))


def test_bad_task_files_stop_the_search_before_ray_or_are_skipped_and_listed(tmp_path, capsys):
    import ray

    from efe_ray.config import DataConfig
    from efe_ray.data.sources import resolve_tasks

    good = [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}, {"input": [[5]], "output": [[5]]}]
    for name in ("good1", "good2"):
        _write_task(tmp_path, name, good)
    _write_task(tmp_path, "ragged", [{"input": [[1, 2], [3]], "output": [[1]]}, good[1]])
    rc = tune_main(["--preset", "smoke", "--no-dashboard", "--set", f"data.train_source={tmp_path}"])
    assert rc == 2 and not ray.is_initialized()
    err = capsys.readouterr().err
    assert "ragged.json: task 'ragged' train[0].input: row 1 has length 1, expected 2" in err

    cfg = DataConfig(train_source=str(tmp_path), eval_source="synthetic-eval", skip_invalid=True)
    with pytest.warns(UserWarning, match="ragged"):
        train, held = resolve_tasks(cfg, canvas=6)
    assert [t.task_id for t in train] == ["good1", "good2"]
