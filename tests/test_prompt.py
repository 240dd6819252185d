"""The prompt encoder (efe_ray/models/prompt.py): the features-only prompt, fusion, padded batches,
the padding mask of a non-causal body, max_tokens, and the SDPA kernel order."""

from __future__ import annotations

import pytest
import torch

from efe_ray.data.serialize import prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.evaluation.predict import observe
from efe_ray.models.prompt import QwenHybridPrompt, attends_causally, load_qwen_body, sdpa_priority


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
    # no mask for any layer: SDPA may take its fused kernels, and transformers builds none (no host-side check)
    assert seen == [{"full_attention": None}]
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
