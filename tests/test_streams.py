"""Adaptation's random streams (efe_ray/evaluation/streams.py): the hash against a slow pure-Python
reference, picks that are uniform over each copy's own views, and a copy's draws that depend on its
key alone, never on the other copies of its group."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from efe_ray.evaluation.streams import copy_key, mix32, picks

M32 = 0xFFFFFFFF


def lowbias32(x: int) -> int:
    """The reference: Chris Wellons' lowbias32 in Python integers."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & M32
    x ^= x >> 15
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def reference_picks(keys: list[int], step: int, n: int, count: list[int]) -> list[list[int]]:
    return [[(lowbias32(lowbias32(lowbias32(k) ^ step) ^ i) * c) >> 32 for i in range(n)]
            for k, c in zip(keys, count)]


def test_the_hash_is_lowbias32_on_every_32_bit_value_it_meets():
    rng = np.random.default_rng(0)
    xs = [0, 1, 2**16 - 1, 2**16, 2**31 - 1, 2**31, M32, *rng.integers(0, 2**32, 2000, dtype=np.int64).tolist()]
    got = mix32(torch.tensor(xs, dtype=torch.int64)).tolist()
    assert got == [lowbias32(x) for x in xs]
    assert all(0 <= g <= M32 for g in got)


def test_picks_match_the_reference_and_stay_within_each_copys_views():
    keys, count = [copy_key(0, "a", "zero"), 7, M32], [16, 1, 5]
    for step in (0, 1, 399, 2**32 + 5):
        got = picks(torch.tensor(keys), step, 9, torch.tensor(count))
        assert got.dtype == torch.int64 and got.shape == (3, 9)
        assert got.tolist() == reference_picks(keys, step & M32, 9, count)
        assert (got >= 0).all() and (got < torch.tensor(count)[:, None]).all()


def test_picks_are_uniform_over_the_views():
    """5,000 steps of 16 picks among 7 views: every view's share within 3% of 1/7, and successive
    steps do not repeat."""
    key = torch.tensor([copy_key(3, "t", "zero")])
    draws = torch.cat([picks(key, t, 16, torch.tensor([7]))[0] for t in range(5000)])
    share = torch.bincount(draws, minlength=7).float() / len(draws)
    assert (share - 1 / 7).abs().max() < 0.03 / 7, share
    rows = draws.view(5000, 16)
    assert (rows[1:] == rows[:-1]).all(1).sum() == 0


def test_a_copys_draws_depend_on_its_key_alone():
    keys = torch.tensor([copy_key(0, t, "zero") for t in ("a", "b", "c")])
    count = torch.tensor([16, 8, 12])
    for step in range(20):
        group = picks(keys, step, 4, count)
        for m in range(3):  # the same copy alone, and placed elsewhere in another group
            assert torch.equal(picks(keys[m: m + 1], step, 4, count[m: m + 1])[0], group[m])
            assert torch.equal(picks(keys.flip(0), step, 4, count.flip(0))[2 - m], group[m])
    other = picks(torch.tensor([copy_key(1, "a", "zero")]), 0, 64, torch.tensor([16]))[0]
    assert not torch.equal(other, picks(keys[:1], 0, 64, count[:1])[0])  # the seed moves the stream


def test_copy_keys_differ_by_seed_task_and_delta_and_not_by_process():
    keys = {copy_key(s, t, d) for s in (0, 1) for t in ("a", "b") for d in ("zero", "policy")}
    assert len(keys) == 8 and all(0 <= k <= M32 for k in keys)
    code = "from efe_ray.evaluation.streams import copy_key; print(copy_key(0, '007bbfc7', 'zero'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert outs == {str(copy_key(0, "007bbfc7", "zero"))}  # not Python's salted hash()
