"""Random streams of test-time adaptation, one per adapted copy.

Which demonstration views a copy trains on at each step depends on the copy's own key alone (the
seed, its task's id and its prompt delta's name: :func:`copy_key`), never on which other tasks
share its group or where the copy sits in it. So a task adapted alone and a task adapted with
fifteen others draw the same views.

The streams are counter-based: the ``n`` picks of step ``t`` are a hash of (key, t, i), so a step
keeps no generator state, reads nothing back from the device, and the same keys give the same picks
on every device. The hash is ``lowbias32`` (Chris Wellons' integer hash: xor-shifts and two odd
multipliers), computed in 32-bit arithmetic on int64 tensors without overflowing them.
"""

from __future__ import annotations

import zlib

import torch

__all__ = ["copy_key", "mix32", "picks"]

MASK = 0xFFFFFFFF
"""The low 32 bits."""


def copy_key(seed: int, task_id: str, delta: str) -> int:
    """The 32-bit key of the copy of ``task_id`` adapted with the prompt delta named ``delta``
    (a search's name), under evaluation seed ``seed``; stable across runs and machines (CRC-32)."""
    return zlib.crc32(f"{seed}/{task_id}/{delta}".encode())


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` (int64) and a 32-bit constant ``c``, without an
    int64 overflow: the high 16 bits of ``x`` meet only the low 16 bits of ``c`` below 2**32."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + ((hi * (c & 0xFFFF)) << 16)) & MASK


def mix32(x: torch.Tensor) -> torch.Tensor:
    """``lowbias32`` of each element (int64 in ``[0, 2**32)``): a bijection of 32-bit integers."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def picks(keys: torch.Tensor, step: int, n: int, count: torch.Tensor) -> torch.Tensor:
    """(M, n) long: the ``n`` view indices copy ``m`` (key ``keys[m]``, (M,) int64) trains on at
    ``step``, each uniform over ``0 .. count[m] - 1`` ((M,) long, its task's real views)."""
    row = mix32(mix32(keys) ^ (step & MASK))  # (M,): the copy's stream at this step
    i = torch.arange(n, device=keys.device)  # (n,)
    h = mix32(row[:, None] ^ i)  # (M, n) uniform 32-bit integers
    return (h * count[:, None]) >> 32  # floor(h / 2**32 * count): exact in int64 (count < 2**31)
