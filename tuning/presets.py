"""Presets (YAML files in this folder) and the Tune search space.

A preset is a partial :class:`efe_ray.config.ExperimentConfig`; keys it omits keep their defaults,
and unknown keys are rejected with the key path. ``--set key.path=value`` overrides any key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from efe_ray.config import ConfigError, ExperimentConfig, from_dict, merge

PRESET_DIR = Path(__file__).parent


def preset_names() -> list[str]:
    """Names of the presets shipped in this folder."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The raw dict of a preset given by name (``default``) or by a path to a YAML file."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name_or_path not in preset_names():
            raise ConfigError(f"unknown preset {name_or_path!r}; known: {', '.join(preset_names())} (or a .yaml path)")
        path = PRESET_DIR / f"{name_or_path}.yaml"
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> dict[str, Any]:
    """``"learner.agent_lr=0.001"`` -> ``{"learner.agent_lr": 0.001}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return {key.strip(): yaml.safe_load(value)}
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value {value!r} ({err})") from err


def build_config(preset: str, overrides: list[str] = (), **tune_overrides: Any) -> ExperimentConfig:
    """Preset + ``--set`` overrides + CLI tune options -> a checked ExperimentConfig."""
    raw = load_preset(preset)
    for text in overrides:
        raw = merge(raw, parse_override(text))
    tune_part = {k: v for k, v in tune_overrides.items() if v is not None}
    if tune_part:
        raw = merge(raw, {"tune": tune_part})
    return from_dict(ExperimentConfig, raw)


def search_space(cfg: ExperimentConfig) -> dict[str, Any]:
    """Tune distributions, keyed by experiment config path: log-uniform lrs, a reward-scale choice."""
    from ray import tune

    t = cfg.tune
    return {
        "learner.agent_lr": tune.loguniform(*t.agent_lr),
        "learner.qwen_lr": tune.loguniform(*t.qwen_lr),
        "learner.reward_scale": tune.choice(list(t.reward_scale)),
    }
