"""bench/learner_step.py --json: each run appends one record of the keys bench/step_results.json holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"revision", "card", "date", "preset", "d_model", "batch_views", "samples_per_s", "mfu", "gpu_busy",
        "kernels_per_step", "command", "heads", "compile", "cuda_graphs"}


def run(out: Path, *extra: str) -> None:
    subprocess.run([sys.executable, "bench/learner_step.py", "--preset", "arc", "--steps", "2", "--warmup", "1",
                    "--batch", "2", "--rehearsal", "2", "--tasks", "2", "--revision", "abc1234", "--json", str(out),
                    *extra], cwd=ROOT, check=True, capture_output=True, text=True, timeout=300)


def test_each_run_appends_its_record(tmp_path):
    out = tmp_path / "step_results.json"
    run(out)
    run(out, "--set", "agent.num_heads=2")
    first, second = json.loads(out.read_text())
    assert KEYS <= set(first) and KEYS <= set(second)
    assert (first["revision"], first["preset"], first["d_model"], first["batch_views"]) == ("abc1234", "arc", 128, 4)
    assert first["card"] and first["card"] == second["card"]  # the machine, named
    assert (first["heads"], second["heads"]) == (4, 2)  # the setting that tells the two apart
    assert (first["compile"], first["cuda_graphs"]) == (False, False)
    assert first["samples_per_s"] > 0 and first["mfu"] is None  # no dense peak known for a CPU
    assert first["gpu_busy"] is None and first["kernels_per_step"] is None  # no profile on a CPU run
    assert second["command"].startswith("python bench/learner_step.py") and "agent.num_heads=2" in second["command"]
