"""Shared fixtures: tiny model configs, a learner factory, tokenizers, a tiny Qwen2 body, a walk
over the tensors of a state dict, and the checkpoints the evaluation and export tests read.
Everything here is CPU-only.

The factories (functions) let a test pass its own overrides; they are session-scoped because they
hold no state and take milliseconds. The checkpoints (``tiny_checkpoint``, ``source`` and
``exported``) take a few learner steps to make: they are module-scoped, built once by each test
file that uses them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from efe_ray import checkpoint as ckpt
from efe_ray import export as exp
from efe_ray.config import AgentConfig, ExperimentConfig, LearnerConfig, PromptConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.serialize import CHARACTERS
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.data.task import Task
from efe_ray.learner import EFELearner

from helpers_export import AGENT_LR

# The tests' models are tiny: a step is dominated by per-operator overhead, which a second thread
# does not shorten and, where the cores are shared, OpenMP's waiting lengthens (a tiny learner step
# measured 57 ms with one thread and 2.2 s with two on a loaded 2-core machine).
torch.set_num_threads(1)

TINY_PROMPT = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, prompt_dim=32)
"""A one-layer embedded Qwen2 with a 32-wide prompt."""
TINY_AGENT = dict(canvas=6, d_model=32, num_layers=1, num_heads=2)
"""A one-layer agent on a 6x6 canvas."""


@pytest.fixture(scope="session")
def tiny_prompt():
    """``(**overrides) -> PromptConfig``: :data:`TINY_PROMPT` with overrides."""
    return lambda **kw: PromptConfig(**{**TINY_PROMPT, **kw})


@pytest.fixture(scope="session")
def tiny_agent():
    """``(**overrides) -> AgentConfig``: :data:`TINY_AGENT` with overrides."""
    return lambda **kw: AgentConfig(**{**TINY_AGENT, **kw})


@pytest.fixture(scope="session")
def make_learner(tiny_prompt, tiny_agent):
    """``(tasks=None, prompt=None, agent=None, **learner_kw) -> (EFELearner, TaskSampler)``.

    Tiny models; ``prompt`` / ``agent`` are override dicts, ``learner_kw`` LearnerConfig fields.
    The default tasks are the three synthetic rules on 4x4 grids.
    """

    def make(tasks=None, prompt=None, agent=None, **learner_kw):
        tasks = tasks if tasks is not None else synthetic_tasks(side=4, num_train=4, num_test=1, seed=0)
        pcfg, acfg, lcfg = tiny_prompt(**(prompt or {})), tiny_agent(**(agent or {})), LearnerConfig(**learner_kw)
        return EFELearner(pcfg, acfg, lcfg), TaskSampler(tasks, lcfg, acfg.canvas)

    return make


@pytest.fixture(scope="session")
def char_tokenizer():
    """``(characters=CHARACTERS) -> PreTrainedTokenizerFast``: one WordLevel token per character,
    with pad/eos/unk, as a checkpoint with its own character tokenizer would ship it."""

    def make(characters=CHARACTERS):
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(characters)}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")

    return make


@pytest.fixture(scope="session")
def tiny_qwen():
    """``(vocab_size) -> Qwen2Model``: one layer, width 32, seeded."""

    def make(vocab_size: int):
        from transformers import Qwen2Config, Qwen2Model

        torch.manual_seed(0)
        return Qwen2Model(Qwen2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                      max_position_embeddings=1024, pad_token_id=0))

    return make


@pytest.fixture(scope="session")
def state_tensors():
    """``(obj) -> {path: tensor}`` for every tensor inside nested dicts, lists and tuples."""

    def walk(obj, prefix=""):
        if isinstance(obj, torch.Tensor):
            yield prefix, obj
        elif isinstance(obj, dict):
            for k, v in obj.items():
                yield from walk(v, f"{prefix}/{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                yield from walk(v, f"{prefix}/{i}")

    return lambda obj: dict(walk(obj))


def _stepped(pcfg: PromptConfig, acfg: AgentConfig, lcfg: LearnerConfig, tasks: list[Task]) -> EFELearner:
    """A learner after three steps on ``tasks`` in turn; the caller's torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        learner, sampler = EFELearner(pcfg, acfg, lcfg), TaskSampler(tasks, lcfg, acfg.canvas)
        for i in range(3):
            learner.step(sampler.batch(tasks[i % len(tasks)]))
    return learner


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, tiny_prompt, tiny_agent) -> tuple[Path, list[Task]]:
    """A checkpoint of a tiny learner (8x8 canvas) trained a few steps on synthetic tasks: (folder, trained tasks)."""
    pcfg, acfg, lcfg = tiny_prompt(), tiny_agent(canvas=8), LearnerConfig(batch_size=2)
    tasks = synthetic_tasks(side=4, seed=0, prefix="tr")
    learner = _stepped(pcfg, acfg, lcfg, tasks)
    folder = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001"
    ckpt.save(folder, learner.state_dict(), ExperimentConfig(prompt=pcfg, agent=acfg, learner=lcfg), tasks)
    return folder, tasks


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_prompt, tiny_agent):
    """(trial checkpoint folder, trained tasks, the learner that wrote it): a 256-wide two-layer agent
    (6.2 MiB of fp32 weights) with a stand-in policy, as a trial of ``python -m efe_ray.tune`` saves it."""
    pcfg, acfg, lcfg = tiny_prompt(), tiny_agent(d_model=256, num_layers=2), LearnerConfig(batch_size=2)
    tasks = synthetic_tasks(side=4, seed=0, prefix="tr")
    learner = _stepped(pcfg, acfg, lcfg, tasks)
    learner.set_learning_rates(agent_lr=AGENT_LR)
    folder = tmp_path_factory.mktemp("trial") / "checkpoint_000003"
    policy = {"module": "stand-in", "weights": {"w": torch.arange(6.0).reshape(2, 3)}}
    ckpt.save(folder, learner.state_dict(), ExperimentConfig(prompt=pcfg, agent=acfg, learner=lcfg), tasks,
              env_stats={"running_loss": 1.5}, policy=policy)
    return folder, tasks, learner


@pytest.fixture(scope="module")
def exported(source, tmp_path_factory):
    """``dtype -> exported folder`` (bf16 in 1 MiB shards, fp32 in 4 MiB shards), each made once."""
    made: dict[str, Path] = {}

    def get(dtype: str) -> Path:
        if dtype not in made:
            out = tmp_path_factory.mktemp("exported") / dtype
            exp.export(source[0], out, dtype, 1 if dtype == "bf16" else 4)
            made[dtype] = out
        return made[dtype]

    return get
