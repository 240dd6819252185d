"""Our part of a checkpoint: the learner's state and what the trial trained on.

Files, written atomically (temporary file, fsync, rename) into a checkpoint folder:

- ``efe_learner.pt``: :meth:`EFELearner.state_dict` (weights, optimizer, scaler, caches, counters,
  torch RNG and, with ``learner.ema_decay``, the average of the weights under ``ema``) with
  :meth:`TaskSampler.state_dict` (numpy RNG, curriculum); loads with
  ``torch.load(weights_only=True)``;
- ``efe_policy.pt`` (trial checkpoints): the RL policy's weights and what rebuilds its module
  (spaces as tensors, the model config as plain values); loads with ``torch.load(weights_only=True)``;
- ``efe_meta.json``: the experiment config, the trained tasks (id and pair-set signature) and a
  SHA-256 of each ``.pt`` file, so truncation or corruption is detected on load.

RLlib's own files sit beside these in the same folder. They are pickles, so nothing that evaluates
a checkpoint reads them: evaluation rebuilds the policy from ``efe_policy.pt``
(efe_ray/rl/policy.py). Nothing here imports Ray.

An **exported** folder (``python -m efe_ray.export``) holds only what evaluation needs, in files
small enough to carry: the weights of the agent and the prompt encoder that evaluation uses
(:func:`evaluation_weights`: the average where the learner kept one; no optimizer, caches or RNG)
in bf16 or fp32, split into shards ``weights-<i>-of-<n>.pt`` (flat ``{"agent.<name>" |
"prompt.<name>": tensor}`` dicts), ``efe_policy.pt`` if the source had one, and ``efe_meta.json``
with ``format`` :data:`EXPORT_FORMAT`, each shard's SHA-256 and tensor names, the dtype, the
source and its learner's SHA-256. :func:`load` reads both kinds; for an exported folder the state
is weights only (:func:`is_weights_only`), cast back to fp32.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle  # only for the error type that torch's weights-only loader raises
from pathlib import Path
from typing import Any

import torch

from efe_ray.config import ExperimentConfig, from_dict, to_dict
from efe_ray.data.files import atomic_write
from efe_ray.data.task import Task, pair_hash

LEARNER_FILE = "efe_learner.pt"
POLICY_FILE = "efe_policy.pt"
META_FILE = "efe_meta.json"
FORMAT = 1
EXPORT_FORMAT = "weights-1"
"""The ``format`` of an exported folder's metadata."""
WEIGHT_MODULES = ("agent", "prompt")
"""The learner's modules whose weights an exported folder carries (a shard key is ``<module>.<name>``)."""
EMA_KEY = "ema"
"""The learner state's key for the average of the weights (efe_ray/ema.py), absent without one."""
WEIGHTS_ONLY = "weights_only"
"""Marks the state :func:`load` returns for an exported folder (:meth:`EFELearner.load_weights` loads it)."""


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing our files, or they are truncated or corrupt."""


def _write_tensors(path: Path, state: dict) -> str:
    """``torch.save`` ``state`` to ``path`` atomically; returns the file's SHA-256."""
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    atomic_write(path, blob)
    return hashlib.sha256(blob).hexdigest()


def trained_record(task: Task) -> dict:
    """What a checkpoint records of a task it trained on: id, pair-set signature, source, exposure
    (``"demonstrations"`` for a task read blinded, else ``"all"``) and the hash of every pair it
    trained on (efe_ray/evaluation/leakage.py reads these)."""
    seen = task.train + tuple(p for p in task.test if p.output is not None)
    return {"id": task.task_id, "signature": task.pair_set_signature(), "source": task.source,
            "exposure": "demonstrations" if task.blinded else "all", "pairs": [pair_hash(p) for p in seen]}


def save(folder: str | os.PathLike, learner_state: dict, cfg: ExperimentConfig, trained: list[Task],
         env_stats: dict[str, float] | None = None, policy: dict | None = None,
         progress: dict[str, float] | None = None) -> None:
    """Write the learner state, the policy (if given) and metadata (with the env's control
    statistics, and ``progress``: the trial's ``training_iteration`` and ``time_total_s`` when
    saved) into ``folder``. The metadata goes last: it names the hashes of the files it vouches for,
    so a crash in between leaves a mismatch that :func:`load` reports."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "learner_sha256": _write_tensors(folder / LEARNER_FILE, learner_state),
        "config": to_dict(cfg),
        "env_stats": dict(env_stats or {}),
        "trained_tasks": [trained_record(t) for t in trained],
    }
    if policy is not None:
        meta["policy_sha256"] = _write_tensors(folder / POLICY_FILE, policy)
    if progress is not None:
        meta["progress"] = dict(progress)
    atomic_write(folder / META_FILE, json.dumps(meta, indent=1).encode())


def read_meta(folder: str | os.PathLike) -> dict:
    """The metadata of a checkpoint folder (raises CheckpointError if absent or unreadable)."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise CheckpointError(f"{folder}: not an efe_ray checkpoint (no {META_FILE})") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: corrupt metadata ({err})") from err
    if meta.get("format") not in (FORMAT, EXPORT_FORMAT):
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r} (expected {FORMAT} "
                              f"or {EXPORT_FORMAT!r})")
    return meta


def is_exported(meta: dict) -> bool:
    """Whether ``meta`` (from :func:`read_meta`) describes an exported folder."""
    return meta.get("format") == EXPORT_FORMAT


def is_weights_only(state: dict) -> bool:
    """Whether a state from :func:`load` holds weights only (an exported folder's)."""
    return state.get(WEIGHTS_ONLY) is True


def evaluation_weights(state: dict) -> dict[str, dict[str, Any]]:
    """``{"agent": {...}, "prompt": {...}}``: the weights of a learner state that evaluation uses,
    in the modules' state-dict order: the average of the weights (``ema``, efe_ray/ema.py) where the
    state has one, over the training weights of the same names (buffers stay the training state's);
    the training weights otherwise. Raises CheckpointError when the average names a weight the
    state does not have."""
    ema = state.get(EMA_KEY) or {}
    out = {}
    for module in WEIGHT_MODULES:
        average = ema.get(module, {})
        unknown = sorted(set(average) - set(state[module]))
        if unknown:
            raise CheckpointError(f"the average of the weights names {module} weights the state does not have: "
                                  f"{unknown[:5]}")
        out[module] = {name: average.get(name, t) for name, t in state[module].items()}
    return out


def _read_verified(path: Path, sha256: str) -> bytes:
    """The bytes of ``path``, checked against ``sha256`` (CheckpointError if missing or different)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError as err:
        raise CheckpointError(f"{path.parent}: {path.name} is missing") from err
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise CheckpointError(f"{path}: contents do not match the recorded SHA-256 (truncated or corrupt)")
    return blob


def verify(folder: str | os.PathLike) -> dict:
    """The metadata of a trial checkpoint folder whose learner file matches its recorded hash, as
    :func:`load` would check it, without unpickling the state (CheckpointError otherwise)."""
    meta = read_meta(folder)
    if is_exported(meta):
        raise CheckpointError(f"{folder}: an exported folder (weights only), not a trial checkpoint")
    _read_verified(Path(folder) / LEARNER_FILE, meta["learner_sha256"])
    return meta


def _read_tensors(path: Path, sha256: str, map_location: str | torch.device) -> dict:
    """``torch.load(weights_only=True)`` of ``path`` after checking its bytes against ``sha256``."""
    blob = _read_verified(path, sha256)
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as err:  # weights-only refuses other objects
        raise CheckpointError(f"{path}: not a weights-only tensor file ({err})") from err


def load(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, ExperimentConfig, dict]:
    """(learner state, config, metadata) of a checkpoint folder, verified against its hash; for an
    exported folder the state is weights only (:func:`load_exported`)."""
    meta = read_meta(folder)
    if is_exported(meta):
        state = load_exported(folder, meta, map_location)
    else:
        state = _read_tensors(Path(folder) / LEARNER_FILE, meta["learner_sha256"], map_location)
    cfg = from_dict(ExperimentConfig, meta["config"])
    return state, cfg, meta


def _field(meta: dict, key: str, kind: type, where: Path) -> Any:
    """``meta[key]``, which must be a ``kind`` (CheckpointError naming the file and field otherwise)."""
    value = meta.get(key)
    if not isinstance(value, kind):
        raise CheckpointError(f"{where}: field {key!r} is {value!r}, expected a {kind.__name__}")
    return value


def load_exported(folder: str | os.PathLike, meta: dict, map_location: str | torch.device = "cpu") -> dict:
    """``{"agent": {...}, "prompt": {...}, "steps": int, "lrs": {...}, "weights_only": True}`` (and
    ``task_ids`` where the source's learner state had them) of an exported folder: every shard
    checked against its SHA-256 and loaded weights-only, its tensors exactly those its metadata
    lists, each weight present once, floating-point ones cast back to fp32 (parameters are always
    fp32: docs/design.md, invariant 3)."""
    folder = Path(folder)
    where = folder / META_FILE
    weights: dict[str, dict[str, torch.Tensor]] = {m: {} for m in WEIGHT_MODULES}
    for shard in _field(meta, "shards", list, where):
        name = shard.get("file") if isinstance(shard, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise CheckpointError(f"{where}: field 'shards' names {name!r}, not a file of this folder")
        tensors = _read_tensors(folder / name, _field(shard, "sha256", str, where), map_location)
        if not isinstance(tensors, dict) or list(tensors) != _field(shard, "tensors", list, where):
            raise CheckpointError(f"{folder / name}: holds other entries than {META_FILE} lists for it")
        for key, tensor in tensors.items():
            module, _, sub = key.partition(".")
            if module not in weights or not isinstance(tensor, torch.Tensor) or sub in weights[module]:
                raise CheckpointError(f"{folder / name}: entry {key!r} is not a weight or repeats one")
            weights[module][sub] = tensor.float() if tensor.is_floating_point() else tensor
    extra = {"task_ids": list(_field(meta, "task_ids", list, where))} if "task_ids" in meta else {}
    return {**weights, **extra, "steps": _field(meta, "steps", int, where),
            "lrs": dict(_field(meta, "lrs", dict, where)), WEIGHTS_ONLY: True}


def learner_bytes(folder: str | os.PathLike, meta: dict) -> tuple[bytes, str]:
    """(bytes, their SHA-256) that ``torch.load(weights_only=True)`` turns into the learner state
    :func:`load` gives for ``folder`` (read again and verified, so a file changed since ``meta`` was
    read is refused): the learner file of a trial checkpoint, the fp32 weights of an exported one."""
    folder = Path(folder)
    if is_exported(meta):
        buf = io.BytesIO()
        torch.save(load_exported(folder, meta), buf)
        blob = buf.getvalue()
        return blob, hashlib.sha256(blob).hexdigest()
    blob = (folder / LEARNER_FILE).read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta["learner_sha256"]:
        raise CheckpointError(f"{folder}/{LEARNER_FILE} changed while it was being loaded")
    return blob, meta["learner_sha256"]


def load_policy(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict | None:
    """The policy state written by :func:`save` (verified, weights-only), or None if the checkpoint
    holds no policy (a checkpoint written outside a trial, or before policies were saved here)."""
    meta = read_meta(folder)
    if "policy_sha256" not in meta:
        return None
    return _read_tensors(Path(folder) / POLICY_FILE, meta["policy_sha256"], map_location)
