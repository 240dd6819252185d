"""The model predictor: a trained checkpoint (and its RLlib prompt refiner) answering ARC tasks.

Tasks are answered in **groups** (:meth:`ModelPredictor.groups`: tasks of one square side
together, ``group_size`` at most) by :func:`efe_ray.evaluation.solve.solve_group`: every task blinded first,
a prompt delta searched on its demonstrations, the agent adapted to each task's own
demonstrations (copies trained together), and candidates scored under every D8 view. A group is
one unit of work for efe_ray/evaluation/runner.py: one Ray task, on one GPU share.

:class:`ModelPredictor` is the picklable object shipped to Ray workers. Its :meth:`~ModelPredictor.prepare`
loads and verifies the checkpoint once, in the driver, before any task runs; from then on it
carries the verified bytes of ``efe_learner.pt`` (a numpy array: Ray's object store hands it to
workers without a copy), the config and the policy built in the driver, so no worker reads (or
unpickles) anything from the checkpoint folder, and each process builds its learner once.
The same seed gives the same predictions whatever the group order or worker, and a task's
answers do not depend on which other tasks are evaluated with it: its group shares its square (the
agent's logits depend on the square's side) and each adapted copy draws from its own random stream
(efe_ray/evaluation/streams.py). A subset (``--limit``) answers its tasks as the whole split does,
up to the rounding of batched float sums.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from efe_ray.checkpoint import is_weights_only, learner_bytes
from efe_ray.checkpoint import load as load_checkpoint
from efe_ray.config import LEARNER_PRECISIONS, ExperimentConfig
from efe_ray.data.task import Task
from efe_ray.device import resolve_device
from efe_ray.evaluation.baselines import Attempts
from efe_ray.evaluation.predict import private_torch_rng
from efe_ray.evaluation.solve import SolveSettings, solve_group
from efe_ray.evaluation.views import task_side
from efe_ray.learner import EFELearner

__all__ = ["LoadedModel", "ModelPredictor", "ModelSettings", "PolicyFn", "PolicyUnavailableError",
           "PRECISIONS", "Prediction", "build_learner", "cached_model", "load_model", "with_precision"]

PolicyFn = Callable[..., "np.ndarray | None"]
"""``policy(task, learner, feedback=..., seed=...) -> (P,) prompt delta`` (``efe_ray.rl.policy.load_policy``)."""


class PolicyUnavailableError(RuntimeError):
    """The RL policy was asked for but its loader cannot be imported."""


@dataclass(frozen=True)
class ModelSettings:
    """How the model predicts: the solver's settings, and where."""

    solve: SolveSettings = field(default_factory=SolveSettings)
    """Search, adaptation, augmentations, ablations, seed (efe_ray/evaluation/solve.py)."""
    group_size: int = 16
    """Tasks answered (and adapted) together."""
    use_policy: bool = True
    """Refine the prompt with the checkpoint's RLlib policy when it has one."""
    device: str = "auto"
    """"auto", "cpu" or "cuda[:N]" (efe_ray/device.py: "auto" in a Ray worker is the GPU Ray assigned,
    else the CPU; in-process CUDA if present, else the CPU)."""
    precision: str = "checkpoint"
    """The learner's precision while predicting and adapting: "checkpoint" (its ``learner.precision``)
    or one of fp32, bf16, fp16. Precision moves which tasks are solved; this compares them."""

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {self.group_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


PRECISIONS = ("checkpoint", *LEARNER_PRECISIONS)
"""What :attr:`ModelSettings.precision` takes."""


def with_precision(cfg: ExperimentConfig, precision: str) -> ExperimentConfig:
    """``cfg`` with ``learner.precision`` set to ``precision`` ("checkpoint": ``cfg`` as it is)."""
    if precision == "checkpoint":
        return cfg
    return replace(cfg, learner=replace(cfg.learner, precision=precision))


@dataclass
class Prediction:
    """A predictor's answer for one task."""

    attempts: list[Attempts]
    """(attempt_1, attempt_2) per test input of the primary method, in the original frame."""
    note: str = ""
    """Anything worth reporting (fallbacks, no policy)."""
    info: dict = field(default_factory=dict)
    """Extra per-task numbers (the search's choice, adaptation losses)."""
    methods: dict[str, list[Attempts]] = field(default_factory=dict)
    """Attempts of the ablated methods, by name (efe_ray/evaluation/solve.py)."""
    unanswered: tuple[int, ...] = ()
    """Test inputs the model could not answer (their attempts are stand-ins)."""


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
    """An EFELearner with ``cfg``'s architecture and ``state`` loaded, holding the weights evaluation
    uses: the average of the weights where the trial kept one (``learner.ema_decay``; an exported
    folder's weights already are it), so that predictions, test-time adaptation (copies of the
    agent) and the policy's observations all start from it; the global torch RNG is left as it was
    (the constructor seeds it, the state carries the run's). The modules run eager whatever the
    trial's ``learner.compile`` and ``learner.cuda_graphs``: those are training settings, and
    test-time adaptation trains fresh copies of the agent at shapes of its own."""
    device = torch.device(device)
    with private_torch_rng(device):
        learner = EFELearner(cfg.prompt, cfg.agent, replace(cfg.learner, compile=False, cuda_graphs=False), device,
                             task_ids=tuple(state.get("task_ids", ())))
        if is_weights_only(state):  # an exported folder: weights only, the optimizer stays fresh
            learner.load_weights(state)
        else:
            learner.load_state_dict(state)
        learner.use_ema_weights()
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


def load_model(folder: str | Path, *, device: str = "auto", use_policy: bool = True,
               precision: str = "checkpoint") -> LoadedModel:
    """Load a checkpoint folder (learner state, config, metadata and, if asked, the policy); the
    learner runs in ``precision`` (:attr:`ModelSettings.precision`), which its config then names."""
    folder = Path(folder).resolve()
    dev = _device(device)
    state, cfg, meta = load_checkpoint(folder, map_location=dev)
    cfg = with_precision(cfg, precision)
    learner = build_learner(state, cfg, dev)
    policy, note = _load_policy(folder) if use_policy else (None, "")
    return LoadedModel(learner, cfg, meta, policy, note)


def _device(device: str) -> torch.device:
    """The model's device: ``device`` resolved with the GPUs Ray assigned to this worker, if any."""
    from efe_ray.evaluation.runner import worker_gpu_ids

    return resolve_device(device, worker_gpu_ids(), field="device")


_CACHE: dict[tuple[str, str, bool, str], LoadedModel] = {}


def cached_model(folder: str | Path, *, device: str = "auto", use_policy: bool = True,
                 precision: str = "checkpoint") -> LoadedModel:
    """:func:`load_model`, once per process per (folder, device, use_policy, precision)."""
    key = (str(Path(folder).resolve()), device, use_policy, precision)
    if key not in _CACHE:
        _CACHE[key] = load_model(folder, device=device, use_policy=use_policy, precision=precision)
    return _CACHE[key]


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
        loaded = load_model(self.checkpoint, device=device or s.device, use_policy=s.use_policy,
                            precision=s.precision)
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
            return cached_model(self.checkpoint, device=s.device, use_policy=s.use_policy, precision=s.precision)
        key = ("sha256:" + self._shipped["sha256"], s.device, s.use_policy, s.precision)
        if key not in _CACHE:
            ship = self._shipped
            dev = _device(s.device)
            state = torch.load(io.BytesIO(ship["learner"].tobytes()), map_location=dev, weights_only=True)
            _CACHE[key] = LoadedModel(build_learner(state, ship["cfg"], dev), ship["cfg"], ship["meta"],
                                      ship["policy"], ship["policy_note"])
        return _CACHE[key]

    def __getstate__(self) -> dict:
        return {"checkpoint": self.checkpoint, "settings": self.settings, "_shipped": self._shipped, "_loaded": None}

    def groups(self, tasks: list[Task]) -> list[list[int]]:
        """Indices of ``tasks`` in groups of at most ``group_size`` tasks of one square side (by
        side, then id). Adapted copies share their group's square, and a cell's logits depend on
        the square's side (efe_ray/models/agent.py): a task padded to a neighbour's larger square
        would be answered differently than alone."""
        side = [task_side(t) for t in tasks]
        order = sorted(range(len(tasks)), key=lambda i: (side[i], tasks[i].task_id))
        n = self.settings.group_size
        groups: list[list[int]] = []
        for _, run in itertools.groupby(order, key=side.__getitem__):  # the tasks of one side, in order
            same = list(run)
            groups += [same[j: j + n] for j in range(0, len(same), n)]
        return groups

    def predict_group(self, tasks: list[Task]) -> list[Prediction]:
        """Predictions for ``tasks`` (one group), in their order; solved in the order of their ids, so
        the answers do not depend on the order the tasks come in."""
        model = self.load()
        order = sorted(range(len(tasks)), key=lambda i: tasks[i].task_id)
        solved = solve_group(model.learner, model.policy, [tasks[i] for i in order], self.settings.solve)
        by_id = {sol.task_id: sol for sol in solved}
        out = []
        for sol in (by_id[t.task_id] for t in tasks):
            methods = dict(sol.methods)
            attempts = methods.pop("model")
            note = "; ".join(n for n in (sol.note, model.policy_note) if n)
            out.append(Prediction(attempts, note, sol.info, methods, sol.unanswered))
        return out

    def __call__(self, task: Task) -> Prediction:
        return self.predict_group([task])[0]

    def __repr__(self) -> str:
        return f"ModelPredictor({self.checkpoint!r}, {self.settings})"
