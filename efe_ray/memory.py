"""Peak GPU memory of one trial, estimated before anything runs, and how many trials share a GPU.

A trial's learner holds, on its GPU:

- per parameter: the fp32 weight, its fp32 gradient and AdamW's two fp32 moments (16 bytes),
  with ``learner.ema_decay`` its fp32 average (4 bytes more), plus, under bf16/fp16 autocast, the
  half-precision copy of each Qwen weight that the forward pass makes and keeps for the backward
  pass (2 bytes);
- the Qwen activations kept for the backward pass: per prompt token and layer about
  ``c·(10·d + 4·I) + 16·d`` bytes (``c`` = 2 under autocast, 4 in fp32; ``d`` the width, ``I`` the
  MLP width; the ``16·d`` is the fp32 residual stream and norms), and in fp32, where SDPA has no
  fused kernel, the attention probabilities (``heads·T²·4`` bytes per layer and prompt);
- the agent's activations over ``batch + rehearsal`` canvases of ``S²+1`` cells, attention
  probabilities included;
- library workspaces (a fixed allowance), and outside what PyTorch allocates, the CUDA context of
  the trial's process.

The longest prompt bounds ``T``: the text of a task's four largest pairs and its largest input,
capped by ``prompt.max_tokens``. Parameter counts come from the real modules built on the
``meta`` device (no memory, no weights), the task table with its rows for the training tasks
(``learner.colour_versions`` rows a task with colour versions) included. ``bench/memory_check.py``
compares the estimate with peaks measured on a GPU (``bench/RESULTS.md``); every measured peak lies
below its estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from efe_ray.config import ConfigError, ExperimentConfig
from efe_ray.data.task import Task

CONTEXT_GIB = 1.0
"""Per process, outside PyTorch's allocator: the CUDA context and libraries' own memory."""
WORKSPACE_BYTES = 256 * 2**20
"""Inside the allocator but independent of the model: cuBLAS/cuDNN workspaces, small buffers."""
MARGIN = 1.05
"""Multiplier on the allocator's estimate: blocks the caching allocator reserves but leaves unused."""
USABLE = 0.92
"""Share of a card's memory that trials may plan to fill."""
MAX_TRIALS_PER_GPU = 8
"""Beyond this, trials on one card are bound by its compute and their CPUs, not by memory."""

GIB = 2**30


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak of one trial, in bytes, by part."""

    params: int
    """Weights, gradients, AdamW moments and any average of the weights (fp32), plus autocast's half
    copies of Qwen weights."""
    qwen_activations: int
    """Qwen activations kept for the backward pass at the longest prompt."""
    agent_activations: int
    """Agent activations kept for the backward pass."""
    tokens: int
    """The longest prompt, in tokens, that the estimate assumes."""

    @property
    def allocated(self) -> int:
        """What PyTorch's allocator is expected to peak at (``torch.cuda.max_memory_allocated``)."""
        return self.params + self.qwen_activations + self.agent_activations + WORKSPACE_BYTES

    @property
    def total_gib(self) -> float:
        """The planning figure: the allocator's peak with a margin, plus the process's context."""
        return MARGIN * self.allocated / GIB + CONTEXT_GIB


def longest_prompt_tokens(tasks: list[Task], max_tokens: int) -> int:
    """An upper bound on the prompt length of any training sample of ``tasks``, in tokens.

    A sample's prompt holds at most 4 demonstrations and one query input; the bound serialises
    the 4 largest known pairs and the largest input (one token per character, plus 2 specials).
    """
    from efe_ray.data.batching import MAX_DEMOS, known_pairs
    from efe_ray.data.serialize import prompt_text

    longest = 0
    for task in tasks:
        pairs = sorted(known_pairs(task), key=lambda p: p.input.size + p.output.size, reverse=True)
        query = max((p.input for p in task.train + task.test), key=lambda g: g.size)
        longest = max(longest, len(prompt_text(tuple(pairs[:MAX_DEMOS]), query)) + 2)
    return min(longest, max_tokens)


def _meta_modules(cfg: ExperimentConfig, task_ids: tuple[str, ...] = ()):
    """(prompt encoder, agent) built on the meta device: shapes and counts, no memory. ``task_ids``:
    the training tasks, whose rows (``learner.colour_versions`` each) the task table holds."""
    import torch

    from efe_ray.models.agent import GridAgent
    from efe_ray.models.prompt import QwenHybridPrompt

    table = {"task_ids": task_ids, "versions": cfg.learner.colour_versions}
    with torch.device("meta"):
        prompt = (QwenHybridPrompt(cfg.prompt, **table) if cfg.prompt.model_name == "embedded"
                  else _meta_loaded(cfg, table))
        agent = GridAgent(cfg.agent, cfg.prompt.prompt_dim)
    return prompt, agent


def _meta_loaded(cfg: ExperimentConfig, table: dict):
    """A checkpoint's prompt encoder on the meta device, from its config.json (weights unread);
    ``table``: the task table's ``task_ids`` and ``versions``."""
    from transformers import AutoConfig, AutoModel

    from efe_ray.models.prompt import QwenHybridPrompt, model_location

    name, kwargs = model_location(cfg.prompt.model_name)
    try:
        qcfg = AutoConfig.from_pretrained(name, local_files_only=True, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise ConfigError(f"prompt.model_name={cfg.prompt.model_name!r}: cannot read its config to estimate "
                          f"GPU memory ({type(err).__name__}: {err}); set tune.gpus_per_trial and "
                          "tune.share_gpus=false") from err
    return QwenHybridPrompt(cfg.prompt, body=(AutoModel.from_config(qcfg), None), **table)


def estimate_trial_memory(cfg: ExperimentConfig, tasks: list[Task]) -> MemoryEstimate:
    """The peak GPU memory of one trial of ``cfg`` training on ``tasks`` (see the module docstring)."""
    prompt, agent = _meta_modules(cfg, tuple(t.task_id for t in tasks))
    learner, a = cfg.learner, cfg.agent
    half = learner.precision in ("bf16", "fp16")
    n_all = sum(p.numel() for p in prompt.parameters()) + sum(p.numel() for p in agent.parameters())
    qwen = getattr(prompt, "qwen", None) if cfg.prompt.use_qwen else None
    n_qwen = sum(p.numel() for p in qwen.parameters()) if qwen is not None else 0
    params = (16 + (4 if learner.ema_decay > 0 else 0)) * n_all + (2 * n_qwen if half else 0)

    c = 2 if half else 4  # bytes per activation value
    tokens = longest_prompt_tokens(tasks, cfg.prompt.max_tokens) if qwen is not None else 0
    qwen_act = 0
    if qwen is not None:
        q = qwen.config
        d, inner, layers, heads = q.hidden_size, q.intermediate_size, q.num_hidden_layers, q.num_attention_heads
        per_token_layer = c * (10 * d + 4 * inner) + 16 * d
        attention = 0 if half else heads * tokens * 4
        qwen_act = learner.batch_size * layers * tokens * (per_token_layer + attention)

    samples = learner.batch_size + learner.rehearsal + learner.batch_size  # + the no-grad "before" pass
    cells = a.canvas * a.canvas + 1
    agent_act = samples * a.num_layers * cells * (c * 12 * a.d_model + a.num_heads * cells * 4)
    return MemoryEstimate(params=params, qwen_activations=qwen_act, agent_activations=agent_act, tokens=tokens)


def trials_per_gpu(estimate_gib: float, card_gib: float) -> int:
    """How many trials of ``estimate_gib`` each fit on a card of ``card_gib`` (0 if not even one)."""
    return min(MAX_TRIALS_PER_GPU, math.floor(USABLE * card_gib / estimate_gib))


def local_card_gib() -> float | None:
    """The memory of the smallest local CUDA device, or None where this process sees none."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())) / GIB
    except (RuntimeError, AssertionError):
        return None


def plan_gpu_share(cfg: ExperimentConfig, tasks: list[Task], card_gib: float | None) -> tuple[float, str]:
    """(GPUs per trial, a one-line explanation) for ``cfg``, checked against the card's memory.

    With ``tune.share_gpus`` the share is ``1/k`` for the largest ``k`` (at most
    ``MAX_TRIALS_PER_GPU``) whose estimated peaks fit the card; without it, ``tune.gpus_per_trial``
    is kept, but refused if it would put more trials on a card than fit. CPU trials
    (``gpus_per_trial == 0``) pass unchanged.
    """
    t = cfg.tune
    if t.gpus_per_trial == 0:
        return 0.0, "trials run on CPU"
    try:
        est = estimate_trial_memory(cfg, tasks)
    except ConfigError as err:
        if t.share_gpus:
            raise
        return t.gpus_per_trial, f"not checked: {err}"
    card = card_gib if card_gib is not None else t.gpu_memory_gib
    where = "this machine's GPU" if card_gib is not None else "tune.gpu_memory_gib"
    fit = trials_per_gpu(est.total_gib, card)
    what = (f"one trial needs ~{est.total_gib:.1f} GiB (prompts up to {est.tokens} tokens, "
            f"{learner_desc(cfg)}); {where} has {card:.0f} GiB")
    if fit < 1:
        raise ConfigError(f"{what}: not even one trial fits. Shorten prompt.max_tokens, lower "
                          "learner.batch_size, use learner.precision=bf16, or a larger GPU")
    if t.share_gpus:
        share = 1.0 / fit
        return share, f"{what}: {fit} trial(s) per GPU (gpus_per_trial {share:.4g})"
    per_card = math.floor(1.0 / t.gpus_per_trial + 1e-9)  # trials Ray puts on one card at that share
    if t.gpus_per_trial < 1 and per_card > fit:
        raise ConfigError(f"tune.gpus_per_trial={t.gpus_per_trial:g} puts {per_card} trials on a GPU, but "
                          f"{what}: at most {fit} fit. Use --gpus-per-trial {1 / fit:g} or --set tune.share_gpus=true")
    return t.gpus_per_trial, f"{what}: {fit} would fit; gpus_per_trial {t.gpus_per_trial:g} kept"


def learner_desc(cfg: ExperimentConfig) -> str:
    """"<precision>, batch <task samples>+<rehearsal samples>", for messages."""
    return f"{cfg.learner.precision}, batch {cfg.learner.batch_size}+{cfg.learner.rehearsal}"
