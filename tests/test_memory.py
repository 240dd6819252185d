"""GPU memory planning (efe_ray/memory.py): the estimate's parts, its token bound, and the share.

The estimate itself is checked against peaks measured on a GPU by ``bench/memory_check.py``
(bench/RESULTS.md); here: that it counts the real modules' parameters, that its prompt bound
holds for every sample the learner can draw, that it scales as the formula says, and that the
planner refuses what does not fit before Ray starts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import ray
import torch

from efe_ray import memory
from efe_ray.config import AgentConfig, ConfigError, ExperimentConfig, LearnerConfig, PromptConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.serialize import grid_tokenizer, prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Pair, Task
from efe_ray.learner import EFELearner
from efe_ray.tune import main as tune_main

PROMPT = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, prompt_dim=32)
AGENT = dict(canvas=10, d_model=32, num_layers=1, num_heads=2)


def config(precision: str = "fp32", **prompt) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.prompt = PromptConfig(**{**PROMPT, **prompt})
    cfg.agent = AgentConfig(**AGENT)
    cfg.learner = LearnerConfig(precision=precision, batch_size=4, rehearsal=2)
    return cfg


def ragged_tasks(n: int = 5, seed: int = 0) -> list[Task]:
    """Tasks whose pairs have different sizes, so that the longest prompt depends on the draw."""
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n):
        pairs = []
        for _ in range(int(rng.integers(3, 7))):
            h, w = rng.integers(1, 11, size=2)
            pairs.append(Pair(rng.integers(0, 10, (h, w)), rng.integers(0, 10, tuple(rng.integers(1, 11, size=2)))))
        tasks.append(Task(f"ragged-{i}", tuple(pairs[:-1]), tuple(pairs[-1:]), source="test"))
    return tasks


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_parameter_part_counts_the_real_learner(precision):
    cfg = config(precision)
    tasks = synthetic_tasks(side=4, seed=0)
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner)
    n_all = sum(p.numel() for p in learner.prompt.parameters()) + sum(p.numel() for p in learner.agent.parameters())
    n_qwen = sum(p.numel() for p in learner.prompt.qwen.parameters())
    est = memory.estimate_trial_memory(cfg, tasks)
    # 16 bytes per parameter (fp32 weight, gradient, two AdamW moments) + autocast's 2-byte Qwen copies.
    assert est.params == 16 * n_all + (2 * n_qwen if precision == "bf16" else 0)


def test_the_average_of_the_weights_adds_its_fp32_copies():
    cfg = config()
    cfg.learner = LearnerConfig(batch_size=4, rehearsal=2, ema_decay=0.99)
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner)
    n_all = sum(p.numel() for p in learner.prompt.parameters()) + sum(p.numel() for p in learner.agent.parameters())
    n_avg = sum(t.numel() for t in learner.ema.shadow)
    assert n_avg == n_all and all(t.dtype == torch.float32 for t in learner.ema.shadow)
    assert memory.estimate_trial_memory(cfg, synthetic_tasks(side=4, seed=0)).params == 16 * n_all + 4 * n_avg


def test_prompt_bound_holds_for_every_sample_the_learner_draws():
    tasks = ragged_tasks()
    cfg = config()
    bound = memory.longest_prompt_tokens(tasks, max_tokens=10**6)
    sampler = TaskSampler(tasks, cfg.learner, cfg.agent.canvas)
    tok = grid_tokenizer()
    longest = 0
    for task in tasks:
        for s in sampler.make_samples(task, 64):
            longest = max(longest, len(tok.encode(prompt_text(s.demos, s.query))))
    assert longest <= bound < 1.5 * longest  # an upper bound, and not a loose one
    assert memory.longest_prompt_tokens(tasks, max_tokens=50) == 50  # capped by prompt.max_tokens


def test_estimate_scales_as_its_formula_says():
    tasks = ragged_tasks()
    short = dataclasses.replace(config("bf16"), prompt=PromptConfig(**{**PROMPT, "max_tokens": 100}))
    long = dataclasses.replace(config("bf16"), prompt=PromptConfig(**{**PROMPT, "max_tokens": 200}))
    a, b = memory.estimate_trial_memory(short, tasks), memory.estimate_trial_memory(long, tasks)
    assert (a.tokens, b.tokens) == (100, 200)
    assert b.qwen_activations == 2 * a.qwen_activations  # linear in tokens under autocast
    fp32 = memory.estimate_trial_memory(config("fp32", max_tokens=200), tasks)
    assert fp32.qwen_activations > 2 * b.qwen_activations  # 4-byte activations plus attention probabilities
    d, inner, layers, heads, batch = 32, 64, 2, 2, 4
    assert fp32.qwen_activations == batch * layers * 200 * (4 * (10 * d + 4 * inner) + 16 * d + heads * 200 * 4)
    no_qwen = memory.estimate_trial_memory(config("bf16", use_qwen=False), tasks)
    assert no_qwen.qwen_activations == 0 and no_qwen.tokens == 0
    assert a.total_gib == pytest.approx(memory.MARGIN * a.allocated / memory.GIB + memory.CONTEXT_GIB)


def plan(card_gib: float, per_trial: float, share: bool, est_gib: float, monkeypatch):
    cfg = config()
    cfg.tune = dataclasses.replace(cfg.tune, gpus_per_trial=per_trial, share_gpus=share)
    fake = memory.MemoryEstimate(params=0, qwen_activations=0, agent_activations=0, tokens=1)
    monkeypatch.setattr(memory.MemoryEstimate, "total_gib", property(lambda self: est_gib))
    monkeypatch.setattr(memory, "estimate_trial_memory", lambda cfg, tasks: fake)
    return memory.plan_gpu_share(cfg, [], card_gib)


def test_share_packs_as_many_trials_as_fit(monkeypatch):
    assert plan(80, 1, True, 30, monkeypatch)[0] == pytest.approx(1 / 2)  # floor(0.92 * 80 / 30) = 2
    assert plan(80, 1, True, 20, monkeypatch)[0] == pytest.approx(1 / 3)
    assert plan(141, 1, True, 38.8, monkeypatch)[0] == pytest.approx(1 / 3)  # an H200 takes three 1.5B trials
    assert plan(80, 1, True, 0.5, monkeypatch)[0] == pytest.approx(1 / memory.MAX_TRIALS_PER_GPU)
    share, line = plan(80, 1, True, 30, monkeypatch)
    assert "2 trial(s) per GPU" in line and "30.0 GiB" in line
    assert plan(80, 0, True, 30, monkeypatch)[0] == 0.0  # CPU trials pass unchanged


def test_fixed_shares_that_do_not_fit_are_refused(monkeypatch):
    assert plan(80, 0.5, False, 30, monkeypatch)[0] == 0.5  # two of 30 GiB fit in 80
    with pytest.raises(ConfigError, match=r"gpus_per_trial=0.25 puts 4 trials on a GPU.*at most 2 fit"):
        plan(80, 0.25, False, 30, monkeypatch)
    with pytest.raises(ConfigError, match="not even one trial fits"):
        plan(80, 1, True, 90, monkeypatch)
    assert plan(80, 1, False, 70, monkeypatch)[0] == 1.0


def test_tune_refuses_a_share_that_does_not_fit_before_ray_starts(capsys):
    # With --address the local GPU check is skipped and the plan uses tune.gpu_memory_gib.
    rc = tune_main(["--no-dashboard", "--address", "127.0.0.1:1", "--set", "tune.gpus_per_trial=0.5",
                    "--set", "tune.gpu_memory_gib=2"])
    err = capsys.readouterr().err
    assert rc == 2 and not ray.is_initialized()
    assert "tune.gpus_per_trial=0.5 puts 2 trials on a GPU" in err and "at most 1 fit" in err


def test_an_explicit_gpus_per_trial_is_kept_and_checked(capsys):
    # The gpu preset shares GPUs by memory; --gpus-per-trial turns that off, and its share is checked.
    rc = tune_main(["--preset", "gpu", "--no-dashboard", "--address", "127.0.0.1:1", "--gpus-per-trial", "0.25",
                    "--set", "tune.gpu_memory_gib=10", "--set", "data.train_source=synthetic",
                    "--set", "data.eval_source=synthetic-eval"])
    err = capsys.readouterr().err
    assert rc == 2 and not ray.is_initialized()
    assert "tune.gpus_per_trial=0.25 puts 4 trials on a GPU" in err


def test_a_model_without_a_readable_config_is_planned_only_when_asked(tmp_path):
    cfg = config()
    cfg.prompt = PromptConfig(**{**PROMPT, "model_name": str(tmp_path / "missing-model")})
    cfg.tune = dataclasses.replace(cfg.tune, gpus_per_trial=0.5, share_gpus=False)
    share, line = memory.plan_gpu_share(cfg, synthetic_tasks(side=4), 80)
    assert share == 0.5 and line.startswith("not checked") and "missing-model" in line
    cfg.tune = dataclasses.replace(cfg.tune, share_gpus=True)
    with pytest.raises(ConfigError, match="cannot read its config"):
        memory.plan_gpu_share(cfg, synthetic_tasks(side=4), 80)


def test_a_saved_checkpoint_folder_is_estimated_from_its_config(tmp_path, char_tokenizer, tiny_qwen):
    tiny_qwen(64).save_pretrained(tmp_path)
    char_tokenizer().save_pretrained(tmp_path)
    cfg = config()
    cfg.prompt = PromptConfig(**{**PROMPT, "model_name": str(tmp_path)})
    est = memory.estimate_trial_memory(cfg, synthetic_tasks(side=4))
    learner = EFELearner(cfg.prompt, cfg.agent, cfg.learner)  # loads the folder
    n_all = sum(p.numel() for p in learner.prompt.parameters()) + sum(p.numel() for p in learner.agent.parameters())
    assert est.params == 16 * n_all
