"""Learner steps per minute of the trials of a Tune experiment, read from their results.

Run::

    python bench/trial_rate.py runs/<name>

For every trial folder under the experiment (``result.json``: one JSON object per iteration), it
prints the iterations, the trial's training time (``time_total_s`` of its last result), the learner
steps (``learner/steps``), the learner steps per minute of training time, the mean env step time
RLlib measured (``env_runners/env_step_timer`` when reported) and the last ``eval/*`` values. The
command line comes last.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from command import command_line


def results(trial: Path) -> list[dict]:
    """The trial's per-iteration results, in order."""
    return [json.loads(line) for line in (trial / "result.json").read_text().splitlines() if line.strip()]


def lookup(result: dict, key: str):
    """``result[key]`` for a flat key, or through nested dicts for a ``a/b`` key."""
    if key in result:
        return result[key]
    node = result
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def rate(trial: Path) -> dict:
    """The figures of one trial folder."""
    rows = results(trial)
    if not rows:
        raise SystemExit(f"{trial}: result.json holds no results")
    last = rows[-1]
    seconds, steps = float(last["time_total_s"]), float(lookup(last, "learner/steps") or 0)
    return {"trial": trial.name, "iterations": len(rows), "time_total_s": seconds, "learner_steps": steps,
            "steps_per_min": 60 * steps / seconds if seconds else float("nan"),
            "env_step_s": lookup(last, "env_runners/env_step_timer"),
            "eval": {k: v for k, v in last.items() if k.startswith("eval/")}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment", help="a Tune experiment folder (runs/<name>)")
    args = ap.parse_args(argv)
    trials = sorted(p.parent for p in Path(args.experiment).glob("*/result.json"))
    if not trials:
        sys.exit(f"{args.experiment}: no trial folder with a result.json")
    for trial in trials:
        r = rate(trial)
        step = f", env step {1000 * r['env_step_s']:.1f} ms" if isinstance(r["env_step_s"], float) else ""
        print(f"{r['trial']}: {r['iterations']} iterations in {r['time_total_s']:.0f} s, "
              f"{r['learner_steps']:.0f} learner steps = {r['steps_per_min']:.0f} per minute{step}; "
              f"{json.dumps(r['eval'])}")
    print(command_line("trial_rate.py", argv))


if __name__ == "__main__":
    main()
