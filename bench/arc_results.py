"""Turn what bench/arc_lease.sh brought back into bench/arc_results.json and the ARC table of RESULTS.md.

Run, after unpacking ``reports.tgz`` into a folder::

    python bench/arc_results.py FOLDER --card "NVIDIA H100 80GB HBM3 x4" --revision abc1234 \\
        --date 2026-11-28 [--write bench/arc_results.json [--append]]

``FOLDER`` holds the evaluation folders the lease wrote (``arc1-eval``, ``arc1-eval-no-tta``,
``arc1-eval-no-transduction``, ``arc2-eval``, ``arc1-train``, the snapshots' ``arc1-eval-train-<t>``,
the longer adaptation's ``arc1-eval-tta<N>``, each with its ``report.json`` and ``per_task.csv``) and
``stages.jsonl``. Prints:

- one record per (split, method) as a Markdown table; a method whose time budget ended before it
  answered any task gets no row, only a line that names it;
- the arc1-eval model rows on the tasks that all of them answered (``common_tasks`` and
  ``solved_on_common`` in their records): budgets that reached different tasks, compared on the
  same ones.

With ``--write``, the records go to the JSON file; with ``--append`` they follow the leases already
there, in place of any of the same revision and date. Each record has ``split``, ``method``,
``pass2_task``, ``pass2_output`` and ``cell_acc`` in percent, ``card``, ``revision``, ``date``,
``train_gpu_min``, ``eval_gpu_min`` and ``commands``.

A merge of two evaluations' submissions (bench/merge_submissions.py ``--out FOLDER/arc1-eval-merged``)
is the row ``model-merged``; its record names the merged runs' folders (``derived_from``), and its
command is the one evaluation that gives the same answers (``--tta-lr A B``).

A lease that only evaluates an export trained in an earlier lease (``RUNS`` set to the folder that
holds it) names that lease with ``--trained-in REVISION,DATE``: its records must already be in the
``--write`` file. Every record then carries ``trained_in`` (that lease's revision, date, card and
training GPU-minutes), its ``train_gpu_min`` and its training command, first in ``commands``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from command import command_line

RUNS = {
    # folder -> (split, {method in report -> method in the table})
    "arc1-eval": ("arc1-eval", None),
    "arc1-eval-no-transduction": ("arc1-eval", {"model": "model-no-transduction"}),
    "arc1-eval-no-transduction-tta400": ("arc1-eval", {"model": "model-no-transduction-tta400-no-search"}),
    "arc1-eval-no-ema": ("arc1-eval", {"model": "model-no-ema"}),
    "arc1-eval-no-tta": ("arc1-eval", {"model": "model-no-tta"}),  # eval-main with ABLATIONS=0
    "arc1-eval-merged": ("arc1-eval", {"model": "model-merged"}),  # bench/merge_submissions.py --out
    "arc2-eval": ("arc2-eval", None),
    "arc1-train": ("arc1-train", {"model": "model-no-tta", "copy_input": "copy_input", "demo_rule": "demo_rule"}),
}


def gpu_minutes(folder: Path) -> tuple[float | None, float | None]:
    """(training, evaluation) GPU-minutes: each stage's wall time times the GPUs it held
    (``stages.jsonl``, written by bench/arc_lease.sh)."""
    path = folder / "stages.jsonl"
    if not path.exists():
        return None, None
    stages = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def minutes(names: tuple[str, ...]) -> float:
        return round(sum(s["seconds"] * s["gpus"] for s in stages if s["stage"] in names) / 60, 1)

    return minutes(("train", "resume")), minutes(("eval-main", "eval-more", "eval-notta", "eval-scale", "eval-tta"))


def runs(folder: Path) -> dict[str, tuple[str, dict | None]]:
    """:data:`RUNS` plus the compute-scaling snapshots found in ``folder`` (``arc1-eval-train-<t>``,
    bench/arc_lease.sh eval-scale), the recipe arms (``arc1-eval-ablate-<name>``, ablate) and the runs
    with more adaptation (``arc1-eval-tta<N>``, eval-tta): their ``model`` is the row ``model-train-<t>``,
    ``model-ablate-<name>`` or ``model-tta<N>``."""
    found = {p.name: ("arc1-eval", {"model": "model-" + p.name.removeprefix("arc1-eval-")})
             for pattern in ("arc1-eval-train-*", "arc1-eval-ablate-*", "arc1-eval-tta*")
             for p in sorted(folder.glob(pattern)) if p.is_dir()}
    return {**RUNS, **found}


def methods(folder: Path):
    """``(folder name, split, report settings, method as the table names it, its results, method as the
    report names it)`` for every method of every run in ``folder`` that the table reads (:func:`runs`),
    in their order."""
    for sub, (split, rename) in runs(folder).items():
        if not (folder / sub / "report.json").exists():
            continue
        report = _report(folder, sub)
        for name, m in report["methods"].items():
            if rename is None or name in rename:
                yield sub, split, report["settings"], (rename or {}).get(name, name), m, name


def per_task(folder: Path, sub: str, name: str) -> dict[str, tuple[float, bool]] | None:
    """task id -> (score, answered) of the method the report calls ``name``, from ``folder/sub/per_task.csv``
    (a task is answered when it has no error: a task the time budget did not reach has one); None
    where the run has no ``per_task.csv``."""
    path = folder / sub / "per_task.csv"
    if not path.exists():
        return None
    with open(path, newline="") as f:
        return {r["task_id"]: (float(r["score"]), not r["error"]) for r in csv.DictReader(f) if r["method"] == name}


def common(folder: Path, split: str = "arc1-eval") -> tuple[list[str], dict[str, float]]:
    """(the tasks of ``split`` that every model row answered, each model row's tasks solved on them):
    rows whose budgets reached different tasks compared on the same ones. Model rows are those named
    ``model...`` in the table (the snapshots, ablations and adaptation lengths included); a run
    without ``per_task.csv`` is left out."""
    scores = {}
    for sub, sp, _, method, m, report_name in methods(folder):
        if sp == split and method.startswith("model") and not answered_none(m):
            found = per_task(folder, sub, report_name)
            if found is not None:
                scores[method] = found
    if not scores:
        return [], {}
    tasks = sorted(set.intersection(*({t for t, (_, ok) in s.items() if ok} for s in scores.values())))
    return tasks, {method: round(sum(s[t][0] for t in tasks), 2) for method, s in scores.items()}


def _report(folder: Path, sub: str) -> dict:
    return json.loads((folder / sub / "report.json").read_text())


def answered_none(m: dict) -> bool:
    """Whether the time budget ended before the method answered any task: no measurement, not a 0%."""
    return _late(m) >= m["tasks"]


def training_lease(stored: list[dict], revision: str, date: str) -> dict:
    """``trained_in`` of a record whose export was trained in the lease ``revision``, ``date`` of the
    ``stored`` records: that lease's revision, date, card and ``train_gpu_min``, and its training
    command (``train_command``). Raises ValueError naming the lease where ``stored`` lacks it."""
    found = [r for r in stored if (r["revision"], r["date"]) == (revision, date)]
    if not found:
        leases = sorted({f"{r['revision']},{r['date']}" for r in stored})
        raise ValueError(f"--trained-in {revision},{date}: no such lease in the records (they hold {', '.join(leases)})")
    r = found[0]
    train = [c for c in r["commands"] if "arc_lease.sh train" in c]
    return {"revision": revision, "date": date, "card": r["card"], "train_gpu_min": r["train_gpu_min"],
            "train_command": train[0] if train else ""}


def records(folder: Path, card: str, revision: str, date: str, train_command: str = "",
            trained_in: dict | None = None) -> list[dict]:
    """The table's records of ``folder`` (see the module docstring); ``trained_in``
    (:func:`training_lease`): the export was trained in that earlier lease."""
    train_min, eval_min = gpu_minutes(folder)
    if trained_in is not None:
        train_min, train_command = trained_in["train_gpu_min"], train_command or trained_in["train_command"]
    tasks, on_common = common(folder)
    out = []
    for sub, split, s, method, m, _ in methods(folder):
        if answered_none(m):
            continue
        command = (f"python -m efe_ray.evaluate --checkpoint {s.get('checkpoint')} --split {split} "
                   f"--tta-steps {s.get('tta_steps')} --augmentations {s.get('augmentations')} "
                   + (f"--tta-lr {_rates(s['tta_lr'])} --tta-views {s['tta_views']} " if "tta_lr" in s else "")
                   + (f"--colours {s['colours']} " if s.get("colours", 1) != 1 else "")
                   + f"--search {s.get('search')}" + (" --ablations" if s.get("ablations") else "")
                   + (f" --time-budget-s {s['time_budget_s']:g}" if s.get("time_budget_s") else "")
                   + (f" --workers {s['workers']} --gpus-per-task {s['gpus_per_task']:g}" if s.get("workers") else ""))
        out.append({
            "split": split, "method": method,
            "pass2_task": round(100 * m["task_score"], 2), "pass2_output": round(100 * m["output_score"], 2),
            "cell_acc": round(100 * m["cell_acc"], 2), "tasks": m["tasks"], "outputs": m["outputs"],
            "solved_outputs": m["solved_outputs"], "not_answered_in_time": _late(m), "card": card, "revision": revision, "date": date,
            "train_gpu_min": train_min, "eval_gpu_min": eval_min,
            "commands": ([train_command] if train_command else []) + [command],
        })
        if trained_in is not None:
            out[-1]["trained_in"] = {k: v for k, v in trained_in.items() if k != "train_command"}
        if "derived_from" in (report := _report(folder, sub)):  # merged by bench/merge_submissions.py
            out[-1]["derived_from"] = [Path(r).name for r in report["derived_from"]]
        if m.get("demo_fit"):  # how far adaptation fit the demonstrations (efe_ray/evaluation/report.py)
            out[-1]["demo_fit"] = m["demo_fit"]
        if split == "arc1-eval" and method in on_common:
            out[-1].update(common_tasks=len(tasks), solved_on_common=on_common[method])
    return out


def rates(tta_lr: float | list[float]) -> list[float]:
    """A report's ``tta_lr`` as a list: one rate (reports before several were allowed), or several."""
    return tta_lr if isinstance(tta_lr, list) else [tta_lr]


def _rates(tta_lr: float | list[float]) -> str:
    """``--tta-lr``'s value as typed."""
    return " ".join(f"{lr:g}" for lr in rates(tta_lr))


def unanswered(folder: Path) -> list[str]:
    """``folder: method (tasks)`` of every method in ``folder`` that answered no task in its time
    budget: :func:`records` gives them no row."""
    return [f"{sub}: {method} ({m['tasks']} tasks)" for sub, _, _, method, m, _ in methods(folder) if answered_none(m)]


def _late(method: dict) -> int:
    """Tasks the time budget ended before they were answered (scored 0)."""
    return sum(1 for e in method.get("errors", []) if "TimeBudgetEnded" in str(e))


def table(rows: list[dict]) -> str:
    lines = ["| split | method | tasks solved (pass@2) | outputs solved | cell acc | not answered in time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['split']} | {r['method']} | {r['pass2_task']:.2f}% | {r['solved_outputs']} / "
                     f"{r['outputs']} ({r['pass2_output']:.2f}%) | {r['cell_acc']:.1f}% | "
                     f"{r['not_answered_in_time']} tasks |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--card", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--write", type=Path)
    p.add_argument("--append", action="store_true",
                   help="with --write: add the records to the file's list, in place of any of the same revision and date")
    p.add_argument("--train-command", default="", help="the training command, first in every record's commands")
    p.add_argument("--trained-in", metavar="REVISION,DATE",
                   help="the lease (already in the --write file) that trained the export this folder evaluated")
    args = p.parse_args(argv)
    trained_in = None
    if args.trained_in:
        revision, _, date = args.trained_in.partition(",")
        if not (args.write and args.write.exists()):
            p.error(f"--trained-in {args.trained_in}: needs --write FILE holding that lease's records")
        try:
            trained_in = training_lease(json.loads(args.write.read_text()), revision, date)
        except ValueError as e:
            p.error(f"{e} ({args.write})")
    rows = records(args.folder, args.card, args.revision, args.date, args.train_command, trained_in)
    if not rows:
        print(f"no report.json under {args.folder}")
        return 1
    print(table(rows))
    compared = [r for r in rows if "solved_on_common" in r]  # records() compared them on common tasks
    if len(compared) > 1:
        print(f"on the {compared[0]['common_tasks']} arc1-eval tasks every model row answered, tasks solved: "
              + ", ".join(f"{r['method']} {r['solved_on_common']:g}" for r in compared))
    for r in rows:
        if "demo_fit" in r:
            f = r["demo_fit"]
            print(f"{r['split']} {r['method']}: after adaptation, {f['all_demos_exact']} of {f['tasks']} adapted tasks "
                  f"predict every demonstration view exactly (mean {100 * f['mean_demo_exact']:.1f}% of views); "
                  f"{f['all_demos_exact_and_solved']} of those solved, {f['solved_without_all_demos_exact']} solved without")
    for run in unanswered(args.folder):
        print(f"no row: {run}: the time budget ended before any task was answered")
    if args.write:
        if args.append and args.write.exists():
            kept = [r for r in json.loads(args.write.read_text())
                    if (r["revision"], r["date"]) != (args.revision, args.date)]
            rows = kept + rows
        args.write.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"wrote {args.write} ({len(rows)} records)")
    print("command: " + command_line("arc_results.py", argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
