"""The exported checkpoint form is safe to load (python -m efe_ray.export): no pickle that runs code,
damaged shards refused naming the file, refusals on one line that write nothing, and the command run
as a module. The ``source`` and ``exported`` fixtures of tests/conftest.py are built once for this file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickletools
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from efe_ray import checkpoint as ckpt
from efe_ray import export as exp

from helpers_eval import eval_tasks, write_tasks
from helpers_export import evaluate_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SAFE_GLOBALS = {"torch._utils _rebuild_tensor_v2", "torch BFloat16Storage", "torch FloatStorage",
                "torch LongStorage", "collections OrderedDict"}
"""All a shard's pickle may name: tensor rebuilding and plain containers, nothing that runs code."""


def _globals(blob: bytes) -> set[str]:
    """The ``module name`` of every global a ``torch.save`` file's pickle refers to."""
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            found.add(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(" ".join(strings[-2:]))
        elif isinstance(arg, str):
            strings.append(arg)
    return found


def test_the_exported_folder_holds_no_pickle_that_runs_code(exported):
    folder = exported("bf16")
    meta = json.loads((folder / ckpt.META_FILE).read_text())  # plain JSON
    shards = [s["file"] for s in meta["shards"]]
    assert sorted(os.listdir(folder)) == sorted([ckpt.META_FILE, ckpt.POLICY_FILE, *shards])
    for name in shards:
        blob = (folder / name).read_bytes()
        assert _globals(blob) <= SAFE_GLOBALS
        tensors = torch.load(io.BytesIO(blob), weights_only=True)
        assert all(isinstance(k, str) and type(v) is torch.Tensor and v.dtype == torch.bfloat16
                   for k, v in tensors.items())
    torch.load(folder / ckpt.POLICY_FILE, weights_only=True)  # the policy is weights-only too


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_shard_that_would_run_code_is_refused_even_with_a_matching_hash(exported, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "exported"
    shutil.copytree(exported("bf16"), copy)
    meta = json.loads((copy / ckpt.META_FILE).read_text())
    bad = io.BytesIO()
    torch.save({"agent.cell_emb.weight": _Payload()}, bad)
    (copy / meta["shards"][0]["file"]).write_bytes(bad.getvalue())
    meta["shards"][0]["sha256"] = hashlib.sha256(bad.getvalue()).hexdigest()
    (copy / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ckpt.CheckpointError, match="not a weights-only tensor file"):
        ckpt.load(copy)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(f.read_bytes()[:-10]), "contents do not match the recorded SHA-256"),
    (lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:]),
     "contents do not match the recorded SHA-256"),
    (lambda f: f.unlink(), "is missing"),
])
def test_a_damaged_shard_is_refused_naming_the_file(exported, tmp_path, capsys, damage, message):
    copy = tmp_path / "exported"
    shutil.copytree(exported("bf16"), copy)
    name = ckpt.read_meta(copy)["shards"][1]["file"]
    damage(copy / name)
    with pytest.raises(ckpt.CheckpointError, match=name):
        ckpt.load(copy)
    split = write_tasks(tmp_path / "ev", eval_tasks())
    assert evaluate_checkpoint(copy, split, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and name in err[-1] and message in err[-1]
    assert not (tmp_path / "out" / "report.json").exists()


def test_refusals_are_one_line_and_write_nothing(source, exported, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    cases = [
        ([tmp_path / "empty", tmp_path / "o1"], "no efe_meta.json anywhere below"),
        ([tmp_path / "nothere", tmp_path / "o2"], "no such file or folder"),
        ([exported("bf16"), tmp_path / "o3"], "already an exported folder"),
        ([source[0], tmp_path / "full"], "exists and is not an empty folder"),
    ]
    for (src, out), words in cases:
        assert exp.main(["--checkpoint", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]
    assert (tmp_path / "full" / "x").read_text() == "keep me"


def test_the_command_runs_as_a_module_into_an_empty_folder(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "efe_ray.export", "--checkpoint", str(source[0].parent),
                           "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"exported {source[0]} -> {out} (bf16" in done.stdout and "none over 15 MiB" in done.stdout
    assert ckpt.is_exported(ckpt.read_meta(out)) and ckpt.load(out)[0]["agent"]
