"""The prompt encoder and the grid agent (efe_ray/models/): checkpoint loading and its tokenizer,
fusion, the features-only prompt, padded batches, the canvas, and the speed options."""

from __future__ import annotations

import huggingface_hub.constants
import numpy as np
import pytest
import torch

from efe_ray.config import LearnerConfig, PromptConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.serialize import prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.evaluation.predict import observe
from efe_ray.learner import EFELearner
from efe_ray.models.agent import OUTSIDE, GridAgent, from_canvas, to_canvas
from efe_ray.models.prompt import ModelLoadError, QwenHybridPrompt, attends_causally, load_qwen_body, sdpa_priority

# ------------------------------------------------------------------------------------------------
# Loading a checkpoint folder


def test_local_checkpoint_loads_and_trains(tmp_path, char_tokenizer, tiny_qwen, tiny_agent):
    tok = char_tokenizer()
    tok.padding_side = "left"  # encode_text needs right padding: the loader must set it
    model = tiny_qwen(len(tok))
    model.half().save_pretrained(tmp_path)  # saved in fp16: must come back as fp32 parameters
    tok.save_pretrained(tmp_path)

    prompt = QwenHybridPrompt(PromptConfig(model_name=str(tmp_path), prompt_dim=16))
    assert all(p.dtype == torch.float32 for p in prompt.parameters())
    assert prompt.tokenizer.padding_side == "right"
    enc = prompt.tokenize(["123", "1"], torch.device("cpu"))
    assert enc["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert torch.equal(prompt.qwen.embed_tokens.weight, model.embed_tokens.weight.float())
    task = synthetic_tasks(side=4, seed=0)[0]
    texts = [prompt_text(task.train[:2], task.test[0].input), prompt_text(task.train[:1], task.train[3].input)]
    # The checkpoint's own tokenizer is used as saved: one token per character, newlines kept.
    for text in texts:
        ids = prompt.tokenizer(text, add_special_tokens=False)["input_ids"]
        assert ids == tok(text, add_special_tokens=False)["input_ids"] and len(ids) == len(text)
    out = prompt(texts, torch.randn(2, 15))
    assert out.shape == (2, 16) and torch.isfinite(out).all()

    cfg = LearnerConfig(batch_size=4)
    learner = EFELearner(PromptConfig(model_name=str(tmp_path), prompt_dim=16), tiny_agent(), cfg)
    m = learner.step(TaskSampler([task], cfg, 6).batch(task))
    assert m["qwen_fresh"] == 1.0 and m["qwen_grad_norm"] > 0 and m["skipped"] == 0.0


def test_qwen_style_byte_level_tokenizer_keeps_its_class(tmp_path, tiny_qwen):
    """A byte-level BPE (as real Qwen checkpoints ship) loads through AutoTokenizer unchanged."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tiny_qwen(len(vocab)).save_pretrained(tmp_path)
    fast.save_pretrained(tmp_path)
    prompt = QwenHybridPrompt(PromptConfig(model_name=str(tmp_path), prompt_dim=16))
    assert type(prompt.tokenizer).__name__ == "Qwen2Tokenizer"
    text = "I\n12\nO\n34\n|\nQ\n5"
    assert prompt.tokenizer.decode(prompt.tokenizer(text)["input_ids"]) == text
    assert prompt(["Q\n12", "Q\n3"], torch.zeros(2, 15)).shape == (2, 16)


def test_tokenizer_that_cannot_encode_grids_is_refused(tmp_path, char_tokenizer, tiny_qwen):
    tok = char_tokenizer(characters=tuple("0123456789|IOQ"))  # no "\n": rows would be lost
    tiny_qwen(len(tok)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="cannot encode"):
        QwenHybridPrompt(PromptConfig(model_name=str(tmp_path)))


def test_missing_model_says_how_to_pass_a_local_path(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no retries against the hub
    for name in (str(tmp_path / "no-such-folder"), "no-such-org/no-such-model"):
        with pytest.raises(ModelLoadError) as err:
            QwenHybridPrompt(PromptConfig(model_name=name))
        message = str(err.value)
        assert repr(name) in message
        assert "local folder" in message and "prompt.model_name=" in message and "embedded" in message
    with pytest.raises(ModelLoadError, match="does not exist"):
        QwenHybridPrompt(PromptConfig(model_name=str(tmp_path / "model.gguf")))


# ------------------------------------------------------------------------------------------------
# The prompt


def test_features_only_prompt_has_no_qwen(make_learner):
    learner, sampler = make_learner(prompt={"use_qwen": False})
    prompt = learner.prompt
    assert prompt.qwen is None and prompt.tokenizer is None and prompt.qwen_parameters() == []
    assert all(name.startswith("numeric.") for name, _ in prompt.named_parameters())
    assert [g["name"] for g in learner.optimizer.param_groups] == ["agent"]
    feats = torch.randn(3, 15)
    with torch.no_grad():
        assert torch.equal(prompt(["ignored"] * 3, feats), prompt.numeric(feats))
    m = learner.step(sampler.batch(sampler.tasks[0]))
    assert m["qwen_grad_norm"] == 0.0 and m["qwen_fresh"] == 0.0 and m["agent_grad_norm"] > 0
    prompt_vec, _ = observe(learner, sampler.tasks[1])
    assert prompt_vec.shape == (32,)


def test_fuse_modes(tiny_prompt):
    task = synthetic_tasks(side=4, seed=0)[0]
    texts = [prompt_text(task.train[:2], task.test[0].input), prompt_text(task.train[1:3], task.train[0].input)]
    feats = torch.randn(2, 15, generator=torch.Generator().manual_seed(0))
    outs, parts = {}, {}
    for mode in ("mean", "sum", "gate", "concat"):
        torch.manual_seed(0)  # the same Qwen and feature MLP in every mode
        prompt = QwenHybridPrompt(tiny_prompt(fuse=mode)).eval()
        with torch.no_grad():
            text, num = prompt.encode_text(texts), prompt.numeric(feats)
            out = prompt(texts, feats)
            both = torch.cat([text, num], -1)
            expected = {
                "mean": lambda: 0.5 * (text + num),
                "sum": lambda: text + num,
                "gate": lambda: torch.sigmoid(prompt.gate(both)) * text + (1 - torch.sigmoid(prompt.gate(both))) * num,
                "concat": lambda: prompt.concat(both),
            }[mode]()
        assert out.shape == (2, 32)
        torch.testing.assert_close(out, expected)
        outs[mode], parts[mode] = out, (text, num)
    for mode in outs:
        assert torch.equal(parts[mode][0], parts["mean"][0]) and torch.equal(parts[mode][1], parts["mean"][1])
    modes = list(outs)
    for i, a in enumerate(modes):
        for b in modes[i + 1:]:
            assert not torch.allclose(outs[a], outs[b], atol=1e-4), (a, b)
    lo, hi = torch.minimum(*parts["gate"]), torch.maximum(*parts["gate"])
    assert bool(((outs["gate"] >= lo - 1e-6) & (outs["gate"] <= hi + 1e-6)).all())  # a convex mix


def test_padded_batch_matches_each_text_alone(tiny_prompt):
    """encode_text passes no padding mask to a causal body (right padding: no real token attends
    to a pad): every text of a padded batch gets the embedding and the gradient it gets alone."""
    torch.manual_seed(0)
    model = QwenHybridPrompt(tiny_prompt(num_layers=2, prompt_dim=16)).eval()
    texts = ["I\n12\nO\n21\n|\nQ\n33", "Q\n4567\n0123\n9", "I\n1\nO\n2\n|\nQ\n3"]
    enc = model.tokenize(texts, torch.device("cpu"))
    assert enc["attention_mask"][:, -1].tolist() == [1, 0, 0]  # right-padded, to different lengths

    def grads(out: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        out.sum().backward()
        return [p.grad.clone() for p in model.qwen_parameters()]

    seen = []
    model.qwen.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")),
                                         with_kwargs=True)
    assert model.causal
    batched = model.encode_text(texts)
    assert seen == [None]  # no mask: SDPA may take its fused kernels, and there is no host-side check
    batch_grads = grads(batched)
    alone = torch.cat([model.encode_text([t]) for t in texts])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    for g_batch, g_alone in zip(batch_grads, grads(alone)):
        torch.testing.assert_close(g_batch, g_alone, atol=1e-5, rtol=1e-4)


def test_a_model_that_is_not_causal_gets_the_padding_mask(tiny_prompt):
    cfg = tiny_prompt(num_layers=2, prompt_dim=16)
    body = load_qwen_body(cfg)
    assert attends_causally(body[0]) and not attends_causally(torch.nn.Linear(2, 2))
    body[0].layers[1].self_attn.is_causal = False
    model = QwenHybridPrompt(cfg, body=body)
    assert not model.causal
    seen = []
    model.qwen.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("attention_mask")),
                                         with_kwargs=True)
    texts = ["I\n12\nO\n21\n|\nQ\n33", "Q\n4"]
    model.encode_text(texts)
    assert seen[0].tolist() == model.tokenize(texts, torch.device("cpu"))["attention_mask"].tolist()


def test_a_max_tokens_without_room_for_text_is_refused(tiny_prompt):
    from efe_ray.config import ConfigError

    with pytest.raises(ConfigError, match=r"max_tokens: must be >= 16"):
        tiny_prompt(max_tokens=2)
    enc = QwenHybridPrompt(tiny_prompt(max_tokens=16)).tokenize(["0123456789012345678", "Q"], torch.device("cpu"))
    ids = enc["input_ids"].tolist()
    # <bos>, the last 14 characters (truncation keeps the query end), <eos>; the short text is padded
    assert ids[0] == [1] + [4 + int(c) for c in "56789012345678"] + [2]
    assert ids[1][:3] == [1, 18, 2] and enc["attention_mask"].tolist()[1] == [1, 1, 1] + [0] * 13


def test_sdpa_priority_keeps_every_kernel_as_a_fallback_and_restores_the_flags():
    """prompt.sdpa_backend only reorders SDPA's kernels on CUDA; the public per-kernel switches stay
    on inside the context (the others remain fallbacks) and are as before after it."""
    flags = (torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
             torch.backends.cuda.math_sdp_enabled, torch.backends.cuda.cudnn_sdp_enabled)
    before = [f() for f in flags]
    for first in ("cudnn", "flash", "efficient", "math"):
        with sdpa_priority(first, torch.device("cuda")):
            assert all(f() for f in flags), first
        assert [f() for f in flags] == before
    for first, device in (("auto", torch.device("cuda")), ("flash", torch.device("cpu"))):
        with sdpa_priority(first, device):  # no change on CPU or for "auto"
            assert [f() for f in flags] == before


# ------------------------------------------------------------------------------------------------
# The agent and its canvas


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (6, 6), (6, 1), (1, 6), (2, 4)])
def test_canvas_round_trip(shape):
    grid = np.random.default_rng(sum(shape)).integers(0, 10, size=shape)
    canvas = to_canvas(grid, 6)
    assert canvas.shape == (6, 6) and canvas.dtype == np.int64
    assert (canvas[shape[0]:, :] == OUTSIDE).all() and (canvas[:, shape[1]:] == OUTSIDE).all()
    back = from_canvas(canvas)
    assert back.shape == shape and np.array_equal(back, grid)


def test_canvas_with_another_output_size():
    pair = synthetic_tasks(rules=("crop",), side=6, seed=0)[0].train[0]
    assert pair.input.shape == (6, 6) and pair.output.shape == (3, 3)
    assert np.array_equal(from_canvas(to_canvas(pair.output, 6)), pair.output)
    # Reading a prediction: OUTSIDE inside the extent becomes 0; an empty prediction is 1x1.
    canvas = to_canvas(np.array([[1, 2], [3, 4]]), 6)
    canvas[1, 1] = OUTSIDE
    assert np.array_equal(from_canvas(canvas), [[1, 2], [3, 0]])
    assert np.array_equal(from_canvas(np.full((6, 6), OUTSIDE)), [[0]])


def test_too_big_grid_is_a_clear_error(make_learner):
    with pytest.raises(ValueError, match=r"7x3 does not fit the 6x6 canvas \(agent.canvas\)"):
        to_canvas(np.zeros((7, 3), np.int64), 6)
    big = synthetic_tasks(side=8, seed=0)
    learner, sampler = make_learner(big)
    with pytest.raises(ValueError, match="agent.canvas"):
        learner.step(sampler.batch(big[0]))


def test_agent_output_shape(tiny_agent):
    agent = GridAgent(tiny_agent(), prompt_dim=32)
    canvas = torch.as_tensor(np.stack([to_canvas(np.ones(shape, np.int64), 6) for shape in ((2, 3), (6, 6))]))
    logits = agent(canvas, torch.randn(2, 32))
    assert logits.shape == (2, 6, 6, 11) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="larger than the agent's 6x6"):
        agent(torch.full((1, 7, 7), OUTSIDE), torch.randn(1, 32))


def test_a_smaller_canvas_embeds_every_shared_cell_as_the_full_one(tiny_agent):
    """Each cell's input embedding (class, coordinates, 3x3 neighbourhood, prompt and view) is the
    same on a 4x4 canvas as on the agent's 6x6 one; the logits may differ (the larger canvas adds
    cells to attend to), so only the shapes are compared there."""
    torch.manual_seed(0)
    agent = GridAgent(tiny_agent(), prompt_dim=32).eval()
    grids = [np.arange(6).reshape(2, 3) % 10, np.full((4, 1), 7)]
    prompt, view = torch.randn(2, 32), torch.tensor([0, 5])
    embedded = {}
    with torch.no_grad():
        for side in (6, 4):
            canvas = torch.as_tensor(np.stack([to_canvas(g, side) for g in grids]))
            assert agent(canvas, prompt, view).shape == (2, side, side, 11)
            x = agent._embed(canvas[None], prompt[None], view[None])[0]  # (2, 1+S*S, D)
            embedded[side] = x[:, 1:].reshape(2, side, side, -1)
    torch.testing.assert_close(embedded[4], embedded[6][:, :4, :4], rtol=0, atol=0)


def test_copies_compute_what_each_single_agent_computes(tiny_agent):
    """Copy i of a stacked agent gives copy i's inputs the logits the one-copy agent gives them, and
    a loss on one copy leaves every other copy's gradients at zero."""
    torch.manual_seed(1)
    agent = GridAgent(tiny_agent(passes=2), prompt_dim=8)
    stacked = agent.stacked(3)
    with torch.no_grad():
        for p in stacked.parameters():
            p.add_(0.01 * torch.randn_like(p))  # the copies drift apart, as in adaptation
    canvas = torch.randint(0, 11, (3, 2, 5, 5))
    prompt, view = torch.randn(3, 2, 8), torch.randint(0, 8, (3, 2))
    out = stacked(canvas, prompt, view)
    single = GridAgent(tiny_agent(passes=2), prompt_dim=8)
    with torch.no_grad():
        for (name, mine), theirs in zip(stacked.named_parameters(), single.parameters()):
            if name == "coord_emb":
                theirs.copy_(mine[:, 1:2])
            elif name == "stem":
                theirs.copy_(mine.view(3, -1, *mine.shape[1:])[1])
            else:
                theirs.copy_(mine[1:2])
        torch.testing.assert_close(single(canvas[1], prompt[1], view[1]), out[1].detach(), rtol=1e-4, atol=1e-5)
    out[0].sum().backward()
    for name, p in stacked.named_parameters():
        grad = p.grad.transpose(0, 1) if name == "coord_emb" else p.grad.view(3, -1) if name == "stem" else p.grad
        assert grad[1:].abs().max() == 0, name


# ------------------------------------------------------------------------------------------------
# learner.compile: it changes how the step runs, never what it computes


def weights(learner: EFELearner) -> list[torch.Tensor]:
    return [t.detach() for t in list(learner.prompt.state_dict().values()) + list(learner.agent.state_dict().values())]


@pytest.mark.slow
def test_compiled_learner_matches_eager(make_learner):
    """Every Qwen layer, the agent and the EFE loss compiled (inductor on CPU): the same losses and
    weights as eager, step for step, through fresh and cached Qwen steps; the agent's forward does
    run through the compiler; checkpoints load into an eager learner."""
    tasks = synthetic_tasks(side=4, seed=0)
    runs = []
    for compiled in (False, True):
        learner, sampler = make_learner(tasks, compile=compiled, seed=0, cache_every=2)
        traced = []
        learner.agent.register_forward_pre_hook(lambda mod, args: traced.append(torch.compiler.is_compiling()))
        metrics = [learner.step(sampler.batch(tasks[i % 2]), np.full(32, 0.01, np.float32)) for i in range(4)]
        runs.append((learner, metrics, traced))
    (eager, m_eager, t_eager), (comp, m_comp, t_comp) = runs
    assert t_comp and all(t_comp) and not any(t_eager)
    for a, b in zip(m_eager, m_comp):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["qwen_grad_norm"] == pytest.approx(a["qwen_grad_norm"], rel=1e-3, abs=1e-6)
    moved = max(float((x - y).abs().max()) for x, y in zip(weights(eager), weights(make_learner(tasks, seed=0)[0])))
    assert moved > 5e-3
    for x, y in zip(weights(eager), weights(comp)):  # fused kernels round differently: Adam makes that ~1% of a step
        torch.testing.assert_close(y, x, rtol=1e-3, atol=2e-4)
    fresh, _ = make_learner(tasks, seed=1)
    fresh.load_state_dict(comp.state_dict())  # no "_orig_mod." prefixes
    assert all(torch.equal(x, y) for x, y in zip(weights(fresh), weights(comp)))

