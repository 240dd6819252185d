"""Presets (YAML files in this folder) and the Tune search space.

A preset is a partial :class:`efe_ray.config.ExperimentConfig`; keys it omits keep their defaults,
and unknown keys are rejected with the key path. ``--set key.path=value`` overrides any key; values
are read as YAML, with YAML 1.2's floats (``1e-3`` is a number, not the string YAML 1.1 makes it).

The search fills ``learner.agent_lr``, ``learner.qwen_lr`` and ``learner.reward_scale`` from
``tune.agent_lr``, ``tune.qwen_lr`` and ``tune.reward_scale``. An explicit value for one of those
learner keys is obeyed, never overwritten by the search: it fixes that dimension (the range
becomes ``[v, v]``, the choices ``[v]``) and :func:`build_config` says so. When both a learner
value and its search dimension are given, the one given later wins (``--set`` after the preset,
in command-line order); both in one preset file is refused as ambiguous.

``tune.seed`` (``--seed``) seeds the search and fills every trial's ``learner.seed``; a preset or
``--set`` that gives ``learner.seed`` itself is refused (:func:`seed_trials`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from efe_ray.config import ConfigError, ExperimentConfig, TuneConfig, from_dict, merge, search_dimensions

PRESET_DIR = Path(__file__).parent


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader plus YAML 1.2 floats without a dot (``1e-3``, ``-2E+5``)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """Parse ``text`` safely (no object tags), reading ``1e-3`` as a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader


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
        raw = read_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> dict[str, Any]:
    """``"learner.agent_lr=1e-3"`` -> ``{"learner.agent_lr": 0.001}`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects key.path=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return {key.strip(): read_yaml(value)}
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: cannot parse value {value!r} ({err})") from err


def _get(raw: dict[str, Any], path: str) -> Any:
    """``raw``'s value at dotted ``path`` (``KeyError`` if absent)."""
    node: Any = raw
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


def _has(raw: dict[str, Any], path: str) -> bool:
    try:
        _get(raw, path)
    except KeyError:
        return False
    return True


def fix_explicit_dimensions(sources: Sequence[tuple[str, dict[str, Any]]], raw: dict[str, Any],
                            say: Callable[[str], None]) -> dict[str, Any]:
    """``raw`` with each search dimension fixed where a learner value was given after its range.

    ``sources`` are ``(name, nested dict)`` in the order they were applied (preset first).
    """
    for dim, (target, kind) in search_dimensions().items():
        last = None
        for name, source in sources:
            has_value, has_dim = _has(source, target), _has(source, dim)
            if has_value and has_dim:
                raise ConfigError(f"{name} sets both {target} and {dim}: give one (a value fixes the search "
                                  f"dimension, {'a range' if kind == 'range' else 'choices'} search it)")
            last = "value" if has_value else "dimension" if has_dim else last
        if last != "value":
            continue
        value = _get(raw, target)
        fixed = [value, value] if kind == "range" else [value]
        before = _get(raw, dim) if _has(raw, dim) else None
        raw = merge(raw, {dim: fixed})
        was = f" instead of searching {dim}={before}" if before is not None else ""
        say(f"{target}={value} is fixed for every trial{was}")
    return raw


def seed_trials(sources: Sequence[tuple[str, dict[str, Any]]], raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``learner.seed`` filled from ``tune.seed``: a search seeds every trial with its
    own seed. A ``learner.seed`` in ``sources`` is refused rather than replaced."""
    for name, source in sources:
        if _has(source, "learner.seed"):
            raise ConfigError(f"{name} sets learner.seed: a search seeds every trial's learner with tune.seed; "
                              "set that instead (--seed N or --set tune.seed=N)")
    tune = raw.get("tune") if isinstance(raw.get("tune"), dict) else {}
    if "seed" not in tune:
        return raw
    seed = from_dict(TuneConfig, {"seed": tune["seed"]}, "tune").seed  # a bad seed is named as tune.seed
    return merge(raw, {"learner.seed": seed})


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def build_config(preset: str, overrides: Sequence[str] = (), say: Callable[[str], None] = _stderr,
                 **tune_overrides: Any) -> ExperimentConfig:
    """Preset + ``--set`` overrides + CLI tune options -> a checked ExperimentConfig.

    Notes for the user (a learner value fixing a search dimension) go to ``say`` (default: stderr).
    """
    raw = load_preset(preset)
    sources = [(f"preset {preset!r}", merge({}, raw))]
    for text in overrides:
        override = parse_override(text)
        sources.append((f"--set {text}", merge({}, override)))
        raw = merge(raw, override)
    tune_part = {k: v for k, v in tune_overrides.items() if v is not None}
    if tune_part:
        raw = merge(raw, {"tune": tune_part})
    notes: list[str] = []
    cfg = from_dict(ExperimentConfig, seed_trials(sources, fix_explicit_dimensions(sources, raw, notes.append)))
    for note in notes:
        say(note)
    return cfg


def search_space(cfg: ExperimentConfig) -> dict[str, Any]:
    """Tune's search space, keyed by experiment config path: log-uniform learning rates, a choice of
    reward scales; a dimension with one value (``[v, v]`` or ``[v]``) is that constant."""
    from ray import tune

    t = cfg.tune
    space: dict[str, Any] = {}
    for key in ("agent_lr", "qwen_lr"):
        low, high = getattr(t, key)
        space[f"learner.{key}"] = low if low == high else tune.loguniform(low, high)
    choices = sorted(set(t.reward_scale))
    space["learner.reward_scale"] = choices[0] if len(choices) == 1 else tune.choice(list(t.reward_scale))
    return space
