"""Text serialisation of grids and prompts, and the character tokenizer of the embedded model.

Grid text
    A grid is written row by row, one digit per cell, rows joined by ``"\\n"`` and no trailing
    newline: ``[[0, 1, 2], [3, 4, 0]]`` becomes ``"012\\n340"``.

Prompt text
    What a prompt encoder reads for one query. For every demonstration pair, in order::

        I
        <input grid text>
        O
        <output grid text>
        |

    (that is ``"I\\n" + in + "\\nO\\n" + out + "\\n|\\n"``), followed by ``"Q\\n" + query``.
    For one demo ``[[1]] -> [[2]]`` and query ``[[3, 4]]`` the text is
    ``"I\\n1\\nO\\n2\\n|\\nQ\\n34"``. The query *output* is never part of a prompt:
    :func:`prompt_text` takes only the query input grid.

Tokenizer
    :func:`grid_tokenizer` maps each character to one id: ``<pad>``=0, ``<bos>``=1, ``<eos>``=2,
    ``<unk>``=3, then ``"0"``..``"9"`` (4..13), ``"\\n"`` (14), ``"|"`` (15), ``"I"`` (16), ``"O"``
    (17), ``"Q"`` (18). It is a Hugging Face tokenizer (``tokenizers``' WordLevel model), so the
    embedded model and a checkpoint's own tokenizer are called the same way on the same text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from efe_ray.data.task import MAX_SIDE, Pair, as_grid

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Special tokens, ids 0..3."""
CHARACTERS: tuple[str, ...] = tuple("0123456789") + ("\n", "|", "I", "O", "Q")
"""Ordinary characters, ids 4..18."""


# ---------------------------------------------------------------------- grids


def grid_to_text(grid: np.ndarray) -> str:
    """Write an ``(H, W)`` grid of colours 0..9 as digit rows joined by ``"\\n"``."""
    arr = as_grid(grid)
    h = arr.shape[0]
    rows = np.concatenate([arr.astype(np.uint8) + ord("0"), np.full((h, 1), ord("\n"), np.uint8)], axis=1)
    return rows.tobytes()[:-1].decode("ascii")  # (H, W + 1) characters, less the last newline


def text_to_grid(text: str, *, max_side: int | None = MAX_SIDE) -> np.ndarray:
    """Parse :func:`grid_to_text` output back into an ``(H, W)`` int64 array.

    The text must be exactly ``H`` non-empty rows of ``W`` digits joined by ``"\\n"`` (no
    leading/trailing newline or spaces). ``max_side`` bounds ``H`` and ``W`` (``None``: no bound).

    Raises:
        ValueError: naming the problem, if the text is not a grid.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string, got {type(text).__name__}")
    if text == "":
        raise ValueError("empty text is not a grid")
    rows = text.split("\n")
    for i, row in enumerate(rows):
        if row == "":
            raise ValueError(f"row {i} is empty (stray or trailing newline?) in {text!r}")
        bad = [c for c in row if c not in "0123456789"]
        if bad:
            raise ValueError(f"row {i} holds a non-digit character {bad[0]!r}: {row!r}")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"rows have different widths {sorted(widths)}; a grid must be rectangular")
    h, w = len(rows), widths.pop()
    if max_side is not None and (h > max_side or w > max_side):
        raise ValueError(f"grid is {h}x{w}, larger than the {max_side}x{max_side} limit")
    grid = np.array([[ord(c) - 48 for c in row] for row in rows], dtype=np.int64)  # (H, W)
    return np.ascontiguousarray(grid)


def prompt_text(demos: Sequence[Pair], query: np.ndarray) -> str:
    """The prompt for one query: every demo as ``I/in/O/out/|`` then ``"Q\\n" + query``.

    Args:
        demos: demonstration pairs; every output must be known.
        query: the query *input* grid only (a :class:`Pair` is refused, so a query output can
            never leak into the prompt).
    """
    if isinstance(query, Pair):
        raise TypeError("prompt_text takes the query input grid, not a Pair (its output must not leak)")
    parts: list[str] = []
    for i, demo in enumerate(demos):
        if not isinstance(demo, Pair):
            raise TypeError(f"demo {i} is a {type(demo).__name__}, expected a Pair")
        if demo.output is None:
            raise ValueError(f"demo {i} has no output; demonstrations must be answered")
        parts.append("I\n" + grid_to_text(demo.input) + "\nO\n" + grid_to_text(demo.output) + "\n|\n")
    parts.append("Q\n" + grid_to_text(query))
    return "".join(parts)


# ---------------------------------------------------------------------- tokenizer


def grid_tokenizer():
    """The embedded model's tokenizer: ``tokenizers``' WordLevel model, one id per character, in a
    ``transformers.PreTrainedTokenizerFast`` (see the module docstring for the vocabulary).

    Every text becomes ``<bos>`` + one id per character + ``<eos>``; a character outside the
    vocabulary becomes ``<unk>``. Batches are padded on the right; a text longer than
    ``max_length`` loses its *start* (left truncation), keeping ``<bos>``, the query at the end
    and ``<eos>``. ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` round-trip it, so an
    embedded model and a loaded checkpoint take the same tokenizer path.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # every character a word
    core.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    core.decoder = decoders.Fuse()  # decode without spaces between characters
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="right", truncation_side="left")
