"""The model predictor: a trained EFELearner (and optionally its RLlib prompt refiner) on ARC tasks.

Per task, :func:`predict_task`:

1. **blinds** the task: every test output is replaced by ``None`` before anything else reads
   the task, so no step below can see an answer;
2. optional **test-time adaptation** (``tta_steps > 0``, :func:`~efe_ray.evaluation.predict.adapt`):
   on a copy of the learner with a fresh optimizer -- the loaded one is never modified -- run
   ``tta_steps`` learner steps on the demonstration pairs only (leave-one-out with random
   augmentations, no rehearsal of other tasks), seeded from ``(seed, task_id)``;
3. the prompt **refinement** ``delta = policy(task, learner)`` from the RL policy, if one is given,
   computed once on the task's canonical view (as the environment does in training);
4. **prediction under K augmentations**: the identity plus ``K - 1`` random ones
   (``Augmentation.random``, seeded from ``(seed, task_id)``). For each, the demonstrations
   and test inputs are augmented, ``predict_logits`` gives per-cell log-probabilities,
   the argmax canvas is read off with ``from_canvas``, and its score is the mean (over the
   read-off cells) of the max log-probability;
5. **vote** (:mod:`efe_ray.evaluation.voting`) after inverting each augmentation:
   ``attempt_1`` / ``attempt_2`` per test input.

Test inputs that do not fit the agent's canvas are answered by copying the input (noted in the
result); adaptation is skipped when a demonstration does not fit or there are fewer than 2.

:class:`ModelPredictor` is the picklable callable shipped to Ray workers. Its :meth:`~ModelPredictor.prepare`
loads and verifies the checkpoint once, in the driver, before any task runs; from then on it
carries the verified bytes of ``efe_learner.pt`` (a numpy array: Ray's object store hands it to
workers without a copy), the config and the policy built in the driver, so no worker reads (or
unpickles) anything from the checkpoint folder, and each process builds its learner once.
The same seed gives the same predictions whatever the task order or worker.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from efe_ray.checkpoint import is_weights_only, learner_bytes
from efe_ray.checkpoint import load as load_checkpoint
from efe_ray.config import ExperimentConfig
from efe_ray.data.augment import Augmentation
from efe_ray.data.task import Pair, Task
from efe_ray.device import resolve_device
from efe_ray.evaluation.baselines import Attempts
from efe_ray.evaluation.predict import adapt, predict_logits, private_torch_rng, task_seed
from efe_ray.evaluation.voting import vote_augmented
from efe_ray.learner import EFELearner
from efe_ray.models.agent import from_canvas

__all__ = ["LoadedModel", "ModelPredictor", "ModelSettings", "PolicyFn", "PolicyUnavailableError",
           "Prediction", "augmentations_for", "blind", "build_learner", "cached_model", "load_model",
           "predict_task"]

PolicyFn = Callable[[Task, EFELearner], "np.ndarray | None"]
"""``policy(task, learner) -> (P,) prompt delta or None`` (see ``efe_ray.rl.policy.load_policy``)."""


class PolicyUnavailableError(RuntimeError):
    """The RL policy was asked for but its loader cannot be imported."""


@dataclass(frozen=True)
class ModelSettings:
    """How the model predicts."""

    tta_steps: int = 0
    """Test-time adaptation steps per task on the demonstrations (0: none)."""
    augmentations: int = 8
    """Views voted over: the identity plus ``augmentations - 1`` random ones."""
    seed: int = 0
    """Seed of the augmentations and of adaptation (combined with the task id)."""
    use_policy: bool = True
    """Refine the prompt with the checkpoint's RLlib policy when it has one."""
    device: str = "auto"
    """"auto", "cpu" or "cuda[:N]" (efe_ray/device.py: "auto" in a Ray worker is the GPU Ray assigned,
    else the CPU; in-process CUDA if present, else the CPU)."""

    def __post_init__(self) -> None:
        if self.tta_steps < 0:
            raise ValueError(f"tta_steps must be >= 0, got {self.tta_steps}")
        if self.augmentations < 1:
            raise ValueError(f"augmentations must be >= 1, got {self.augmentations}")


@dataclass
class Prediction:
    """A predictor's answer for one task."""

    attempts: list[Attempts]
    """(attempt_1, attempt_2) per test input, in the original frame."""
    note: str = ""
    """Anything worth reporting (fallbacks, skipped adaptation, no policy)."""
    info: dict = field(default_factory=dict)
    """Extra per-task numbers (e.g. adaptation losses)."""


@dataclass
class LoadedModel:
    """A checkpoint, loaded."""

    learner: EFELearner
    cfg: ExperimentConfig
    meta: dict
    policy: PolicyFn | None
    policy_note: str
    """Why there is no policy (empty when there is one or none was asked for)."""


# ------------------------------------------------------------------------------ loading


def build_learner(state: dict, cfg: ExperimentConfig, device: str | torch.device = "cpu") -> EFELearner:
    """An EFELearner with ``cfg``'s architecture and ``state`` loaded; the global torch RNG is
    left as it was (the constructor seeds it, the state carries the run's)."""
    device = torch.device(device)
    with private_torch_rng(device):
        learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner, device)
        if is_weights_only(state):  # an exported folder: weights only, the optimizer stays fresh
            learner.load_weights(state)
        else:
            learner.load_state_dict(state)
    return learner


def _load_policy(folder: Path) -> tuple[PolicyFn | None, str]:
    """(policy or None, note). Raises PolicyUnavailableError if the loader cannot be imported."""
    try:
        from efe_ray.rl.policy import load_policy  # lazy: pulls in RLlib
    except ImportError as err:
        raise PolicyUnavailableError(
            f"the RL policy was requested but efe_ray.rl.policy cannot be imported ({err}); "
            "pass --no-policy to evaluate the learner with its unrefined prompt"
        ) from err
    policy = load_policy(str(folder))
    if policy is None:
        return None, f"{folder} holds no RLlib policy: the unrefined prompt is used"
    return policy, ""


def load_model(folder: str | Path, *, device: str = "auto", use_policy: bool = True) -> LoadedModel:
    """Load a checkpoint folder (learner state, config, metadata and, if asked, the policy)."""
    folder = Path(folder).resolve()
    dev = _device(device)
    state, cfg, meta = load_checkpoint(folder, map_location=dev)
    learner = build_learner(state, cfg, dev)
    policy, note = _load_policy(folder) if use_policy else (None, "")
    return LoadedModel(learner, cfg, meta, policy, note)


def _device(device: str) -> torch.device:
    """The model's device: ``device`` resolved with the GPUs Ray assigned to this worker, if any."""
    from efe_ray.evaluation.runner import worker_gpu_ids

    return resolve_device(device, worker_gpu_ids(), field="device")


_CACHE: dict[tuple[str, str, bool], LoadedModel] = {}


def cached_model(folder: str | Path, *, device: str = "auto", use_policy: bool = True) -> LoadedModel:
    """:func:`load_model`, once per process per (folder, device, use_policy)."""
    key = (str(Path(folder).resolve()), device, use_policy)
    if key not in _CACHE:
        _CACHE[key] = load_model(folder, device=device, use_policy=use_policy)
    return _CACHE[key]


# ------------------------------------------------------------------------------ per task


def blind(task: Task) -> Task:
    """The task with every test output replaced by ``None``."""
    return Task(task.task_id, task.train, tuple(Pair(p.input, None) for p in task.test), task.source)


def augmentations_for(task_id: str, k: int, seed: int) -> list[Augmentation]:
    """The identity plus ``k - 1`` random augmentations, drawn from ``(seed, task_id)``."""
    rng = np.random.default_rng(task_seed(seed, task_id).spawn(1)[0])
    return [Augmentation.identity()] + [Augmentation.random(rng) for _ in range(k - 1)]


def _fits(grid: np.ndarray, side: int) -> bool:
    return grid.shape[0] <= side and grid.shape[1] <= side


def predict_task(learner: EFELearner, task: Task, *, tta_steps: int = 0, augmentations: int = 8,
                 seed: int = 0, policy: PolicyFn | None = None) -> Prediction:
    """Two attempts per test input of ``task`` (see the module docstring). Never reads test outputs."""
    task = blind(task)
    notes: list[str] = []
    info: dict = {}
    side = learner.agent_cfg.canvas
    demo_grids = [g for p in task.train for g in (p.input, p.output)]
    if tta_steps > 0:
        if len(task.train) < 2:
            notes.append("adaptation skipped: fewer than 2 demonstrations")
        elif not all(_fits(g, side) for g in demo_grids):
            notes.append(f"adaptation skipped: a demonstration grid exceeds the {side}x{side} canvas")
        else:
            learner, losses = adapt(learner, task, tta_steps, seed)
            info["tta_losses"] = losses
    delta = policy(task, learner) if policy is not None else None
    info["policy_delta_norm"] = None if delta is None else float(np.linalg.norm(delta))

    fit = [i for i, p in enumerate(task.test) if _fits(p.input, side)]
    if len(fit) < len(task.test):
        notes.append(f"{len(task.test) - len(fit)} test input(s) exceed the {side}x{side} canvas: input copied")
    candidates: dict[int, list[tuple[Augmentation, np.ndarray, float]]] = {i: [] for i in fit}
    if fit:
        for aug in augmentations_for(task.task_id, augmentations, seed):
            demos = tuple(aug.apply_pair(p) for p in task.train)
            queries = [aug.apply(task.test[i].input) for i in fit]
            logp = predict_logits(learner, demos, queries, delta).float().cpu()  # (B, S, S, 11)
            best, pred = logp.max(-1)  # (B, S, S) each
            for b, i in enumerate(fit):
                grid = from_canvas(pred[b].numpy())  # (h, w) in the augmented frame
                h, w = grid.shape
                score = float(best[b, :h, :w].mean())
                candidates[i].append((aug, grid, score))
    attempts: list[Attempts] = []
    for i, p in enumerate(task.test):
        if i in candidates:
            attempts.append(vote_augmented(candidates[i]))
        else:
            attempts.append((p.input.copy(), p.input.copy()))
    return Prediction(attempts, "; ".join(notes), info)


# ------------------------------------------------------------------------------ the predictor


class ModelPredictor:
    """``task -> Prediction`` for a checkpoint folder (see the module docstring).

    Unprepared, it pickles to the path and the settings, and each process loads the folder once
    (:func:`cached_model`). After :meth:`prepare` it pickles to the verified learner bytes, the
    config, the metadata and the policy; :meth:`load` in another process builds from those.
    """

    def __init__(self, checkpoint: str | Path, settings: ModelSettings | None = None) -> None:
        self.checkpoint = str(Path(checkpoint).resolve())
        self.settings = settings or ModelSettings()
        self._shipped: dict | None = None
        self._loaded: LoadedModel | None = None

    def prepare(self, device: str | None = None) -> LoadedModel:
        """Load and verify the checkpoint in this process now (on ``device``, default the settings').

        Raises whatever loading raises (CheckpointError for missing, truncated or corrupt files).
        """
        s = self.settings
        loaded = load_model(self.checkpoint, device=device or s.device, use_policy=s.use_policy)
        blob, sha256 = learner_bytes(self.checkpoint, loaded.meta)
        self._shipped = {"learner": np.frombuffer(blob, dtype=np.uint8), "sha256": sha256,
                         "cfg": loaded.cfg, "meta": loaded.meta, "policy": loaded.policy,
                         "policy_note": loaded.policy_note}
        self._loaded = loaded
        return loaded

    def load(self) -> LoadedModel:
        """The loaded checkpoint (once per process)."""
        s = self.settings
        if self._loaded is not None:
            return self._loaded
        if self._shipped is None:
            return cached_model(self.checkpoint, device=s.device, use_policy=s.use_policy)
        key = ("sha256:" + self._shipped["sha256"], s.device, s.use_policy)
        if key not in _CACHE:
            ship = self._shipped
            dev = _device(s.device)
            state = torch.load(io.BytesIO(ship["learner"].tobytes()), map_location=dev, weights_only=True)
            _CACHE[key] = LoadedModel(build_learner(state, ship["cfg"], dev), ship["cfg"], ship["meta"],
                                      ship["policy"], ship["policy_note"])
        return _CACHE[key]

    def __getstate__(self) -> dict:
        return {"checkpoint": self.checkpoint, "settings": self.settings, "_shipped": self._shipped, "_loaded": None}

    def __call__(self, task: Task) -> Prediction:
        model = self.load()
        s = self.settings
        pred = predict_task(model.learner, task, tta_steps=s.tta_steps, augmentations=s.augmentations,
                            seed=s.seed, policy=model.policy)
        if model.policy_note:
            pred.note = "; ".join(n for n in (pred.note, model.policy_note) if n)
        return pred

    def __repr__(self) -> str:
        return f"ModelPredictor({self.checkpoint!r}, {self.settings})"
