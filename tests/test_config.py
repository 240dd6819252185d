"""Configs and presets: unknown keys, bad values and names are rejected with the key and value."""

import dataclasses
import math
import re
import typing

import pytest

from efe_ray.config import AgentConfig, ConfigError, ExperimentConfig, LearnerConfig, from_dict, merge, to_dict
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
        ({"learner": {"batch_size": 0}}, "learner.batch_size: must be >= 1 and <= 4096, got 0"),
        ({"learner": {"augment": "yes"}}, "learner.augment: expected true/false, got 'yes'"),
        ({"tune": {"agent_lr": [1e-2, 1e-3]}}, "tune.agent_lr: expected [low, high] with low <= high, got [0.01, 0.001]"),
        ({"tune": {"reward_scale": [1.0, math.nan]}}, "tune.reward_scale[1] (fills learner.reward_scale): must be finite, got nan"),
        ({"tune": {"gpus_per_trial": -0.5}}, "tune.gpus_per_trial: must be >= 0"),
        ({"prompt": {"hidden_size": 30, "num_heads": 4}}, "prompt.hidden_size: 30 must split into num_heads=4 heads"),
        # the list: each was accepted and reached Ray before
        ({"rl": {"gamma": 5}}, "rl.gamma: must be >= 0 and <= 1, got 5.0"),
        ({"env": {"device": "banana"}}, "env.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'banana'"),
        ({"tune": {"metric": "bogus"}}, "tune.metric: 'bogus' is not one of 'eval/score', 'eval/cell_acc', 'eval/exact'"),
        ({"tune": {"max_concurrent": -1}}, "tune.max_concurrent: must be >= 0 and <= 100000, got -1"),
        ({"learner": {"weight_decay": -5}}, "learner.weight_decay: must be >= 0 and <= 1, got -5.0"),
        ({"agent": {"canvas": 100}}, "agent.canvas: must be >= 1 and <= 30, got 100"),
        ({"tune": {"max_failures": -2}}, "tune.max_failures: must be >= -1 and <= 10000, got -2"),
        # search dimensions obey the bounds of the fields they fill
        ({"tune": {"agent_lr": [2, 3]}}, "tune.agent_lr[0] (fills learner.agent_lr): must be > 0 and <= 1, got 2.0"),
        ({"tune": {"qwen_lr": [1e-4, 5]}}, "tune.qwen_lr[1] (fills learner.qwen_lr): must be > 0 and <= 1, got 5.0"),
        ({"tune": {"reward_scale": [2.0, -1]}}, "tune.reward_scale[1] (fills learner.reward_scale): must be >= 0"),
        ({"tune": {"agent_lr": [1e-3]}}, "tune.agent_lr: expected 2 values, got [0.001]"),
        # rules between fields
        ({"rl": {"minibatch_size": 64, "train_batch_size": 32}}, "rl.minibatch_size: 64 is larger than train_batch_size=32"),
        ({"env": {"action_dim": 300}}, "env.action_dim: 300 exceeds prompt.prompt_dim=256"),
        ({"learner": {"efe_weight": 0, "rl_weight": 0}}, "learner.efe_weight: efe_weight and rl_weight are both 0"),
    ],
)
def test_bad_values_are_rejected_with_key_and_value(raw, message):
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, raw)
    assert message in str(err.value)


def _bounded_fields():
    """(key path, Bounds) of every bounded field of every component."""
    from efe_ray.strict import Bounds

    for name, cls in typing.get_type_hints(ExperimentConfig).items():
        for f in dataclasses.fields(cls):
            rule = f.metadata.get("rule")
            if isinstance(rule, Bounds):
                yield f"{name}.{f.name}", rule


def test_every_field_has_its_rule_in_one_place():
    """Every field is bounded, pattern-checked, a search dimension, a Literal or a bool."""
    hints = typing.get_type_hints(ExperimentConfig)
    unruled = []
    for part in dataclasses.fields(ExperimentConfig):
        cls = hints[part.name]
        for name, hint in typing.get_type_hints(cls).items():
            f = next(f for f in dataclasses.fields(cls) if f.name == name)
            if "rule" not in f.metadata and hint is not bool and typing.get_origin(hint) is not typing.Literal:
                unruled.append(f"{part.name}.{name}")
    assert unruled == []
    numbers = {f"{part}.{name}" for part, cls in hints.items() for name, hint in typing.get_type_hints(cls).items()
               if hint in (int, float)}
    assert {key for key, _ in _bounded_fields()} == numbers  # every number has bounds


@pytest.mark.parametrize("side", ["low", "high"])
def test_every_bound_is_enforced_with_key_and_value(side):
    checked = 0
    for key, bounds in _bounded_fields():
        limit = bounds.low if side == "low" else bounds.high
        if limit is None:
            continue
        is_int = isinstance(getattr(ExperimentConfig(), key.split(".")[0]).__dict__[key.split(".")[1]], int)
        step = 1 if is_int else max(abs(limit) * 1e-3, 1e-9)
        value = limit - step if side == "low" else limit + step
        value = int(value) if is_int else value
        with pytest.raises(ConfigError, match=re.escape(f"{key}: must be")) as err:
            from_dict(ExperimentConfig, merge({}, {key: value}))
        assert repr(float(value) if not is_int else value) in str(err.value)
        checked += 1
    assert checked >= 45  # every bounded field has a high limit and all but a few a low one


def test_configs_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match=r"canvas: must be >= 1 and <= 30, got 31"):
        AgentConfig(canvas=31)
    with pytest.raises(ConfigError, match="gamma"):
        dataclasses.replace(ExperimentConfig().rl, gamma=1.5)


def test_merge_and_overrides():
    merged = merge({"learner": {"agent_lr": 1.0, "seed": 3}}, {"learner.agent_lr": 2.0})
    assert merged == {"learner": {"agent_lr": 2.0, "seed": 3}}
    assert parse_override("learner.precision=bf16") == {"learner.precision": "bf16"}
    assert parse_override("tune.agent_lr=[0.001, 0.01]") == {"tune.agent_lr": [0.001, 0.01]}
    cfg = build_config("smoke", ["learner.agent_lr=0.002"], num_samples=5)
    assert cfg.learner.agent_lr == 0.002 and cfg.tune.num_samples == 5
    assert isinstance(cfg.learner, LearnerConfig)


def test_unknown_preset_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'; known: arc, default"):
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
