"""Shared by the export tests: the learning rate the exported trial ended with, and the evaluate
command they run on a checkpoint or an exported folder."""

from __future__ import annotations

from pathlib import Path

from efe_ray.evaluate import main as evaluate_main

AGENT_LR = 0.0123  # not the config's: the learning rate a trial ended with must travel


def evaluate_checkpoint(checkpoint: Path, split: Path, out: Path, *extra: str) -> int:
    """``python -m efe_ray.evaluate`` in this process, serial, without the policy, 2 augmentations and
    one TTA step; returns its exit code."""
    return evaluate_main(["--checkpoint", str(checkpoint), "--split", str(split), "--workers", "0", "--no-policy",
                          "--augmentations", "2", "--tta-steps", "1", "--out", str(out), "--quiet", *extra])
