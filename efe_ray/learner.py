"""EFELearner: one learning step of the prompt encoder and the grid agent on one task.

A step, in order:

1. draw ``batch_size`` leave-one-out samples from the task (one known pair is the query, the
   others are the demonstrations), each under a random augmentation;
2. prompt: the Qwen text embedding is recomputed every ``cache_every`` steps on that task (with
   gradient) and cached, detached, in between; fused with the 15 numeric features;
3. refine: ``refined = prompt + delta``; ``delta`` comes from the RL policy and is a constant here
   (the learner never back-propagates into the policy);
4. agent on the refined prompt -> logits -> EFE loss; accuracy with the unrefined prompt is
   measured without gradient, and ``reward = reward_scale * (acc_after - acc_before)``;
5. loss = efe_weight * EFE + rl_weight * RL term, where the RL term pulls the encoder's prompt
   toward the refined prompt when the refinement earned positive reward;
6. backward (scaled in fp16), unscale, clip, step; the fused optimizer skips the update on the
   device if the loss or a gradient is non-finite. The metrics come back in one host sync at the end.

Nothing here imports Ray: the learner runs and tests on its own.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.profiler import record_function

from efe_ray.config import AgentConfig, LearnerConfig, PromptConfig
from efe_ray.data.augment import Augmentation
from efe_ray.data.features import task_features
from efe_ray.data.serialize import prompt_text
from efe_ray.data.task import Pair, Task
from efe_ray.efe import efe_loss
from efe_ray.models.agent import GridAgent, from_canvas, to_canvas
from efe_ray.models.prompt import QwenHybridPrompt

MAX_DEMOS = 4
"""At most this many demonstrations go into one prompt."""


@dataclass
class Sample:
    """One (demonstrations, query) view of a task, as the models see it (after augmentation)."""

    demos: tuple[Pair, ...]
    """Demonstration pairs (augmented)."""
    query: np.ndarray
    """Query input (augmented), (H, W)."""
    target: np.ndarray | None
    """Query output (augmented) where known, (H', W')."""
    aug: Augmentation
    """The augmentation applied; ``aug.invert`` undoes it on a prediction."""


def known_pairs(task: Task) -> tuple[Pair, ...]:
    """Every pair of the task whose output is known (demonstrations and answered tests)."""
    return task.train + tuple(p for p in task.test if p.output is not None)


def task_difficulty(task: Task) -> float:
    """A cheap difficulty score: output cells, doubled where the output size differs from the input."""
    pairs = known_pairs(task)
    cells = np.mean([p.output.size for p in pairs])
    resized = np.mean([p.output.shape != p.input.shape for p in pairs])
    return float(cells * (1.0 + resized))


class Curriculum:
    """Easy-task share ``first`` during the first epoch, ``later`` after; an epoch = len(tasks) draws."""

    def __init__(self, tasks: list[Task], first: float, later: float):
        self.tasks = tasks
        self.first, self.later = first, later
        scores = np.array([task_difficulty(t) for t in tasks])
        median = float(np.median(scores))
        self.easy = [i for i, s in enumerate(scores) if s <= median]
        self.hard = [i for i, s in enumerate(scores) if s > median] or self.easy
        self.draws = 0

    @property
    def epoch(self) -> int:
        """Completed passes over the task list."""
        return self.draws // len(self.tasks)

    @property
    def easy_share(self) -> float:
        """The current probability of drawing an easy task."""
        return self.first if self.epoch == 0 else self.later

    def sample(self, rng: np.random.Generator) -> Task:
        """Draw the next task."""
        pool = self.easy if rng.random() < self.easy_share else self.hard
        self.draws += 1
        return self.tasks[int(pool[rng.integers(len(pool))])]


def resolve_autocast(precision: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for a precision mode."""
    if precision == "fp32":
        return None, False
    if precision == "bf16":
        return torch.bfloat16, False
    if precision == "fp16":
        return torch.float16, True
    raise ValueError(f"learner.precision: unknown mode {precision!r}; use fp32, bf16 or fp16")


def compile_modules(prompt: QwenHybridPrompt, agent: GridAgent) -> None:
    """``torch.compile`` each Qwen decoder layer and the whole agent in place.

    Qwen layer by layer, not the whole model: the layers share one compiled graph (parameters
    are graph inputs), and the model's Python around them (masks, pooling) stays eager. The agent
    as a whole: compiling only its ``nn.TransformerEncoder`` leaves it eager (TorchDynamo does not
    trace that module's forward), and eager, its many small kernels keep the GPU waiting on the
    CPU. Parameters, state dicts and checkpoints are those of the uncompiled modules.
    """
    if prompt.qwen is not None:
        for layer in prompt.qwen.layers:
            layer.compile()
    agent.compile()


def grad_norm(params: list[torch.nn.Parameter], device: torch.device) -> torch.Tensor:
    """L2 norm of the gradients of ``params`` as a 0-d float32 tensor on ``device`` (0 where none
    has a gradient, or there are no parameters).

    One foreach kernel for the per-tensor norms; the result stays on the device (no host sync).
    """
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float32, device=device)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def clip_gradients(params: list[torch.nn.Parameter], total_norm: torch.Tensor, max_norm: float) -> None:
    """Scale the gradients of ``params`` so that their global norm ``total_norm`` is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_`` does, but with the norm already computed: the gradients
    are read once for the norm, not twice, and the scale stays on the device (no host sync).
    """
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if grads:
        coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)  # 0-d, on the device
        torch._foreach_mul_(grads, coef.to(grads[0].dtype))


class EFELearner:
    """Owns the prompt encoder, the agent, their optimizer and the per-task prompt cache."""

    def __init__(self, tasks: list[Task], prompt_cfg: PromptConfig, agent_cfg: AgentConfig,
                 cfg: LearnerConfig, device: str | torch.device = "cpu"):
        if not tasks:
            raise ValueError("EFELearner needs at least one training task")
        for t in tasks:
            if len(known_pairs(t)) < 2:
                raise ValueError(f"task {t.task_id!r} ({t.source}) has fewer than 2 known pairs")
        self.cfg, self.agent_cfg = cfg, agent_cfg
        self.device = torch.device(device)
        self.tasks = list(tasks)
        torch.manual_seed(cfg.seed)
        self.prompt = QwenHybridPrompt(prompt_cfg).to(self.device)
        self.agent = GridAgent(agent_cfg, prompt_cfg.prompt_dim).to(self.device)
        self.efe_loss = efe_loss
        if cfg.compile:
            compile_modules(self.prompt, self.agent)
            self.efe_loss = torch.compile(efe_loss)  # one fused kernel pair instead of ~40 small ones
        self.autocast_dtype, use_scaler = resolve_autocast(cfg.precision, self.device)
        groups = [{"params": list(self.agent.parameters()) + self.prompt.other_parameters(),
                   "lr": cfg.agent_lr, "name": "agent"}]
        if self.prompt.qwen_parameters():
            groups.append({"params": self.prompt.qwen_parameters(), "lr": cfg.qwen_lr, "name": "qwen"})
        # Fused AdamW (CPU and CUDA): one kernel per step, and it can skip a step on the device.
        self.optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.rng = np.random.default_rng(cfg.seed)
        self.curriculum = Curriculum(self.tasks, cfg.easy_share_first_epoch, cfg.easy_share_later)
        self.text_cache: dict[str, torch.Tensor] = {}  # task id -> (P,) detached Qwen embedding
        self.task_steps: dict[str, int] = {}  # task id -> learner steps on that task
        self.steps = 0
        self.skipped_steps = 0

    # -- learning rates (Tune / PBT) ---------------------------------------------------------
    def set_learning_rates(self, agent_lr: float | None = None, qwen_lr: float | None = None) -> None:
        """Set the optimizer groups' learning rates (also after loading optimizer state)."""
        for group in self.optimizer.param_groups:
            if group["name"] == "agent" and agent_lr is not None:
                group["lr"] = self.cfg.agent_lr = agent_lr
            if group["name"] == "qwen" and qwen_lr is not None:
                group["lr"] = self.cfg.qwen_lr = qwen_lr

    # -- samples and tensors -----------------------------------------------------------------
    def sample_task(self) -> Task:
        """The next training task, from the curriculum."""
        return self.curriculum.sample(self.rng)

    def make_samples(self, task: Task, n: int) -> list[Sample]:
        """``n`` leave-one-out views of ``task``, each under its own random augmentation."""
        pairs = known_pairs(task)
        out = []
        for _ in range(n):
            q = int(self.rng.integers(len(pairs)))
            others = [p for i, p in enumerate(pairs) if i != q]
            order = self.rng.permutation(len(others))[:MAX_DEMOS]
            aug = Augmentation.random(self.rng) if self.cfg.augment else Augmentation.identity()
            demos = tuple(aug.apply_pair(others[i]) for i in order)
            out.append(Sample(demos, aug.apply(pairs[q].input), aug.apply(pairs[q].output), aug))
        return out

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array as a tensor on the learner's device. On CUDA the copy goes through pinned
        memory and does not block the host: it queues behind the kernels already launched."""
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        if self.device.type != "cuda":
            return tensor.to(self.device)
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def _features(self, samples: list[Sample]) -> torch.Tensor:
        feats = np.stack([task_features(s.demos, s.query) for s in samples])  # (B, 15)
        return self._upload(feats.astype(np.float32))

    def _canvas(self, grids: list[np.ndarray]) -> torch.Tensor:
        side = self.agent_cfg.canvas
        return self._upload(np.stack([to_canvas(g, side) for g in grids]))  # (B, S, S) long

    def _masks(self, samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss_mask, target_mask), each (B, S, S): target cells plus a one-cell OUTSIDE border."""
        side = self.agent_cfg.canvas
        loss_mask = np.zeros((len(samples), side, side), dtype=np.float32)
        target_mask = np.zeros_like(loss_mask)
        for i, s in enumerate(samples):
            (ht, wt), (hi, wi) = s.target.shape, s.query.shape
            loss_mask[i, : max(ht, hi) + 1, : max(wt, wi) + 1] = 1.0
            target_mask[i, :ht, :wt] = 1.0
        return self._upload(loss_mask), self._upload(target_mask)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _delta(self, delta: np.ndarray | None, batch: int) -> torch.Tensor | None:
        if delta is None:
            return None
        if isinstance(delta, torch.Tensor):  # invariant 5: the RL side hands over numpy only
            raise TypeError("delta must be a numpy array, not a torch.Tensor: the learner treats it as a "
                            "constant and never back-propagates into the RL policy (pass delta.detach().cpu().numpy())")
        d = self._upload(np.asarray(delta, dtype=np.float32))
        return d.expand(batch, -1) if d.ndim == 1 else d  # (B, P), a constant

    # -- prompts ------------------------------------------------------------------------------
    def text_embedding(self, task_id: str, samples: list[Sample], *, train: bool) -> tuple[torch.Tensor | None, bool]:
        """(B, P) Qwen embedding of the samples' prompt texts and whether it was freshly computed.

        In training, a task's embedding is recomputed (with gradient) on every ``cache_every``-th
        step on that task and cached detached; between those steps the cache is used (and no text
        is built).
        """
        if self.prompt.qwen is None:
            return None, False
        n = self.task_steps.get(task_id, 0)
        fresh = not train or task_id not in self.text_cache or n % self.cfg.cache_every == 0
        if not fresh:
            return self.text_cache[task_id].expand(len(samples), -1), False
        emb = self.prompt.encode_text([prompt_text(s.demos, s.query) for s in samples])  # (B, P)
        if train:
            self.text_cache[task_id] = emb.detach().float().mean(0)
        return emb, True

    @torch.no_grad()
    def observe(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """(prompt (P,), features (15,)) of the task's canonical view, detached, for the RL policy.

        The view is the task's demonstrations and its first test input; no output of a test pair
        is read. Uses the cached Qwen embedding where there is one.
        """
        demos, query = task.train[:MAX_DEMOS], task.test[0].input
        feats = torch.as_tensor(task_features(demos, query), device=self.device)[None]  # (1, 15)
        with self._autocast():
            text = self.text_cache.get(task.task_id)
            if self.prompt.qwen is not None and text is None:
                text = self.prompt.encode_text([prompt_text(demos, query)])[0]
            prompt = self.prompt.fuse(None if text is None else text[None], feats)  # (1, P)
        return prompt[0].float().cpu().numpy(), feats[0].cpu().numpy()

    # -- the step -----------------------------------------------------------------------------
    def rehearsal_samples(self, task: Task) -> list[tuple[Task, Sample]]:
        """``rehearsal`` single samples from other training tasks, drawn uniformly."""
        others = [t for t in self.tasks if t.task_id != task.task_id]
        if not others or self.cfg.rehearsal == 0:
            return []
        picks = self.rng.integers(len(others), size=self.cfg.rehearsal)
        return [(others[i], self.make_samples(others[i], 1)[0]) for i in picks]

    def cached_text(self, task: Task, sample: Sample) -> torch.Tensor:
        """A task's cached Qwen embedding (P,), filled without gradient if the task has none yet."""
        if task.task_id not in self.text_cache:
            with torch.no_grad():
                emb = self.prompt.encode_text([prompt_text(sample.demos, sample.query)])[0]
            self.text_cache[task.task_id] = emb.float()
        return self.text_cache[task.task_id]

    def step(self, task: Task, delta: np.ndarray | None = None) -> dict[str, float]:
        """One learner update on ``task`` with prompt refinement ``delta`` ((P,) or None).

        The batch holds ``batch_size`` samples of ``task`` (refined by ``delta``) and
        ``rehearsal`` samples of other tasks (unrefined, with their cached Qwen embeddings), so
        that an episode of consecutive steps on one task does not overwrite what was learned on
        the others. Accuracies, reward and the RL term come from the task's own samples.
        """
        cfg = self.cfg
        self.agent.train()
        self.prompt.train()
        with record_function("learner/prepare"):
            samples = self.make_samples(task, cfg.batch_size)
            rehearsal = self.rehearsal_samples(task)
            every = samples + [s for _, s in rehearsal]
            b = len(samples)
        # Qwen first: on CUDA its kernels run while the host builds the agent's inputs below.
        with record_function("learner/forward"), self._autocast():
            text_emb, fresh = self.text_embedding(task.task_id, samples, train=True)  # (B, P) or None
        with record_function("learner/prepare"):
            feats = self._features(every)  # (B+R, 15)
            canvas = self._canvas([s.query for s in every])  # (B+R, S, S)
            target = self._canvas([s.target for s in every])  # (B+R, S, S) long
            loss_mask, target_mask = self._masks(every)
            delta_t = self._delta(delta, b)  # (B, P) constant, or None
            if delta_t is not None and rehearsal:
                delta_t = torch.cat([delta_t, delta_t.new_zeros(len(rehearsal), delta_t.shape[-1])])

        with record_function("learner/forward"), self._autocast():
            if text_emb is not None and rehearsal:
                cached = torch.stack([self.cached_text(t, s) for t, s in rehearsal])  # (R, P), no gradient
                text_emb = torch.cat([text_emb, cached.to(text_emb.dtype)])
            prompt = self.prompt.fuse(text_emb, feats)  # (B+R, P), with gradient
            refined = prompt if delta_t is None else prompt + delta_t  # delta is a constant
            logits = self.agent(canvas, refined)  # (B+R, S, S, 11)
            with torch.no_grad():
                before = logits[:b] if delta_t is None else self.agent(canvas[:b], prompt[:b].detach())
        with record_function("learner/loss"):
            terms = self.efe_loss(logits, target, loss_mask, target_mask, eps=cfg.label_eps, objective=cfg.objective)
            with torch.no_grad():
                acc_after = _cell_acc(logits[:b], target[:b], target_mask[:b])  # 0-d tensors, on the device
                acc_before = _cell_acc(before, target[:b], target_mask[:b])
                reward = cfg.reward_scale * (acc_after - acc_before)
            prompt, refined = prompt[:b], refined[:b]
            if delta_t is not None:
                # Pull the encoder's prompt toward the refinement, in proportion to the reward it earned
                # (zero when it earned none). A product, not a branch: no host sync on the reward.
                pull = reward.clamp_min(0.0) / max(cfg.reward_scale, 1e-8)
                rl_term = pull * (prompt.float() - refined.detach().float()).pow(2).mean()
            else:
                rl_term = torch.zeros((), device=self.device)
            loss = cfg.efe_weight * terms.loss + cfg.rl_weight * rl_term

        with record_function("learner/backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with record_function("learner/optimizer"):
            self.scaler.unscale_(self.optimizer)  # gradients are true-scale from here on
            groups = {g["name"]: g["params"] for g in self.optimizer.param_groups}
            qwen_norm = grad_norm(groups.get("qwen", []), self.device)  # 0-d, on the device
            agent_norm = grad_norm(groups["agent"], self.device)
            total_norm = torch.linalg.vector_norm(torch.stack([qwen_norm, agent_norm]))
            finite = torch.isfinite(loss.detach()) & torch.isfinite(total_norm)
            if cfg.grad_clip > 0:
                clip_gradients(groups["agent"] + groups.get("qwen", []), total_norm, cfg.grad_clip)
            self._optimizer_step(skip=~finite)
            self.scaler.update()
        self.steps += 1
        self.task_steps[task.task_id] = self.task_steps.get(task.task_id, 0) + 1
        with record_function("learner/metrics"):
            names = ("loss", "efe_loss", "efe", "risk", "ambiguity", "forward_kl", "rl_term", "mask_ratio",
                     "acc_before", "acc_after", "reward", "qwen_grad_norm", "agent_grad_norm", "skipped")
            values = torch.stack([loss.detach(), terms.loss.detach(), terms.efe, terms.risk, terms.ambiguity,
                                  terms.forward_kl, rl_term.detach(), terms.mask_ratio, acc_before, acc_after,
                                  reward, qwen_norm, agent_norm, ~finite]).float().tolist()  # the step's one host sync
        metrics = dict(zip(names, values))
        self.skipped_steps += int(metrics["skipped"])
        metrics.update(qwen_fresh=float(fresh), skipped_steps=float(self.skipped_steps))
        return metrics

    def _optimizer_step(self, skip: torch.Tensor) -> None:
        """AdamW step, skipped on the device where ``skip`` (0-d bool) is true.

        The fused kernel reads ``found_inf`` and leaves parameters, moments and step counts
        untouched when it is non-zero, so a non-finite step costs no host sync.
        """
        self.optimizer.found_inf = skip.float()
        self.optimizer.grad_scale = None  # gradients are already unscaled
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf, self.optimizer.grad_scale

    # -- prediction and evaluation --------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, demos: tuple[Pair, ...], queries: list[np.ndarray],
                       delta: np.ndarray | None = None) -> torch.Tensor:
        """Class log-probabilities (B, S, S, 11) for query inputs given one task's demonstrations."""
        self.agent.eval()
        self.prompt.eval()
        demos = demos[:MAX_DEMOS]
        texts = [prompt_text(demos, q) for q in queries]
        feats = torch.as_tensor(np.stack([task_features(demos, q) for q in queries]), device=self.device)
        with self._autocast():
            text_emb = self.prompt.encode_text(texts) if self.prompt.qwen is not None else None
            prompt = self.prompt.fuse(text_emb, feats)
            delta_t = self._delta(delta, len(queries))
            if delta_t is not None:
                prompt = prompt + delta_t
            logits = self.agent(self._canvas(queries), prompt)
        return torch.log_softmax(logits.float(), -1)

    def predict(self, task: Task, delta: np.ndarray | None = None,
                aug: Augmentation | None = None) -> list[np.ndarray]:
        """Predicted output grid for each test input, under augmentation ``aug`` (undone after)."""
        aug = aug or Augmentation.identity()
        demos = tuple(aug.apply_pair(p) for p in task.train)
        queries = [aug.apply(p.input) for p in task.test]
        pred = self.predict_logits(demos, queries, delta).argmax(-1).cpu().numpy()  # (B, S, S)
        return [aug.invert(from_canvas(c)) for c in pred]

    def evaluate(self, tasks: list[Task], delta_fn=None) -> dict[str, float]:
        """Cell accuracy and exact-grid rate on the test outputs of ``tasks``.

        Cell accuracy: the fraction of target cells whose predicted canvas colour is right.
        Exact: the fraction of test outputs whose read-off grid equals the target (size and cells).
        ``delta_fn(task) -> delta`` supplies a refinement per task (the trained policy), if any.
        """
        correct = total = exact = outputs = 0
        for task in tasks:
            delta = delta_fn(task) if delta_fn is not None else None
            logits = self.predict_logits(task.train, [p.input for p in task.test], delta)
            pred = logits.argmax(-1).cpu().numpy()  # (B, S, S)
            for canvas, pair in zip(pred, task.test):
                if pair.output is None:
                    continue
                h, w = pair.output.shape
                correct += int((canvas[:h, :w] == pair.output).sum())
                total += pair.output.size
                grid = from_canvas(canvas)
                exact += int(grid.shape == pair.output.shape and bool((grid == pair.output).all()))
                outputs += 1
        return {"cell_acc": correct / max(total, 1), "exact": exact / max(outputs, 1), "outputs": float(outputs)}

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimizer, scaler, caches, counters, RNG."""
        return {
            "agent": self.agent.state_dict(),
            "prompt": self.prompt.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "text_cache": {k: v.cpu() for k, v in self.text_cache.items()},
            "task_steps": dict(self.task_steps),
            "steps": self.steps,
            "skipped_steps": self.skipped_steps,
            "curriculum_draws": self.curriculum.draws,
            "rng": _rng_to_state(self.rng),
            "torch_rng": torch.get_rng_state(),
            "lrs": {"agent_lr": self.cfg.agent_lr, "qwen_lr": self.cfg.qwen_lr},
        }

    def load_state_dict(self, state: dict, *, keep_lrs: bool = False) -> None:
        """Restore :meth:`state_dict`. With ``keep_lrs``, the current learning rates survive the load."""
        lrs = {"agent_lr": self.cfg.agent_lr, "qwen_lr": self.cfg.qwen_lr}
        self.agent.load_state_dict(state["agent"])
        self.prompt.load_state_dict(state["prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.text_cache = {k: v.to(self.device) for k, v in state["text_cache"].items()}
        self.task_steps = dict(state["task_steps"])
        self.steps = int(state["steps"])
        self.skipped_steps = int(state["skipped_steps"])
        self.curriculum.draws = int(state["curriculum_draws"])
        self.rng.bit_generator.state = _rng_from_state(state["rng"])
        torch.set_rng_state(state["torch_rng"].cpu())  # map_location may have moved it to the GPU
        self.set_learning_rates(**(lrs if keep_lrs else state["lrs"]))


def _cell_acc(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked cell accuracy as a 0-d tensor (stays on the device)."""
    right = (logits.argmax(-1) == target).float() * mask
    return right.sum() / mask.sum().clamp_min(1.0)


def _rng_to_state(rng: np.random.Generator) -> dict:
    """numpy PCG64 state as strings (safe for ``torch.load(weights_only=True)``)."""
    s = rng.bit_generator.state
    return {"bit_generator": s["bit_generator"], "state": str(s["state"]["state"]),
            "inc": str(s["state"]["inc"]), "has_uint32": int(s["has_uint32"]), "uinteger": int(s["uinteger"])}


def _rng_from_state(d: dict) -> dict:
    return {"bit_generator": d["bit_generator"], "state": {"state": int(d["state"]), "inc": int(d["inc"])},
            "has_uint32": d["has_uint32"], "uinteger": d["uinteger"]}
