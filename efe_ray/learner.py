"""EFELearner: the prompt encoder and the grid agent, their optimizer, and one learning step.

A step on a batch (B views of one task, then R rehearsal views): a host
:class:`~efe_ray.data.batching.Batch` or, in training, a
:class:`~efe_ray.data.device_sampler.DeviceBatch` drawn and built on the device:

1. prompt: the task's Qwen text embedding is recomputed, with gradient, every ``cache_every``-th
   step on that task and cached, detached, in between (efe_ray/text_cache.py: one table on the
   device; rehearsal views read their tasks' rows), then fused with the 15 numeric features (and
   each view's task embedding, if any: with ``learner.colour_versions`` the row of its task's
   colour version);
2. ``refined = prompt + delta`` on the task's views; ``delta`` (numpy, from the RL policy) is a
   constant: the learner never back-propagates into the policy;
3. agent (given each view's D8 transform) -> logits after each of its ``passes`` -> the EFE loss
   (efe_ray/efe.py) of every pass, averaged; ``reward = reward_scale * (acc_after - acc_before)``
   from the last pass's canvas cell accuracy with and without the refinement;
4. loss = efe_weight * EFE loss + rl_weight * RL term (efe_ray/refine.py: the encoder's prompt
   pulled toward the refinement, in proportion to the reward it earned);
5. backward (scaled in fp16), unscale, clip, and the fused optimizer step, which the device skips
   when the loss or the gradients are not finite;
6. the ARC recipe, each part off by default: every group's learning rate follows the schedule
   (efe_ray/optim.py: warm-up, then constant or cosine, from the step counter on the host); with
   ``learner.task_lr`` the task table takes a sign-SGD step of its own (only the batch's tasks'
   rows move); with ``learner.ema_decay`` an average of the weights follows them (efe_ray/ema.py),
   which is what evaluation scores (:meth:`EFELearner.ema_weights`). A skipped step moves neither.

:meth:`EFELearner.train_step` never waits for the device: its metrics come back as one tensor,
which the caller reads when it needs them (the env once per action, :meth:`EFELearner.step` at
once). Qwen's kernels are queued before the batch's tensors; uploads are pinned and non-blocking
on CUDA. The invariants (docs/design.md) are tests/test_invariants.py. No Ray here.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.nn.utils import clip_grads_with_norm_, get_total_norm
from torch.profiler import record_function

from efe_ray.config import AgentConfig, LearnerConfig, PromptConfig
from efe_ray.data.batching import Batch
from efe_ray.data.device_sampler import DeviceBatch
from efe_ray.device import upload
from efe_ray.efe import canvas_cell_accuracy, efe_loss
from efe_ray.ema import EMA
from efe_ray.models.agent import GridAgent
from efe_ray.models.inductor import compile_function, compile_module
from efe_ray.models.prompt import QwenHybridPrompt
from efe_ray.optim import SignSGD, lr_factor
from efe_ray.refine import delta_tensor, pull_term, refinement_reward
from efe_ray.text_cache import TextCache

METRICS = ("loss", "efe_loss", "cross_entropy", "risk", "entropy", "forward_kl", "rl_term", "mask_ratio",
           "acc_before", "acc_after", "reward", "qwen_grad_norm", "agent_grad_norm", "skipped")
"""The per-step metrics :meth:`EFELearner.train_step` returns, in this order (:meth:`EFELearner.step`
adds ``qwen_fresh`` and ``skipped_steps``)."""


def grad_norm(params: list[torch.nn.Parameter], device: torch.device) -> torch.Tensor:
    """L2 norm of the gradients of ``params``, a 0-d tensor on ``device`` (0 if none)."""
    grads = [p.grad for p in params if p.grad is not None]
    return get_total_norm(grads) if grads else torch.zeros((), device=device)


class EFELearner:
    """Owns the prompt encoder, the agent, their optimizers and scaler, the per-task text cache and,
    with ``learner.ema_decay``, the average of the weights."""

    def __init__(self, prompt_cfg: PromptConfig, agent_cfg: AgentConfig, cfg: LearnerConfig,
                 device: str | torch.device = "cpu", task_ids: tuple[str, ...] = ()):
        """``task_ids``: the training tasks, the rows of the prompt's task table
        (``prompt.task_embedding``; ``learner.colour_versions`` rows each); ignored without one."""
        self.cfg, self.agent_cfg = cfg, agent_cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.prompt = QwenHybridPrompt(prompt_cfg, task_ids=task_ids, versions=cfg.colour_versions).to(self.device)
        self.agent = GridAgent(agent_cfg, prompt_cfg.prompt_dim).to(self.device)
        self.efe_loss = efe_loss
        if cfg.compile:  # checkpoints stay those of the uncompiled modules
            # Automatic dynamic shapes: a shape that changes (views, canvas side, prompt length) is
            # compiled once more as symbolic. Inductor's mix-order reductions stay off
            # (efe_ray/models/inductor.py: they break the norms' gradients on CUDA).
            # learner.cuda_graphs replays the agent and the loss as CUDA graphs; the Qwen layers, whose
            # prompt lengths vary from step to step, stay without.
            self.prompt.compile_layers()
            compile_module(self.agent, cfg.cuda_graphs)  # whole: TorchDynamo does not trace nn.TransformerEncoder on its own
            self.efe_loss = compile_function(efe_loss, cfg.cuda_graphs)  # one fused kernel pair instead of ~40 small ones
        modes = {"fp32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}
        if cfg.precision not in modes:
            raise ValueError(f"learner.precision: unknown mode {cfg.precision!r}; use fp32, bf16 or fp16")
        self.autocast_dtype, self.use_scaler = modes[cfg.precision]  # fp16 alone needs a GradScaler
        if cfg.task_lr > 0 and self.prompt.task_table is None:
            raise ValueError(f"learner.task_lr={cfg.task_lr} needs prompt.task_embedding=true (no task table)")
        if cfg.colour_versions and self.prompt.task_table is None:
            raise ValueError(f"learner.colour_versions={cfg.colour_versions} needs prompt.task_embedding=true "
                             "(the versions are rows of the task table)")
        self.steps = 0
        self.reset_optimizer()
        self.ema = EMA({"agent": self.agent, "prompt": self.prompt}, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.task_ids = tuple(task_ids)
        self.text_cache = TextCache(self.prompt, cfg.cache_every, task_ids=self.task_ids)  # task id -> (P,) embedding
        self.task_steps: dict[str, int] = {}  # task id -> learner steps on that task
        self._skipped = torch.zeros((), dtype=torch.long, device=self.device)  # skipped steps, counted on the device
        self.last_fresh = False  # whether the last step encoded its prompts with gradient

    def reset_optimizer(self) -> None:
        """A fresh fused AdamW (agent and Qwen groups), GradScaler and, with ``learner.task_lr``, the
        task table's sign-SGD (:class:`~efe_ray.optim.SignSGD`, the table then outside AdamW), as at
        construction; the learning rates those of the schedule at the current step."""
        table = self.prompt.task_table if self.cfg.task_lr > 0 else None
        groups = [{"params": list(self.agent.parameters()) + [p for p in self.prompt.other_parameters()
                                                              if p is not table],
                   "lr": self.cfg.agent_lr, "name": "agent"}]
        if self.prompt.qwen_parameters():
            groups.append({"params": self.prompt.qwen_parameters(), "lr": self.cfg.qwen_lr, "name": "qwen"})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay, fused=True)
        self.task_optimizer = None if table is None else SignSGD(
            [{"params": [table], "name": "task"}], lr=self.cfg.task_lr, weight_decay=self.cfg.task_weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_scaler)
        self._schedule_lrs()

    def param_groups(self) -> list[dict]:
        """Every optimizer group: AdamW's ("agent", "qwen"), then the task table's ("task"), if any."""
        return self.optimizer.param_groups + (self.task_optimizer.param_groups if self.task_optimizer else [])

    def schedule_factor(self) -> float:
        """The schedule's multiplier of the base learning rates for the next step (efe_ray/optim.py)."""
        cfg = self.cfg
        return lr_factor(self.steps, cfg.warmup_steps, cfg.lr_schedule, cfg.schedule_steps)

    def _schedule_lrs(self) -> None:
        """Each group's ``lr``: its base rate (``agent_lr``, ``qwen_lr``, ``task_lr``) times
        :meth:`schedule_factor` (host arithmetic on the step counter; nothing is read from the device)."""
        factor = self.schedule_factor()
        base = {"agent": self.cfg.agent_lr, "qwen": self.cfg.qwen_lr, "task": self.cfg.task_lr}
        for group in self.param_groups():
            group["lr"] = base[group["name"]] * factor

    def set_learning_rates(self, agent_lr: float | None = None, qwen_lr: float | None = None,
                           task_lr: float | None = None) -> None:
        """Set the base learning rates (also after loading optimizer state, and for PBT); the
        schedule multiplies them from the current step on. ``task_lr`` may change its value, not
        whether the table has its own update (0 or not)."""
        if task_lr is not None and (task_lr > 0) != (self.task_optimizer is not None):
            raise ValueError(f"task_lr={task_lr}: the learner was built with learner.task_lr={self.cfg.task_lr}; "
                             "whether the task table has its own update is fixed at construction")
        if agent_lr is not None:
            self.cfg.agent_lr = agent_lr
        if qwen_lr is not None:
            self.cfg.qwen_lr = qwen_lr
        if task_lr is not None:
            self.cfg.task_lr = task_lr
        self._schedule_lrs()

    def autocast(self):
        """The autocast context of ``learner.precision`` (none in fp32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # -- the step -----------------------------------------------------------------------------
    def begin_graph_step(self) -> None:
        """With ``learner.cuda_graphs``: tell the CUDA graphs that a new step (of training or of
        prediction) begins, so that they may overwrite the outputs of the last one, which no caller
        reads after its step."""
        if self.cfg.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    def step(self, batch: Batch | DeviceBatch, delta: np.ndarray | None = None) -> dict[str, float]:
        """:meth:`train_step`, then one read of its metrics (after the optimizer step is queued), as
        floats with ``qwen_fresh`` and ``skipped_steps``."""
        values = self.train_step(batch, delta)
        fresh = self.last_fresh
        *values, skipped = torch.cat([values, self._skipped.reshape(1).float()]).tolist()  # the one host read
        metrics = dict(zip(METRICS, values))
        return dict(metrics, qwen_fresh=float(fresh), skipped_steps=skipped)

    def train_step(self, batch: Batch | DeviceBatch, delta: np.ndarray | None = None) -> torch.Tensor:
        """One update on ``batch`` with prompt refinement ``delta`` ((P,) numpy, or None) of the
        task's views; accuracies, reward and the RL term come from those views only. Returns the
        :data:`METRICS` as one (len(METRICS),) float32 tensor on the device: nothing here waits for
        the device, so the host can prepare the next step while this one runs."""
        cfg, b, n = self.cfg, batch.own, batch.size
        self.begin_graph_step()
        self.agent.train()
        self.prompt.train()
        host_rows, rows = self._rows(batch)  # (N,) the views' rows of the text and task tables: numpy, device
        fresh = self.text_cache.due(batch.task_id, self.task_steps.get(batch.task_id, 0))
        with record_function("learner/forward"), self.autocast():  # Qwen first: it runs during the prep
            text_emb = self._own_text(batch, int(host_rows[0]), fresh)  # (B, P) or None
        with record_function("learner/prepare"):
            t = batch.tensors(self.device)
            delta_t = delta_tensor(delta, b, self.device, pad_rows=n - b)  # (N, P) constant, or None
        with record_function("learner/forward"), self.autocast():
            if text_emb is not None and n > b:
                text_emb = torch.cat([text_emb, self._cached_text(batch, host_rows, rows, b).to(text_emb.dtype)])
            prompt = self.prompt.fuse(text_emb, t.features, self.table_rows(batch, rows))  # (N, P), with gradient
            refined = prompt if delta_t is None else prompt + delta_t
            passes = self.agent(t.canvas, refined, t.view, all_passes=True)  # passes x (N, S, S, 11)
            logits = passes[-1]
            with torch.no_grad():
                before = (logits[:b] if delta_t is None
                          else self.agent(t.canvas[:b], prompt[:b].detach(), t.view[:b]))
        with record_function("learner/loss"):
            every = [self.efe_loss(x, t.target, t.loss_mask, t.target_mask, eps=cfg.label_eps,
                                   objective=cfg.objective) for x in passes]
            terms = every[-1]  # the metrics are the last pass's; the loss is every pass's
            efe_total = terms.loss if len(every) == 1 else torch.stack([x.loss for x in every]).mean()
            with torch.no_grad():
                acc_after = canvas_cell_accuracy(logits[:b], t.target[:b], t.target_mask[:b])  # 0-d
                acc_before = canvas_cell_accuracy(before, t.target[:b], t.target_mask[:b])
                reward = refinement_reward(acc_after, acc_before, cfg.reward_scale)
            rl_term = (torch.zeros((), device=self.device) if delta_t is None
                       else pull_term(prompt[:b], refined[:b], reward, cfg.reward_scale))
            loss = cfg.efe_weight * efe_total + cfg.rl_weight * rl_term
        with record_function("learner/backward"):
            self.optimizer.zero_grad(set_to_none=True)
            if self.task_optimizer is not None:
                self.task_optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with record_function("learner/optimizer"):
            self.scaler.unscale_(self.optimizer)  # true-scale gradients from here on (invariant 6)
            if self.task_optimizer is not None:
                self.scaler.unscale_(self.task_optimizer)
            groups = self.param_groups()
            norms = {g["name"]: grad_norm(g["params"], self.device) for g in groups}  # 0-d each
            total = get_total_norm(list(norms.values()))
            skipped = ~(torch.isfinite(loss.detach()) & torch.isfinite(total))  # 0-d bool
            if cfg.grad_clip > 0:
                clip_grads_with_norm_([p for g in groups for p in g["params"]], cfg.grad_clip, total)
            self._optimizer_step(skipped)  # a non-finite step never reaches the weights, moments or average
            self._skipped += skipped
            qwen_norm = norms["qwen"] if "qwen" in norms else torch.zeros_like(norms["agent"])
            values = torch.stack([loss.detach(), efe_total.detach(), terms.cross_entropy, terms.risk, terms.entropy,
                                  terms.forward_kl, rl_term.detach(), terms.mask_ratio, acc_before, acc_after,
                                  reward, qwen_norm, norms["agent"], skipped]).float()  # (len(METRICS),)
        self.steps += 1
        self.task_steps[batch.task_id] = self.task_steps.get(batch.task_id, 0) + 1
        self.last_fresh = fresh
        return values

    def _optimizer_step(self, skipped: torch.Tensor) -> None:
        """The fused AdamW step at the schedule's learning rates, skipped on the device where
        ``skipped`` (0-d bool) is set: the optimizer's ``found_inf`` (as a GradScaler hands it over)
        leaves weights, moments and step counts as they were, with no host read; then the task
        table's sign-SGD step and the average of the weights, which ``skipped`` leaves as they were
        too. In fp16 the scaler then backs its scale off after an inf or NaN in the gradients (its
        own check, made when unscaling)."""
        self._schedule_lrs()  # host arithmetic on self.steps
        self.optimizer.grad_scale, self.optimizer.found_inf = None, skipped.float()  # gradients are unscaled
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.grad_scale, self.optimizer.found_inf
        if self.task_optimizer is not None:
            self.task_optimizer.step(skipped)
        if self.ema is not None:
            self.ema.update(skipped)
        self.scaler.update()

    def _rows(self, batch: Batch | DeviceBatch) -> tuple[np.ndarray, torch.Tensor]:
        """(N,) rows of the views' tasks in the text cache and the task table, on the host and on the
        device: a device batch's store rows go through the text cache's lookup table of that store
        (the identity for a store of the learner's own tasks in their order), which goes with the
        cache when a load replaces it; a host batch's ids are looked up."""
        if isinstance(batch, DeviceBatch):
            host, device = self.text_cache.store_rows(batch.store)
            return host[batch.rows_host], device[batch.rows]
        host = self.text_cache.rows(batch.task_ids())
        return host, upload(host, self.device)

    def table_rows(self, batch: Batch | DeviceBatch, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) long rows of the views in the prompt's task table, on the device: their tasks' rows
        (``rows``, from :meth:`_rows` when None) or, with ``learner.colour_versions`` (V), the rows of
        their (task, colour version) pairs, ``task row * V + version``."""
        rows = self._rows(batch)[1] if rows is None else rows
        if not self.prompt.versions:
            return rows
        return self.prompt.version_rows(rows, batch.versions(self.device))

    def _prompt_inputs(self, batch: Batch | DeviceBatch, index: list[int]) -> dict[str, torch.Tensor]:
        """Tokenized prompts of the views at ``index``: built on the device where the batch and the
        tokenizer allow it, else from the prompt texts."""
        ids = self.prompt.char_ids()
        if isinstance(batch, DeviceBatch) and ids is not None:
            return batch.prompt_tokens(index, ids, self.prompt.cfg.max_tokens)
        return self.prompt.tokenize(batch.prompt_texts(index), self.device)

    def _own_text(self, batch: Batch | DeviceBatch, row: int, fresh: bool) -> torch.Tensor | None:
        """(B, P) Qwen embedding of the task's own views: encoded now, with gradient, on a fresh step
        (and kept, detached, as the task's row), the cached row otherwise; None without Qwen."""
        if self.prompt.qwen is None:
            return None
        if not fresh:
            return self.text_cache.table[row].expand(batch.own, -1)
        emb = self.prompt.encode_tokens(self._prompt_inputs(batch, list(range(batch.own))))  # (B, P)
        self.text_cache.store(row, emb.detach().float().mean(0))
        return emb

    def _cached_text(self, batch: Batch | DeviceBatch, host_rows: np.ndarray, rows: torch.Tensor,
                     b: int) -> torch.Tensor:
        """(R, P) cached Qwen embeddings of the rehearsal views' tasks: one gather, after filling the
        rows never filled, in one batched pass without gradient from those views' prompts."""
        self.text_cache.fill(host_rows[b:], lambda at: self.prompt.encode_tokens(
            self._prompt_inputs(batch, [b + i for i in at])))
        return self.text_cache.table[rows[b:]]

    @property
    def skipped_counter(self) -> torch.Tensor:
        """0-d long on the device: steps skipped for a non-finite loss or gradient so far."""
        return self._skipped

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite loss or gradient (reads the device counter)."""
        return int(self._skipped)

    # -- evaluation weights --------------------------------------------------------------------
    @contextlib.contextmanager
    def ema_weights(self):
        """A block in which the modules hold the average of the weights (``learner.ema_decay``) and
        the text cache starts empty (its rows are the training weights' embeddings); the training
        weights and cache come back after it, exactly. No change without an average. The block
        must not train."""
        if self.ema is None:
            yield
            return
        cache = self.text_cache
        self.text_cache = TextCache(self.prompt, self.cfg.cache_every, task_ids=self.task_ids)
        try:
            with self.ema.swapped():
                yield
        finally:
            self.text_cache = cache

    def use_ema_weights(self) -> None:
        """Make the average the weights, for good, and empty the text cache: a learner that only
        evaluates (efe_ray/evaluation/model.py) then scores, adapts and observes with the average.
        No change without an average."""
        if self.ema is None:
            return
        self.ema.copy_to()
        self.text_cache = TextCache(self.prompt, self.cfg.cache_every, task_ids=self.task_ids)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Weights, optimizer, scaler, text cache, counters, torch RNG, base learning rates and, with
        ``learner.ema_decay``, the average of the weights (``ema``: ``{"agent"|"prompt": {name: tensor}}``)."""
        state = {
            "agent": self.agent.state_dict(), "prompt": self.prompt.state_dict(),
            "task_ids": list(self.prompt.task_ids),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "text_cache": {k: v.cpu() for k, v in self.text_cache.items()},
            "task_steps": dict(self.task_steps), "steps": self.steps, "skipped_steps": self.skipped_steps,
            "torch_rng": torch.get_rng_state(),
            "lrs": {"agent_lr": self.cfg.agent_lr, "qwen_lr": self.cfg.qwen_lr, "task_lr": self.cfg.task_lr},
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict, *, keep_lrs: bool = False) -> None:
        """Restore :meth:`state_dict` (other keys, such as a sampler's, are ignored). With
        ``keep_lrs`` the current base learning rates survive the load; the schedule goes on from
        the loaded step count. A state without an average (older, or written without
        ``learner.ema_decay``) starts this learner's average, if it keeps one, at the loaded weights."""
        lrs = {"agent_lr": self.cfg.agent_lr, "qwen_lr": self.cfg.qwen_lr, "task_lr": self.cfg.task_lr}
        self.agent.load_state_dict(state["agent"])
        self.prompt.load_state_dict(state["prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.text_cache = TextCache(self.prompt, self.cfg.cache_every,
                                    {k: v.to(self.device) for k, v in state["text_cache"].items()}, self.task_ids)
        self.task_steps = dict(state["task_steps"])
        self.steps = int(state["steps"])
        self._skipped.fill_(int(state["skipped_steps"]))
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location may have moved it to the GPU
        self._load_ema(state)
        self.set_learning_rates(**(lrs if keep_lrs else state["lrs"]))

    def _load_ema(self, state: dict) -> None:
        """The average of ``state`` where it has one, else the weights just loaded (nothing to do
        where this learner keeps no average)."""
        if self.ema is None:
            return
        if "ema" in state:
            self.ema.load_state_dict(state["ema"])
        else:
            self.ema.reset()

    def load_weights(self, state: dict) -> None:
        """Restore only the weights of a :meth:`state_dict` (``agent`` and ``prompt``, strictly; any
        float dtype is copied into the fp32 parameters), its ``steps`` and ``lrs``, as an exported
        checkpoint holds them (efe_ray/export.py: the average's weights where the source kept one):
        the optimizer and scaler start fresh, the text cache and per-task counts empty, the average
        (if this learner keeps one) at the loaded weights; torch's RNG is left alone."""
        self.agent.load_state_dict(state["agent"])
        self.prompt.load_state_dict(state["prompt"])
        self.text_cache, self.task_steps = TextCache(self.prompt, self.cfg.cache_every, task_ids=self.task_ids), {}
        self.steps = int(state["steps"])
        self._skipped.zero_()
        self.reset_optimizer()
        if self.ema is not None:
            self.ema.reset()
        self.set_learning_rates(**state["lrs"])
