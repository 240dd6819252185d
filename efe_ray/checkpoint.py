"""Our part of a checkpoint: the learner's state and what the trial trained on.

Files, written atomically (temporary file, fsync, rename) into a checkpoint folder:

- ``efe_learner.pt``: :meth:`EFELearner.state_dict` (weights, optimizer, scaler, caches, counters,
  torch RNG) with :meth:`TaskSampler.state_dict` (numpy RNG, curriculum); loads with
  ``torch.load(weights_only=True)``;
- ``efe_meta.json``: the experiment config, the trained tasks (id and pair-set signature) and a
  SHA-256 of ``efe_learner.pt``, so truncation or corruption is detected on load.

RLlib's own files (the policy) sit beside these in the same folder; nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import torch

from efe_ray.config import ExperimentConfig, from_dict, to_dict
from efe_ray.data.task import Task

LEARNER_FILE = "efe_learner.pt"
META_FILE = "efe_meta.json"
FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing our files, or they are truncated or corrupt."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save(folder: str | os.PathLike, learner_state: dict, cfg: ExperimentConfig, trained: list[Task],
         env_stats: dict[str, float] | None = None) -> None:
    """Write the learner state and metadata (with the env's control statistics) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(learner_state, buf)
    blob = buf.getvalue()
    atomic_write(folder / LEARNER_FILE, blob)
    meta = {
        "format": FORMAT,
        "learner_sha256": hashlib.sha256(blob).hexdigest(),
        "config": to_dict(cfg),
        "env_stats": dict(env_stats or {}),
        "trained_tasks": [{"id": t.task_id, "signature": t.pair_set_signature(), "source": t.source} for t in trained],
    }
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
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load(folder: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[dict, ExperimentConfig, dict]:
    """(learner state, config, metadata) of a checkpoint folder, verified against its hash."""
    meta = read_meta(folder)
    path = Path(folder) / LEARNER_FILE
    try:
        blob = path.read_bytes()
    except FileNotFoundError as err:
        raise CheckpointError(f"{folder}: {LEARNER_FILE} is missing") from err
    if hashlib.sha256(blob).hexdigest() != meta["learner_sha256"]:
        raise CheckpointError(f"{path}: contents do not match the recorded SHA-256 (truncated or corrupt)")
    state = torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    cfg = from_dict(ExperimentConfig, meta["config"])
    return state, cfg, meta
