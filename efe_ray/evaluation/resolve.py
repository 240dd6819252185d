"""Find the checkpoint to evaluate: a checkpoint folder, or the best one in an experiment folder.

A checkpoint folder holds ``efe_meta.json`` (see :mod:`efe_ray.checkpoint`). An experiment folder
(what ``python -m efe_ray.tune`` writes under its storage path) holds trial folders; Ray Tune
writes each trial's results to ``<trial>/result.json``, one JSON object per line, and its
checkpoints to ``<trial>/checkpoint_<NNNNNN>/``. :func:`resolve_checkpoint` picks the trial whose
*last* reported value of ``metric`` is highest (maximised, as Tune's ``eval/score``), then that
trial's latest checkpoint (highest ``checkpoint_<N>`` number) holding ``efe_meta.json``.

Why not Tune's ``ExperimentAnalysis`` / ``ResultGrid``: either would replace most of this file
with a few lines (``ExperimentAnalysis(path).get_best_trial(metric, "max", "last")`` and
``get_last_checkpoint``), but both read the experiment by unpickling it: ``ExperimentAnalysis``
decodes ``experiment_state-*.json`` with cloudpickle payloads allowed (Ray 2.60's
``_loads_with_cloudpickle``, documented as executing code from the file), and a ``ResultGrid``
comes from ``Tuner.restore``, which unpickles ``tuner.pkl``. An evaluator is handed folders it did
not write, and must not run code from them; this reader only parses ``result.json`` as JSON and
looks at folder names.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from efe_ray.checkpoint import META_FILE

__all__ = ["CheckpointNotFoundError", "last_metric", "resolve_checkpoint"]

RESULT_FILE = "result.json"
_CKPT = re.compile(r"^checkpoint_(\d+)$")


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint could be chosen under the given path; the message says why."""


def _lookup(result: dict, metric: str) -> Any:
    """``result[metric]`` as a flat key, else along the nested path ``metric.split("/")``."""
    if metric in result:
        return result[metric]
    node: Any = result
    for part in metric.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def finite_number(v: Any) -> float | None:
    """``v`` as a float where it is a finite int or float (not a bool), else None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def highest(scored: list[tuple[float, Path]]) -> Path:
    """The path of the highest value in ``scored``; a tie goes to the path that sorts first."""
    return min(scored, key=lambda vt: (-vt[0], str(vt[1])))[1]


def last_metric(result_file: str | os.PathLike[str], metric: str) -> float | None:
    """The last finite numeric value of ``metric`` in a Tune ``result.json`` (None if never reported).

    Lines that are not valid JSON objects (e.g. a half-written last line) are skipped.
    """
    value: float | None = None
    with open(result_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(result, dict):
                continue
            v = finite_number(_lookup(result, metric))
            if v is not None:
                value = v
    return value


def _trial_of(ckpt: Path, root: Path) -> Path | None:
    """The nearest folder from ``ckpt`` up to ``root`` (inclusive) that holds ``result.json``."""
    for folder in (ckpt, *ckpt.parents):
        if (folder / RESULT_FILE).is_file():
            return folder
        if folder == root:
            break
    return None


def _checkpoint_number(ckpt: Path, trial: Path) -> int:
    """The ``N`` of the first ``checkpoint_<N>`` folder between ``trial`` and ``ckpt`` (-1 if none)."""
    for part in ckpt.relative_to(trial).parts:
        m = _CKPT.match(part)
        if m:
            return int(m.group(1))
    return -1


def resolve_checkpoint(path: str | os.PathLike[str], metric: str = "eval/score") -> Path:
    """The checkpoint folder to evaluate for ``path`` (see the module docstring).

    Raises :class:`CheckpointNotFoundError` when ``path`` does not exist, holds no checkpoint, or
    holds several trials none of which reported ``metric``. Ties between trials go to the
    trial folder whose path sorts first.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointNotFoundError(f"{root}: no such file or folder")
    if (root / META_FILE).is_file():
        return root
    if not root.is_dir():
        raise CheckpointNotFoundError(f"{root}: not a checkpoint folder (no {META_FILE}) nor an experiment folder")
    ckpts = sorted(Path(dirpath) for dirpath, _, files in os.walk(root) if META_FILE in files)
    if not ckpts:
        raise CheckpointNotFoundError(f"{root}: no {META_FILE} anywhere below; is this a checkpoint or experiment folder?")
    trials: dict[Path, list[Path]] = {}
    orphans: list[Path] = []
    for c in ckpts:
        trial = _trial_of(c, root)
        if trial is None:
            orphans.append(c)
        else:
            trials.setdefault(trial, []).append(c)
    scored = []
    for trial in sorted(trials):
        value = last_metric(trial / RESULT_FILE, metric)
        if value is not None:
            scored.append((value, trial))
    if not scored:
        if len(ckpts) == 1:
            return ckpts[0]
        listing = "\n  ".join(str(c) for c in ckpts[:20])
        raise CheckpointNotFoundError(
            f"{root}: {len(ckpts)} checkpoints but no trial's {RESULT_FILE} reports {metric!r}; "
            f"pass one checkpoint folder directly:\n  {listing}"
        )
    best = highest(scored)
    return max(trials[best], key=lambda c: (_checkpoint_number(c, best), str(c)))
