"""Tests for efe_ray.data.serialize: grid text, prompt text and the character tokenizer."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from efe_ray.data.serialize import (
    TOKENIZER_FILE,
    GridTokenizer,
    grid_to_text,
    prompt_text,
    text_to_grid,
)
from efe_ray.data.task import Pair, as_grid

from strategies import SETTINGS, grids


# ---------------------------------------------------------------------- grid text


def test_grid_to_text_example():
    assert grid_to_text(as_grid([[0, 1, 2], [3, 4, 0]])) == "012\n340"
    assert grid_to_text(np.array([[7]])) == "7"


@SETTINGS
@given(grids())
def test_grid_text_round_trip(grid):
    text = grid_to_text(grid)
    assert len(text.split("\n")) == grid.shape[0]
    back = text_to_grid(text)
    assert back.dtype == np.int64 and back.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(back, grid)
    assert grid_to_text(back) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("01\n2", "widths"),
        ("01\n", "empty"),
        ("\n01", "empty"),
        ("0a", "non-digit"),
        ("0 1", "non-digit"),
        ("1" * 31, "limit"),
    ],
)
def test_text_to_grid_errors(text, message):
    with pytest.raises(ValueError, match=message):
        text_to_grid(text)


def test_text_to_grid_max_side_none():
    assert text_to_grid("1" * 31, max_side=None).shape == (1, 31)


def test_grid_to_text_rejects_bad_grids():
    for bad in (np.array([1, 2]), np.array([[10]]), np.array([[-1]]), np.zeros((0, 3), dtype=np.int64)):
        with pytest.raises(ValueError):
            grid_to_text(bad)


# ---------------------------------------------------------------------- prompt text


def _demos() -> list[Pair]:
    return [
        Pair(as_grid([[1, 2], [3, 4]]), as_grid([[4, 3], [2, 1]])),
        Pair(as_grid([[5]]), as_grid([[5, 5]])),
    ]


def test_prompt_text_exact():
    text = prompt_text(_demos(), as_grid([[0, 6, 7]]))
    assert text == "I\n12\n34\nO\n43\n21\n|\nI\n5\nO\n55\n|\nQ\n067"


def test_prompt_text_no_demos():
    assert prompt_text([], as_grid([[1], [2]])) == "Q\n1\n2"


def test_query_output_cannot_leak():
    secret = as_grid([[9, 8, 9, 8, 9, 8, 9]])  # a pattern no other grid here contains
    query = Pair(as_grid([[0, 6, 7]]), secret)
    # The signature has no slot for an output.
    assert list(inspect.signature(prompt_text).parameters) == ["demos", "query"]
    # Passing the whole pair is refused rather than silently serialised.
    with pytest.raises(TypeError):
        prompt_text(_demos(), query)  # type: ignore[arg-type]
    text = prompt_text(_demos(), query.input)
    assert grid_to_text(secret) not in text
    assert "9" not in text and "8" not in text


def test_prompt_text_needs_demo_outputs():
    with pytest.raises(ValueError):
        prompt_text([Pair(as_grid([[1]]), None)], as_grid([[1]]))


# ---------------------------------------------------------------------- tokenizer


def test_vocabulary():
    tok = GridTokenizer()
    assert tok.vocab_size == 19 == len(tok)
    assert tok.pad_token_id == 0
    vocab = tok.get_vocab()
    assert [vocab[t] for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]
    assert [vocab[str(d)] for d in range(10)] == list(range(4, 14))
    assert [vocab[c] for c in ("\n", "|", "I", "O", "Q")] == [14, 15, 16, 17, 18]


def test_encode_decode_example():
    tok = GridTokenizer()
    assert tok.encode("01\nQ") == [1, 4, 5, 14, 18, 2]
    assert tok.encode("x") == [1, 3, 2]
    assert tok.decode([1, 4, 5, 14, 18, 2, 0, 0]) == "01\nQ"
    assert tok.decode(torch.tensor([1, 13, 2])) == "9"


@SETTINGS
@given(st.text(alphabet="0123456789\n|IOQ", max_size=200))
def test_decode_encode_round_trip(text):
    tok = GridTokenizer()
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.decode(ids) == text


@SETTINGS
@given(st.lists(grids(max_side=6), min_size=1, max_size=5))
def test_prompt_decodes_back(gs):
    tok = GridTokenizer()
    demos = [Pair(g, g) for g in gs[:-1]]
    text = prompt_text(demos, gs[-1])
    assert tok.decode(tok.encode(text)) == text
    assert tok.unk_token_id not in tok.encode(text)


def test_call_pads_right_with_masks():
    tok = GridTokenizer()
    batch = tok(["01", "0"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[1, 4, 5, 2], [1, 4, 2, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_call_truncation_keeps_bos_and_end():
    tok = GridTokenizer()
    batch = tok(["0123456", "9"], max_length=5)
    assert batch["input_ids"].shape == (2, 5)
    # bos, then the last 4 tokens of [bos 0 1 2 3 4 5 6 eos]: "5", "6"... -> 4 5 6 eos
    assert batch["input_ids"][0].tolist() == [1, 8, 9, 10, 2]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1]
    assert batch["input_ids"][1].tolist() == [1, 13, 2, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert tok.decode(batch["input_ids"][0]) == "456"


def test_call_truncation_keeps_query():
    tok = GridTokenizer()
    demos = _demos() * 20
    text = prompt_text(demos, as_grid([[1, 2], [3, 4]]))
    ids = tok([text], max_length=16)["input_ids"][0]
    assert len(ids) == 16
    assert tok.decode(ids).endswith("Q\n12\n34")


def test_unknown_characters_and_shortest_truncation():
    tok = GridTokenizer()
    unk = tok.unk_token_id
    # The byte-table path (ASCII) and the character path (other text) agree on unknowns.
    assert tok.encode("1a\n", add_special_tokens=False) == [5, unk, 14]
    assert tok.encode("1é\n", add_special_tokens=False) == [5, unk, 14]
    assert tok.encode("") == [tok.bos_token_id, tok.eos_token_id]
    batch = tok(["0123", "Q"], max_length=1, return_tensors=None)
    assert batch == {"input_ids": [[1], [1]], "attention_mask": [[1], [1]]}
    assert tok(["0"], return_tensors="pt")["input_ids"].dtype == torch.long


def test_call_other_return_types():
    tok = GridTokenizer()
    np_batch = tok("01", return_tensors="np")
    assert np_batch["input_ids"].dtype == np.int64 and np_batch["input_ids"].shape == (1, 4)
    lists = tok(["1", "12"], return_tensors=None)
    assert lists["input_ids"] == [[1, 5, 2, 0], [1, 5, 6, 2]]
    with pytest.raises(ValueError):
        tok("1", return_tensors="tf")
    with pytest.raises(ValueError):
        tok("1", max_length=0)


def test_save_load_round_trip(tmp_path):
    tok = GridTokenizer()
    (path,) = tok.save_pretrained(tmp_path / "tok")
    assert path.endswith(TOKENIZER_FILE)
    loaded = GridTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded.encode("I\n1\nO\n2\n|\nQ\n3") == tok.encode("I\n1\nO\n2\n|\nQ\n3")
    with pytest.raises(FileNotFoundError):
        GridTokenizer.from_pretrained(tmp_path / "missing")


# ---------------------------------------------------------------------- a Hugging Face tokenizer


def test_hf_tokenizer_reads_prompt_text(tmp_path):
    """A checkpoint's own (HF) tokenizer, saved and reloaded via AutoTokenizer, reads prompt text."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    vocab = GridTokenizer().get_vocab()
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)

    text = prompt_text(_demos(), as_grid([[0, 6, 7]]))
    batch = hf([text], return_tensors="pt")
    ids = batch["input_ids"][0].tolist()
    assert len(ids) > 0
    assert hf.unk_token_id not in ids
    # Same characters, same ids as the grid tokenizer (which adds bos/eos around them).
    assert ids == GridTokenizer().encode(text, add_special_tokens=False)
    assert batch["attention_mask"].shape == batch["input_ids"].shape
