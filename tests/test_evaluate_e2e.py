"""The README's evaluate command, verbatim (relative path included), on a real search's folder.

A tiny ``python -m efe_ray.tune --preset smoke`` writes ``runs/<name>`` under a fresh working
folder; then the command from the README's Evaluate section runs there as a user would type it.
Starts Ray twice (about a minute and a half on 2 cores).
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def readme_evaluate_command() -> str:
    """The first ``python -m efe_ray.evaluate`` line of the README's Evaluate section."""
    section = ROOT.joinpath("README.md").read_text().split("## Evaluate", 1)[1].split("\n## ", 1)[0]
    return next(line.strip() for line in section.splitlines() if line.strip().startswith("python -m efe_ray.evaluate"))


def test_the_readme_evaluate_command_runs_verbatim(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    tune = subprocess.run([sys.executable, "-m", "efe_ray.tune", "--preset", "smoke", "--no-dashboard",
                           "--num-cpus", "2", "--name", "readme"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert tune.returncode == 0, tune.stderr[-3000:]
    skipped = json.loads((tmp_path / "runs" / "readme" / "skipped_tasks.json").read_text())
    assert skipped["invalid"] == [] and skipped["train_tasks"] == 3 and skipped["held_out_tasks"] == 3

    command = readme_evaluate_command()
    assert "--checkpoint runs/<name>" in command  # relative, as a user types it
    argv = [sys.executable if word == "python" else word for word in shlex.split(command.replace("<name>", "readme"))]
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "eval_out" / "arc1-eval"
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok"
    assert report["methods"]["model"]["errors"] == []
    assert Path(report["checkpoint"]).is_relative_to(tmp_path / "runs" / "readme")
    # The smoke checkpoint's 6x6 canvas answers few ARC tasks: said with counts, scored as no answer.
    assert re.search(r"warning: 387 of 400 tasks \(403 of 419 test inputs\) are larger than the checkpoint's "
                     r"6x6 canvas", run.stderr)
    assert report["methods"]["model"]["extra"]["unanswered_outputs"] == 403
    assert report["methods"]["model"]["outputs"] == 419
    assert len(json.loads((out / "submission.json").read_text())) == 400
