"""Text serialisation of grids and prompts, and a tiny character tokenizer.

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
    :class:`GridTokenizer` maps each character to one id. Vocabulary: ``<pad>``=0, ``<bos>``=1,
    ``<eos>``=2, ``<unk>``=3, then ``"0"``..``"9"`` (4..13), ``"\\n"`` (14), ``"|"`` (15),
    ``"I"`` (16), ``"O"`` (17), ``"Q"`` (18). Calling it mirrors a Hugging Face tokenizer
    (``tok(texts, max_length=..., return_tensors="pt")``), so callers can use either it or a
    checkpoint's own tokenizer on the same prompt text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from efe_ray.data.task import MAX_SIDE, Pair, as_grid

TOKENIZER_FILE = "grid_tokenizer.json"
"""The file :meth:`GridTokenizer.save_pretrained` writes."""

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


class GridTokenizer:
    """A fixed character-level tokenizer for grid and prompt text (19 ids, see module docstring)."""

    pad_token = "<pad>"
    bos_token = "<bos>"
    eos_token = "<eos>"
    unk_token = "<unk>"
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    unk_token_id = 3
    padding_side = "right"

    def __init__(self) -> None:
        self._tokens: tuple[str, ...] = SPECIAL_TOKENS + CHARACTERS
        self._char_to_id: dict[str, int] = {c: i for i, c in enumerate(self._tokens) if i >= len(SPECIAL_TOKENS)}
        self._byte_to_id = np.full(256, self.unk_token_id, dtype=np.int64)  # ASCII byte -> id
        for c, i in self._char_to_id.items():
            self._byte_to_id[ord(c)] = i

    @property
    def vocab_size(self) -> int:
        """Number of ids (19)."""
        return len(self._tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id, as Hugging Face tokenizers offer."""
        return {t: i for i, t in enumerate(self._tokens)}

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``."""
        return list(range(len(SPECIAL_TOKENS)))

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """``[<bos>] + one id per character + [<eos>]``; characters outside the vocabulary -> ``<unk>``."""
        return self._ids(text, add_special_tokens).tolist()

    def _ids(self, text: str, add_special_tokens: bool = True) -> np.ndarray:
        """:meth:`encode` as an int64 array."""
        if text.isascii():  # one table lookup per byte; prompt texts are always ASCII
            ids = self._byte_to_id[np.frombuffer(text.encode("ascii"), dtype=np.uint8)]
        else:
            ids = np.array([self._char_to_id.get(c, self.unk_token_id) for c in text], dtype=np.int64)
        if add_special_tokens:
            ids = np.concatenate([[self.bos_token_id], ids, [self.eos_token_id]])
        return ids

    def decode(self, ids: Sequence[int] | Any, *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, array or 1-D tensor); special tokens are dropped by default."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        out: list[str] = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} is outside the vocabulary 0..{self.vocab_size - 1}")
            if i < len(SPECIAL_TOKENS):
                if not skip_special_tokens:
                    out.append(self._tokens[i])
                continue
            out.append(self._tokens[i])
        return "".join(out)

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        max_length: int | None = None,
        return_tensors: str | None = "pt",
    ) -> dict[str, Any]:
        """Encode a batch, right-padded to its longest sequence.

        Args:
            texts: one text or a list of texts.
            max_length: if given, a longer sequence keeps ``<bos>`` and its *last*
                ``max_length - 1`` tokens (left truncation: the query sits at the end).
            return_tensors: ``"pt"`` (torch long tensors), ``"np"`` (int64 arrays) or ``None``
                (lists of lists).

        Returns:
            ``{"input_ids": (B, T), "attention_mask": (B, T)}``; the mask is 1 on real tokens.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        seqs: list[np.ndarray] = []
        for text in texts:
            ids = self._ids(text)
            if max_length is not None and len(ids) > max_length:
                ids = np.concatenate([[self.bos_token_id], ids[len(ids) - (max_length - 1):]])  # bos + the end
            seqs.append(ids)
        width = max((len(s) for s in seqs), default=0)
        input_ids = np.full((len(seqs), width), self.pad_token_id, dtype=np.int64)  # (B, T), right-padded
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # (B, T)
        for i, ids in enumerate(seqs):
            input_ids[i, : len(ids)] = ids
            mask[i, : len(ids)] = 1
        if return_tensors is None:
            return {"input_ids": input_ids.tolist(), "attention_mask": mask.tolist()}
        if return_tensors == "np":
            return {"input_ids": input_ids, "attention_mask": mask}
        if return_tensors == "pt":
            import torch

            return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str]:
        """Write ``grid_tokenizer.json`` into ``directory`` (created if needed); returns its path."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        file = path / TOKENIZER_FILE
        payload = {"type": "GridTokenizer", "version": 1, "vocab": list(self._tokens)}
        file.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        return (str(file),)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> GridTokenizer:
        """Load a tokenizer saved by :meth:`save_pretrained` (the vocabulary must match this one)."""
        file = Path(directory) / TOKENIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {directory}")
        payload = json.loads(file.read_text(encoding="utf-8"))
        tok = cls()
        if payload.get("type") != "GridTokenizer" or tuple(payload.get("vocab", ())) != tok._tokens:
            raise ValueError(f"{file} does not hold this GridTokenizer's vocabulary")
        return tok

    def __repr__(self) -> str:
        return f"GridTokenizer(vocab_size={self.vocab_size})"
