"""Export a trained checkpoint as a small folder of weights that travels and evaluates like the original.

How to run this script
----------------------
``python -m efe_ray.export --checkpoint PATH --out DIR [--dtype bf16|fp32] [--shard-mib 15]
[--weights average|trained]``

* ``PATH`` is a trial checkpoint folder or an experiment folder, resolved as
  ``python -m efe_ray.evaluate`` resolves it (efe_ray/evaluation/resolve.py: the latest checkpoint
  of the trial with the best last ``--metric``, by default evaluate's).
* ``DIR`` must not exist or be empty. It receives only what evaluation needs: the agent's and
  the prompt encoder's weights (the average of the weights where the trial kept one,
  ``learner.ema_decay``; ``--weights trained`` takes the training weights instead, the ablation
  of the average; no optimizer state, caches or RNG) in ``--dtype`` (default bf16),
  split into ``weights-<i>-of-<n>.pt`` shards of at most ``--shard-mib`` MiB each (plain
  ``torch.save`` tensor dicts, read back with ``torch.load(weights_only=True)``), ``efe_policy.pt``
  if the checkpoint has one, and ``efe_meta.json`` (config, trained tasks, env statistics, each
  shard's SHA-256 and tensors, the dtype, the source and its learner's SHA-256, and ``ema_weights``:
  whether the weights are the average). The folder is
  written beside ``DIR`` and renamed into place, each file atomically, the metadata last.
* Then ``python -m efe_ray.evaluate --checkpoint DIR ...`` evaluates it like the trial checkpoint:
  every shard is verified, the weights cast back to fp32, the optimizer fresh.

Results to expect
-----------------
The files and their sizes, e.g.::

    exported runs/efe/trial_0/checkpoint_000004 -> out/export (bf16, 1,316,426 weights in 1 shard)
         2.51 MiB      2,632,683 B  weights-00001-of-00001.pt
         0.12 MiB        126,075 B  efe_policy.pt
         0.01 MiB         11,342 B  efe_meta.json
    total 2.64 MiB in 3 files, none over 15 MiB

No file over the limit is ever written: a tensor that alone exceeds a shard, a policy or metadata
file over the limit, a ``PATH`` that holds no checkpoint, an already exported ``PATH`` or a
non-empty ``DIR`` stops the export with one line (exit 2) and nothing written.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from efe_ray import checkpoint as ckpt
from efe_ray.data.files import atomic_write
from efe_ray.evaluation.resolve import CheckpointNotFoundError, resolve_checkpoint

MIB = 1 << 20
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
"""``--dtype`` -> the dtype floating-point weights are stored in (other tensors keep theirs)."""
FILE_OVERHEAD = 4096
"""Bytes a ``torch.save`` file takes besides its tensors (measured: 1,261 for an empty dict)."""
TENSOR_OVERHEAD = 512
"""Bytes per tensor besides its data and name (measured: about 320); shards are checked after all."""
EXIT_USAGE = 2


class ExportError(Exception):
    """The export was refused; the message says why (one line)."""


@dataclass(frozen=True)
class Shard:
    """One shard, serialised."""

    tensors: list[str]
    """Its keys (``agent.<name>`` / ``prompt.<name>``), in state-dict order."""
    blob: bytes
    """The ``torch.save`` bytes of ``{key: tensor}``."""


def flat_weights(state: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``{"<module>.<name>": tensor}`` of the learner state's agent and prompt weights, floating-point
    ones cast to ``dtype``; each a compact copy, so a view never drags its whole storage along."""
    out = {}
    for module in ckpt.WEIGHT_MODULES:
        for name, t in state[module].items():
            t = t.detach().to(dtype) if t.is_floating_point() else t.detach()
            out[f"{module}.{name}"] = t.clone(memory_format=torch.contiguous_format).cpu()
    return out


def _serialize(tensors: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


def _estimate(name: str, t: torch.Tensor) -> int:
    """Upper estimate of the bytes ``name``/``t`` adds to a shard (data aligned to 64 bytes)."""
    return 64 * math.ceil(t.nbytes / 64) + TENSOR_OVERHEAD + 2 * len(name)


def _too_large(name: str, t: torch.Tensor, limit: int, dtype: str, measured: int = 0) -> ExportError:
    need = math.ceil(max(_estimate(name, t) + FILE_OVERHEAD, measured) / MIB)
    return ExportError(f"tensor {name} {tuple(t.shape)} takes {t.nbytes / MIB:.2f} MiB in {dtype}: larger than a "
                       f"shard of {limit / MIB:g} MiB; pass --shard-mib {need} or more")


def shard(tensors: dict[str, torch.Tensor], limit: int, dtype: str = "bf16") -> list[Shard]:
    """``tensors`` packed in order into serialised shards of at most ``limit`` bytes each.

    Packed greedily by an upper estimate of each tensor's bytes, then each shard is serialised and
    measured: one over the limit hands its last tensors on to the next. Raises ExportError when a
    tensor alone does not fit.
    """
    groups: list[list[str]] = [[]]
    used = FILE_OVERHEAD
    for name, t in tensors.items():
        size = _estimate(name, t)
        if FILE_OVERHEAD + size > limit:
            raise _too_large(name, t, limit, dtype)
        if groups[-1] and used + size > limit:
            groups.append([])
            used = FILE_OVERHEAD
        groups[-1].append(name)
        used += size
    shards: list[Shard] = []
    for i, group in enumerate(groups):
        blob = _serialize({k: tensors[k] for k in group})
        while len(blob) > limit:  # the estimate was short: the last tensor moves on
            if len(group) == 1:
                raise _too_large(group[0], tensors[group[0]], limit, dtype, len(blob))
            if i + 1 == len(groups):
                groups.append([])
            groups[i + 1].insert(0, group.pop())
            blob = _serialize({k: tensors[k] for k in group})
        shards.append(Shard(list(group), blob))
    return shards


def shard_name(i: int, n: int) -> str:
    """The file name of shard ``i`` (0-based) of ``n``."""
    return f"weights-{i + 1:05d}-of-{n:05d}.pt"


def _policy_blob(folder: Path, meta: dict) -> bytes | None:
    """The source's ``efe_policy.pt``, verified against its recorded SHA-256 (None if it has none)."""
    if "policy_sha256" not in meta:
        return None
    path = folder / ckpt.POLICY_FILE
    try:
        blob = path.read_bytes()
    except FileNotFoundError as err:
        raise ExportError(f"{path}: missing, though {ckpt.META_FILE} records it") from err
    if hashlib.sha256(blob).hexdigest() != meta["policy_sha256"]:
        raise ExportError(f"{path}: contents do not match the recorded SHA-256 (truncated or corrupt)")
    return blob


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: exists and is not an empty folder; pass a new --out")


WEIGHTS = ("average", "trained")
"""``--weights``: the average of the weights where the trial kept one (what evaluation uses), or the
training weights."""


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, dtype: str = "bf16",
           shard_mib: float = 15.0, metric: str | None = None,
           weights: str = "average") -> tuple[list[tuple[str, int]], dict]:
    """Export ``checkpoint`` (see the module docstring) into ``out``; returns (``[(file, bytes), ...]``,
    the metadata written). ``weights="trained"`` exports the training weights of a trial that kept an
    average, and is refused for one that did not (there is nothing to take out)."""
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if weights not in WEIGHTS:
        raise ExportError(f"--weights {weights!r}: use one of {', '.join(WEIGHTS)}")
    if not (math.isfinite(shard_mib) and shard_mib > 0):
        raise ExportError(f"--shard-mib {shard_mib!r}: must be a number > 0")
    limit, out = int(shard_mib * MIB), Path(out).absolute()
    folder = (resolve_checkpoint(checkpoint, metric) if metric else resolve_checkpoint(checkpoint)).absolute()
    meta = ckpt.read_meta(folder)
    if ckpt.is_exported(meta):
        raise ExportError(f"{folder}: already an exported folder; export from its source, {meta.get('source')}")
    _check_out(out)
    state, _, meta = ckpt.load(folder)
    averaged = ckpt.EMA_KEY in state
    if weights == "trained" and not averaged:
        raise ExportError(f"--weights trained: {folder} kept no average of the weights (learner.ema_decay "
                          f"was 0), so its export already holds the training weights; drop --weights")
    chosen = ckpt.evaluation_weights(state) if weights == "average" else {m: state[m] for m in ckpt.WEIGHT_MODULES}
    tensors = flat_weights(chosen, DTYPES[dtype])
    shards = shard(tensors, limit, dtype)
    names = [shard_name(i, len(shards)) for i in range(len(shards))]
    files = {name: s.blob for name, s in zip(names, shards)}
    policy = _policy_blob(folder, meta)
    if policy is not None:
        files[ckpt.POLICY_FILE] = policy
    kept = {k: v for k, v in meta.items() if k not in ("format", "learner_sha256")}  # later fields travel too
    out_meta = {
        **kept, "format": ckpt.EXPORT_FORMAT, "dtype": dtype, "shard_mib": shard_mib,
        "source": str(folder), "source_learner_sha256": meta["learner_sha256"],
        "steps": int(state["steps"]), "lrs": {k: float(v) for k, v in state["lrs"].items()},
        "weights": sum(t.numel() for t in tensors.values()), "ema_weights": averaged and weights == "average",
        **({"task_ids": list(state["task_ids"])} if "task_ids" in state else {}),  # what builds a task table
        "shards": [{"file": n, "sha256": hashlib.sha256(s.blob).hexdigest(), "bytes": len(s.blob),
                    "tensors": s.tensors} for n, s in zip(names, shards)],
    }
    files[ckpt.META_FILE] = json.dumps(out_meta, indent=1).encode()  # last: it vouches for the others
    for name, blob in files.items():
        if len(blob) > limit:
            raise ExportError(f"{name} would take {len(blob):,} bytes, over the {limit / MIB:g} MiB limit; "
                              f"pass a larger --shard-mib")
    _write_folder(out, files)
    return [(name, len(blob)) for name, blob in files.items()], out_meta


def _write_folder(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` (in order, each atomically) into a new folder beside ``out``, then rename it to
    ``out``: a reader sees no folder or the whole export."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        for name, blob in files.items():
            atomic_write(tmp / name, blob)
        os.replace(tmp, out)  # replaces an empty ``out`` too
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m efe_ray.export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="trial checkpoint folder or experiment folder")
    p.add_argument("--out", required=True, help="the exported folder (must not exist, or be empty)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="dtype of the stored weights")
    p.add_argument("--shard-mib", type=float, default=15.0, help="largest file, in MiB")
    p.add_argument("--metric", help="metric that picks the best trial of an experiment (default: evaluate's)")
    p.add_argument("--weights", choices=WEIGHTS, default="average",
                   help="the average of the weights where the trial kept one, or the training weights")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the export; prints the files and their sizes. 0 on success, 2 when refused."""
    args = parse_args(argv)
    try:
        files, meta = export(args.checkpoint, args.out, args.dtype, args.shard_mib, args.metric, args.weights)
    except (ExportError, ckpt.CheckpointError, CheckpointNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, RuntimeError) as err:  # unwritable --out, a config or tensor file that will not load
        print(f"error: cannot export {args.checkpoint}: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE
    n = len(meta["shards"])
    print(f"exported {meta['source']} -> {Path(args.out).absolute()} ({args.dtype}, {meta['weights']:,} weights "
          f"in {n} shard{'s' * (n != 1)})")
    for name, size in files:
        print(f"  {size / MIB:7.2f} MiB {size:>14,} B  {name}")
    total = sum(size for _, size in files)
    print(f"total {total / MIB:.2f} MiB in {len(files)} files, none over {args.shard_mib:g} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
