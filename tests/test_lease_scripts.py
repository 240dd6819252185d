"""bench/arc_lease.sh refuses bad settings before any search or evaluation starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "arc_lease.sh"


def run(tmp_path: Path, stage: str, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])  # python3: this one
    full = {**os.environ, "PATH": path, "DRY": "1", "DRY_G": "1", "RUNS": str(tmp_path / "runs"),
            "OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["bash", str(SCRIPT), stage], env=full, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("stage", "name", "value"), [
    ("eval-tta", "PER_GPU", "0"), ("eval-main", "PER_GPU", "four"),
    ("eval-tta", "TTA_MORE", "-5"), ("eval-tta", "TTA_MORE", "1e3"),
    ("train", "SNAP_AT", "3min"), ("eval-tta", "TTA_NAME", "lr 3e-3"),
])
def test_a_bad_setting_is_refused_and_named_before_anything_runs(tmp_path, stage, name, value):
    out = run(tmp_path, stage, **{name: value})
    assert out.returncode == 2
    assert f"{name}" in out.stdout and value in out.stdout
    # nothing ran: no stage was timed, no evaluation or search folder was written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lease.log"]
    assert not any((tmp_path / "runs").iterdir())


def test_an_unknown_stage_is_refused(tmp_path):
    out = run(tmp_path, "evaluate-everything")
    assert out.returncode == 2 and "unknown stage evaluate-everything" in out.stderr


def test_adaptation_settings_need_a_name_and_a_name_needs_settings(tmp_path):
    out = run(tmp_path, "eval-tta", TTA_ARGS="--tta-lr 0.003")
    assert out.returncode == 2 and "TTA_NAME: '' must name TTA_ARGS's row" in out.stdout
    out = run(tmp_path, "eval-tta", TTA_NAME="lr3e-3")
    assert out.returncode == 2 and "TTA_NAME: 'lr3e-3' given without TTA_ARGS" in out.stdout


def test_the_no_adaptation_budget_is_checked(tmp_path):
    out = run(tmp_path, "eval-main", NOTTA_S="1m")
    assert out.returncode == 2 and "NOTTA_S: '1m' is not a whole number of seconds" in out.stdout
    out = run(tmp_path, "eval-notta", NOTTA_S="0")
    assert out.returncode == 2 and "NOTTA_S: 0 gives eval-notta no time" in out.stdout
    assert not any((tmp_path / "runs").iterdir())


def test_eval_scale_scores_only_the_snapshots_named(tmp_path):
    for name in ("3min", "6min"):
        (tmp_path / "runs" / f"export-arc-{name}").mkdir(parents=True)  # not checkpoints: each evaluation fails fast
    out = run(tmp_path, "eval-scale", SNAPS="6min")
    logs = sorted(p.name for p in (tmp_path / "out").glob("eval_*.log"))
    assert logs == ["eval_arc1-eval-train-6min.log"] and out.returncode != 0  # tried, and its failure reported
    assert "no efe_meta.json" in (tmp_path / "out" / "eval_arc1-eval-train-6min.log").read_text()


def test_eval_scale_scores_the_final_checkpoint_as_a_row_of_its_own(tmp_path):
    for name in ("arc", "arc-3min", "arc-6min"):
        (tmp_path / "runs" / f"export-{name}").mkdir(parents=True)  # not checkpoints: each evaluation fails fast
    out = run(tmp_path, "eval-scale", SNAPS="6min", SCALE_FINAL="9min")
    logs = sorted(p.name for p in (tmp_path / "out").glob("eval_*.log"))
    assert logs == ["eval_arc1-eval-train-6min.log", "eval_arc1-eval-train-9min.log"] and out.returncode != 0
    assert "runs/export-arc: no efe_meta.json" in (tmp_path / "out" / "eval_arc1-eval-train-9min.log").read_text()


@pytest.mark.parametrize(("value", "why"), [("nine", "must name the final checkpoint's training minutes"),
                                            ("6min", "names a snapshot too")])
def test_a_final_row_name_is_checked(tmp_path, value, why):
    (tmp_path / "runs" / "export-arc-6min").mkdir(parents=True)
    out = run(tmp_path, "eval-scale", SCALE_FINAL=value)
    assert out.returncode == 2 and (f"SCALE_FINAL: '{value}'" in out.stdout or f"SCALE_FINAL: {value} " in out.stdout)
    assert why in out.stdout and not list((tmp_path / "out").glob("eval_*.log"))


@pytest.mark.parametrize(("stage", "env", "said"), [
    ("ablate", {}, "ARMS: none given"),
    ("eval-ablate", {"ARMS": "base: no warmup"}, "ARMS: bad arm 'no'"),
    ("ablate", {"ARMS": "base:", "ABLATE_EVAL_S": "1.5"}, "ABLATE_EVAL_S: '1.5' is not a whole number of seconds"),
    ("eval-ablate", {"ARMS": "base:", "ABLATE_EVAL_S": "0"}, "ABLATE_EVAL_S: 0 gives eval-ablate no time"),
])
def test_ablation_settings_are_checked_before_any_arm_starts(tmp_path, stage, env, said):
    out = run(tmp_path, stage, **env)
    assert out.returncode == 2 and said in out.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["lease.log"]
    assert not any((tmp_path / "runs").iterdir())


def test_eval_ablate_scores_each_arm_named_and_reports_one_that_was_not_trained(tmp_path):
    out = run(tmp_path, "eval-ablate", ARMS="base: no-warmup:learner.warmup_steps=0")
    assert out.returncode != 0  # neither arm has a checkpoint: both exports fail, and the stage says so
    assert "arm base: export failed" in out.stdout and "arm no-warmup: export failed" in out.stdout
    exports = sorted(p.name for p in (tmp_path / "out").glob("export_ablate-*.log"))
    assert exports == ["export_ablate-base.log", "export_ablate-no-warmup.log"]
    assert "ablate-base" in (tmp_path / "out" / "export_ablate-base.log").read_text()
