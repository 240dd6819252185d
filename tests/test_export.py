"""Tests of the exported checkpoint form (python -m efe_ray.export) and of evaluating it.

One real checkpoint, written by ``efe_ray.checkpoint.save`` after a few learner steps of a model of
a few MiB (a 256-wide two-layer agent: 6.2 MiB of fp32 weights), is exported in bf16 and fp32 and
read back the way ``python -m efe_ray.evaluate`` reads it. No Ray is started. The checkpoint and its
exports are the ``source`` and ``exported`` fixtures of tests/conftest.py, built once for this file;
refusals of unsafe or damaged exports: tests/test_export_safety.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil

import numpy as np
import torch

from efe_ray import checkpoint as ckpt
from efe_ray import export as exp
from efe_ray.evaluate import EXIT_LEAKAGE
from efe_ray.evaluation.model import ModelPredictor, ModelSettings, load_model
from efe_ray.evaluation.predict import predict_logits
from efe_ray.evaluation.solve import SolveSettings, solve_group

from helpers_eval import eval_tasks, write_tasks
from helpers_export import AGENT_LR, evaluate_checkpoint

MIB = 1 << 20


def _weights(learner) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v for m in ("agent", "prompt") for k, v in getattr(learner, m).state_dict().items()}


def _logits(learner, task) -> torch.Tensor:
    return predict_logits(learner, task.train, [p.input for p in task.test])  # (B, S, S, 11)


# ------------------------------------------------------------------------------ reloading


def test_fp32_export_predicts_exactly_as_the_checkpoint(source, exported):
    folder, _, _ = source
    original = load_model(folder, device="cpu", use_policy=False).learner
    loaded = load_model(exported("fp32"), device="cpu", use_policy=False).learner
    a, b = _weights(original), _weights(loaded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for task in eval_tasks():
        assert torch.equal(_logits(original, task), _logits(loaded, task))
        settings = SolveSettings(tta_steps=2, tta_views=2, augmentations=3, search_steps=2, seed=4)
        for p, q in zip(solve_group(original, None, [task], settings)[0].methods["model"],
                        solve_group(loaded, None, [task], settings)[0].methods["model"]):
            np.testing.assert_array_equal(p[0], q[0])
            np.testing.assert_array_equal(p[1], q[1])
    # Weights only: a fresh optimizer at the trial's learning rate, no caches; the step count travels.
    assert loaded.optimizer.state_dict()["state"] == {} and len(loaded.text_cache) == 0 and loaded.task_steps == {}
    assert original.text_cache and loaded.steps == original.steps == 3
    assert loaded.cfg.agent_lr == AGENT_LR and loaded.optimizer.param_groups[0]["lr"] == AGENT_LR


def test_bf16_export_is_the_checkpoint_rounded_to_bf16(source, exported):
    folder, _, _ = source
    original = load_model(folder, device="cpu", use_policy=False).learner
    loaded = load_model(exported("bf16"), device="cpu", use_policy=False).learner
    rounded = load_model(folder, device="cpu", use_policy=False).learner
    with torch.no_grad():
        for p in (*rounded.agent.parameters(), *rounded.prompt.parameters()):
            p.copy_(p.to(torch.bfloat16))
    a, b, r = _weights(original), _weights(loaded), _weights(rounded)
    assert all(v.dtype == torch.float32 for v in b.values())  # parameters are fp32 (design invariant 3)
    assert all(torch.equal(b[k], r[k]) for k in a) and not all(torch.equal(b[k], a[k]) for k in a)
    for task in eval_tasks():
        got, want = _logits(loaded, task), _logits(original, task)
        assert torch.equal(got, _logits(rounded, task))
        # bf16 keeps 8 significant bits (relative rounding <= 2**-9): here log-probs move by < 0.03.
        torch.testing.assert_close(got, want, rtol=0, atol=0.1)
        torch.testing.assert_close(got.exp(), want.exp(), rtol=0, atol=0.01)


def test_metadata_policy_and_trained_tasks_travel(source, exported):
    folder, tasks, _ = source
    src, meta = ckpt.read_meta(folder), ckpt.read_meta(exported("bf16"))
    assert meta["format"] == ckpt.EXPORT_FORMAT and meta["dtype"] == "bf16" and "learner_sha256" not in meta
    assert meta["source"] == str(folder) and meta["source_learner_sha256"] == src["learner_sha256"]
    for key in ("config", "trained_tasks", "env_stats", "policy_sha256"):
        assert meta[key] == src[key]
    assert [t["id"] for t in meta["trained_tasks"]] == [t.task_id for t in tasks]
    policy = ckpt.load_policy(exported("bf16"))
    assert torch.equal(policy["weights"]["w"], torch.arange(6.0).reshape(2, 3))
    files = {s["file"]: s for s in meta["shards"]}
    for name, s in files.items():
        blob = (exported("bf16") / name).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == s["sha256"] and len(blob) == s["bytes"]
    names = [n for s in meta["shards"] for n in s["tensors"]]
    assert names == [f"{m}.{k}" for m in ("agent", "prompt") for k in ckpt.load(folder)[0][m]]
    assert meta["weights"] == sum(t.numel() for m in ("agent", "prompt") for t in ckpt.load(folder)[0][m].values())


def test_task_ids_that_build_the_learner_travel_with_the_weights(source, exported, tmp_path):
    folder, _, learner = source
    meta = ckpt.read_meta(folder)
    cfg = ckpt.load(folder)[1]
    ckpt.save(tmp_path / "ck", {**learner.state_dict(), "task_ids": ["t1", "t2"]}, cfg, [],
              env_stats=meta["env_stats"])
    exp.export(tmp_path / "ck", tmp_path / "ex", "bf16", 4)
    assert ckpt.load(tmp_path / "ex")[0]["task_ids"] == ["t1", "t2"]
    assert ckpt.load(exported("bf16"))[0].get("task_ids") == ckpt.load(folder)[0].get("task_ids")  # as the source


# ------------------------------------------------------------------------------ evaluate


def test_evaluate_takes_an_exported_folder_like_a_trial_checkpoint(source, exported, tmp_path, capsys):
    folder, trained, _ = source
    split = write_tasks(tmp_path / "ev", eval_tasks())
    assert evaluate_checkpoint(folder, split, tmp_path / "a") == 0
    assert evaluate_checkpoint(exported("fp32"), split, tmp_path / "b") == 0
    assert (tmp_path / "a" / "submission.json").read_text() == (tmp_path / "b" / "submission.json").read_text()
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["checkpoint"] == str(exported("fp32")) and report["trained_tasks"] == len(trained)
    # The leakage guard reads the trained tasks from the exported metadata.
    leaky = write_tasks(tmp_path / "leaky", [trained[0], *eval_tasks()])
    capsys.readouterr()
    assert evaluate_checkpoint(exported("bf16"), leaky, tmp_path / "c") == EXIT_LEAKAGE
    assert f"{trained[0].task_id}: id" in capsys.readouterr().err


def test_a_prepared_predictor_ships_the_verified_exported_weights(exported, tmp_path):
    import efe_ray.evaluation.model as model_mod

    copy = tmp_path / "exported"
    shutil.copytree(exported("bf16"), copy)
    predictor = ModelPredictor(copy, ModelSettings(SolveSettings(augmentations=2), use_policy=False, device="cpu"))
    predictor.prepare(device="cpu")
    shipped = pickle.dumps(predictor)  # what the Ray workers receive
    task = eval_tasks()[0]
    expected = predictor(task).attempts
    shutil.rmtree(copy)  # a worker never reads the folder
    model_mod._CACHE.clear()
    for (a, b), (c, d) in zip(expected, pickle.loads(shipped)(task).attempts):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


# ------------------------------------------------------------------------------ sizes


def test_a_model_of_a_few_mib_is_split_into_shards_of_at_most_one_mib(source, tmp_path, capsys):
    out = tmp_path / "out"
    assert exp.main(["--checkpoint", str(source[0]), "--out", str(out), "--shard-mib", "1"]) == 0
    printed = capsys.readouterr().out
    shards = sorted(out.glob("weights-*.pt"))
    assert len(shards) >= 3
    assert all(f.stat().st_size <= MIB for f in out.iterdir())
    for f in out.iterdir():
        assert f"{f.stat().st_size:,} B  {f.name}" in printed
    assert sorted(f.name for f in out.iterdir()) == sorted([ckpt.META_FILE, ckpt.POLICY_FILE, *(f.name for f in shards)])


def test_a_tensor_larger_than_a_shard_is_refused_and_nothing_is_written(source, tmp_path, capsys):
    out = tmp_path / "out"
    # In fp32 the agent's 256x1024 feed-forward matrices take 1 MiB each, more than a 1 MiB file can hold.
    big = [n for n, t in exp.flat_weights(ckpt.load(source[0])[0], torch.float32).items() if t.nbytes >= MIB]
    assert big
    rc = exp.main(["--checkpoint", str(source[0]), "--out", str(out), "--shard-mib", "1", "--dtype", "fp32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"tensor {big[0]} (" in err[0] and "larger than a shard of 1 MiB" in err[0]
    assert list(tmp_path.iterdir()) == []  # no export, no temporary folder


def test_a_shard_over_the_limit_is_never_written_even_when_the_estimate_is_short(monkeypatch):
    monkeypatch.setattr(exp, "TENSOR_OVERHEAD", 0)  # the estimate now counts the data alone
    monkeypatch.setattr(exp, "FILE_OVERHEAD", 0)
    tensors = {f"agent.t{i}": torch.full((1000,), float(i), dtype=torch.bfloat16) for i in range(40)}
    limit = 20_000
    shards = exp.shard(tensors, limit)
    assert all(len(s.blob) <= limit for s in shards)
    assert [n for s in shards for n in s.tensors] == list(tensors)
    # The estimate would have packed more into some shard: measuring it moved tensors on.
    planned = [sum(exp._estimate(n, tensors[n]) for n in s.tensors) for s in shards]
    assert any(size + exp._estimate(nxt.tensors[0], tensors[nxt.tensors[0]]) <= limit
               for size, nxt in zip(planned, shards[1:]))
    for s in shards:
        got = torch.load(io.BytesIO(s.blob), weights_only=True)
        assert list(got) == s.tensors and all(torch.equal(got[k], tensors[k]) for k in got)
