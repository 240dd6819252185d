"""Loading the prompt encoder's checkpoint folder (efe_ray/models/prompt.py): fp32 parameters, the
checkpoint's own tokenizer, tokenizers that cannot encode grids, and a missing model's message."""

from __future__ import annotations

import huggingface_hub.constants
import pytest
import torch

from efe_ray.config import LearnerConfig, PromptConfig
from efe_ray.data.batching import TaskSampler
from efe_ray.data.serialize import prompt_text
from efe_ray.data.synthetic import synthetic_tasks
from efe_ray.learner import EFELearner
from efe_ray.models.prompt import ModelLoadError, QwenHybridPrompt


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
