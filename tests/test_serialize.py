"""Tests for efe_ray.data.serialize: grid text, prompt text and the character tokenizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from efe_ray.data.serialize import grid_to_text, grid_tokenizer, prompt_text, text_to_grid
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


@pytest.fixture(scope="module")
def tok():
    return grid_tokenizer()


def test_vocabulary(tok):
    assert tok.vocab_size == 19 == len(tok)
    assert tok.pad_token_id == 0 and (tok.padding_side, tok.truncation_side) == ("right", "left")
    vocab = tok.get_vocab()
    assert [vocab[t] for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]
    assert [vocab[str(d)] for d in range(10)] == list(range(4, 14))
    assert [vocab[c] for c in ("\n", "|", "I", "O", "Q")] == [14, 15, 16, 17, 18]


def test_encode_decode_example(tok):
    assert tok.encode("01\nQ") == [1, 4, 5, 14, 18, 2]
    assert tok.encode("x") == [1, 3, 2]
    assert tok.encode("") == [1, 2]
    assert tok.decode([1, 4, 5, 14, 18, 2, 0, 0], skip_special_tokens=True) == "01\nQ"
    assert tok.decode(torch.tensor([1, 13, 2]), skip_special_tokens=True) == "9"
    # Characters outside the vocabulary, ASCII or not, become <unk>.
    assert tok.encode("1a\n", add_special_tokens=False) == [5, 3, 14] == tok.encode("1é\n", add_special_tokens=False)


@SETTINGS
@given(st.text(alphabet="0123456789\n|IOQ", max_size=200))
def test_decode_encode_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == len(text) + 2
    assert tok.decode(ids, skip_special_tokens=True) == text


@SETTINGS
@given(st.lists(grids(max_side=6), min_size=1, max_size=5))
def test_prompt_decodes_back(tok, gs):
    demos = [Pair(g, g) for g in gs[:-1]]
    text = prompt_text(demos, gs[-1])
    ids = tok.encode(text)
    assert tok.decode(ids, skip_special_tokens=True) == text and tok.unk_token_id not in ids


def test_batches_pad_right_with_masks(tok):
    batch = tok(["01", "0"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[1, 4, 5, 2], [1, 4, 2, 0]]
    assert mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    np_batch = tok(["1", "12"], padding=True, return_tensors="np")
    assert np_batch["input_ids"].dtype == np.int64 and np_batch["input_ids"].tolist() == [[1, 5, 2, 0], [1, 5, 6, 2]]


def test_truncation_keeps_bos_the_end_and_eos(tok):
    batch = tok(["0123456", "9"], padding=True, truncation=True, max_length=5, return_tensors="pt")
    assert batch["input_ids"].tolist() == [[1, 8, 9, 10, 2], [1, 13, 2, 0, 0]]  # "456" kept of "0123456"
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    text = prompt_text(_demos() * 20, as_grid([[1, 2], [3, 4]]))
    ids = tok([text], truncation=True, max_length=16)["input_ids"][0]
    assert len(ids) == 16 and tok.decode(ids, skip_special_tokens=True).endswith("Q\n12\n34")


def test_save_and_load_through_auto_tokenizer(tok, tmp_path):
    """The saved grid tokenizer loads as a checkpoint's would, and encodes as before."""
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    texts = [prompt_text(_demos(), as_grid([[0, 6, 7]])), "Q\n1"]
    for kwargs in ({}, {"truncation": True, "max_length": 8}):
        assert loaded(texts, padding=True, **kwargs)["input_ids"] == tok(texts, padding=True, **kwargs)["input_ids"]
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.padding_side, loaded.truncation_side) == ("right", "left")
