"""Training views drawn and built on the device, from a :class:`~efe_ray.data.store.TaskStore`.

The same views as the host's :class:`~efe_ray.data.batching.TaskSampler` makes, for many at once
and without leaving the device:

- :func:`draw_views`: for each view (a task row), a query pair uniformly among the task's known
  pairs, its demonstrations a uniformly random ordered choice of up to ``MAX_DEMOS`` of the others,
  a D8 transform uniformly from 0..7 and a colour permutation fixing 0 (where augmenting): a
  uniformly random one, or with colour versions (``learner.colour_versions``) a version drawn
  uniformly and its task's permutation gathered from a (num_tasks, V, 11) table on the device;
- :func:`cells`: the colour class of cell (i, j) of a transformed grid: the D8 transform as an
  index gather into the stored grid, the colour permutation as a lookup table;
- :func:`view_tensors`: canvases, targets, loss and target masks and the 15 features, as
  :meth:`Batch.tensors <efe_ray.data.batching.Batch.tensors>` builds them;
- :func:`prompt_tokens`: the token ids of each view's prompt text (efe_ray/data/serialize.py) for a
  character-level tokenizer, built from the grids: the text is never written.

tests/test_device_views.py checks each against the host implementation: every gather against
numpy's transform and its inverse; canvases, masks, features and token ids equal for the same
draws; the draws' statistics against the host sampler's. No Ray, no models here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from efe_ray.data.batching import FAR_WEIGHT, MAX_DEMOS, BatchTensors
from efe_ray.data.canvas import OUTSIDE
from efe_ray.data.features import AXIS_PAIRS, MAX_RATIO
from efe_ray.data.store import COL, TaskStore
from efe_ray.data.task import MAX_SIDE, NUM_COLOURS
from efe_ray.device import upload

# The D8 transform d8 = k + 4t (efe_ray/data/augment.py) as a cell map: cell (i, j) of the
# transformed grid reads source cell (r, c) with a = j if SWAP else i, b = i if SWAP else j,
# r = h-1-a if FLIP_R else a, c = w-1-b if FLIP_C else b, for a source grid of h x w.
SWAP = (False, True, False, True, True, False, True, False)
"""Whether transform d8 trades height and width (rot90, rot270 and the two diagonal flips)."""
FLIP_R = (False, False, True, True, False, True, True, False)
"""Whether transform d8 reads the source rows from the bottom."""
FLIP_C = (False, True, True, False, False, False, True, True)
"""Whether transform d8 reads the source columns from the right."""
_TABLES: dict[torch.device, torch.Tensor] = {}


def d8_table(device: torch.device) -> torch.Tensor:
    """(8, 3) bool: SWAP, FLIP_R, FLIP_C of each transform, on ``device``."""
    if device not in _TABLES:
        _TABLES[device] = torch.tensor(list(zip(SWAP, FLIP_R, FLIP_C)), dtype=torch.bool, device=device)
    return _TABLES[device]


@dataclass(frozen=True, eq=False)
class ViewDraw:
    """The random choices of N views (device tensors)."""

    rows: torch.Tensor
    """(N,) long: each view's task row in the store."""
    query: torch.Tensor
    """(N,) long: the query's pair index in the store."""
    demos: torch.Tensor
    """(N, MAX_DEMOS) long: the demonstrations' pair indices, in prompt order (valid ones first)."""
    demo_count: torch.Tensor
    """(N,) long: how many of ``demos`` are real: min(MAX_DEMOS, known pairs - 1)."""
    d8: torch.Tensor
    """(N,) long: the D8 transform."""
    colours: torch.Tensor
    """(N, 11) long: the colour lookup table (index = old class, OUTSIDE maps to itself)."""
    version: torch.Tensor
    """(N,) long: each view's colour version (0 without versions)."""

    @property
    def demo_valid(self) -> torch.Tensor:
        """(N, MAX_DEMOS) bool: which demonstration slots are real."""
        return torch.arange(MAX_DEMOS, device=self.demos.device) < self.demo_count[:, None]


def identity_colours(n: int, device: torch.device) -> torch.Tensor:
    """(n, 11) long lookup tables that change nothing."""
    return torch.arange(NUM_COLOURS + 1, device=device).expand(n, -1).contiguous()


def version_luts(table: np.ndarray, device: torch.device) -> torch.Tensor:
    """(num_tasks, V, 11) uint8 colour lookup tables on ``device`` of a (num_tasks, V, 10) table of
    colour versions (efe_ray/data/augment.py: ``version_table``), OUTSIDE mapped to itself."""
    outside = np.full((*table.shape[:2], 1), OUTSIDE, dtype=np.uint8)
    return torch.from_numpy(np.concatenate([table.astype(np.uint8), outside], axis=2)).to(device)


def draw_views(store: TaskStore, rows: torch.Tensor, generator: torch.Generator, *, augment: bool = True,
               colours: bool = True, versions: torch.Tensor | None = None) -> ViewDraw:
    """Draw one view per entry of ``rows`` ((N,) long task rows on the store's device), with
    ``generator`` (on the same device). ``versions``: (num_tasks, V, 11) lookup tables of the store's
    tasks' colour versions (:func:`version_luts`), whose permutations replace the random ones where
    ``augment`` and ``colours``. See the module docstring for the distribution."""
    dev, n = store.device, rows.shape[0]
    count, offset = store.count[rows], store.offset[rows]  # (N,)
    q = (torch.rand(n, generator=generator, device=dev) * count).long().clamp_max(count - 1)  # (N,) slot
    slots = torch.arange(store.max_pairs, device=dev)  # (P,)
    keys = torch.rand(n, store.max_pairs, generator=generator, device=dev)  # (N, P)
    keys = keys.masked_fill((slots >= count[:, None]) | (slots == q[:, None]), 2.0)  # the query and absent last
    order = keys.argsort(dim=1)[:, :MAX_DEMOS]  # (N, 4): a uniformly random ordered choice of the others
    if order.shape[1] < MAX_DEMOS:  # every task has fewer than MAX_DEMOS + 1 pairs
        order = torch.cat([order, order.new_zeros(n, MAX_DEMOS - order.shape[1])], dim=1)
    demo_count = (count - 1).clamp_max(MAX_DEMOS)
    d8 = (torch.randint(0, 8, (n,), generator=generator, device=dev) if augment
          else torch.zeros(n, dtype=torch.long, device=dev))
    lut = identity_colours(n, dev)
    version = torch.zeros(n, dtype=torch.long, device=dev)
    if augment and colours and versions is not None:  # one of the task's fixed permutations, uniformly
        version = torch.randint(0, versions.shape[1], (n,), generator=generator, device=dev)  # (N,)
        lut = versions[rows, version].long()  # (N, 11)
    elif augment and colours:  # colour 0 (the usual background) stays; 1..9 permuted uniformly
        perm = torch.rand(n, NUM_COLOURS - 1, generator=generator, device=dev).argsort(dim=1) + 1  # (N, 9)
        lut = torch.cat([lut[:, :1], perm, lut[:, NUM_COLOURS:]], dim=1)
    valid = torch.arange(MAX_DEMOS, device=dev) < demo_count[:, None]
    demos = torch.where(valid, offset[:, None] + order, offset[:, None])  # invalid slots point at a real pair
    return ViewDraw(rows, offset + q, demos, demo_count, d8, lut, version)


def transformed_hw(hw: torch.Tensor, d8: torch.Tensor) -> torch.Tensor:
    """(..., 2) (height, width) of source grids and (...) transforms -> the transformed (..., 2)."""
    swap = d8_table(hw.device)[d8, 0]
    return torch.where(swap[..., None], hw.flip(-1), hw)


def cells(store: TaskStore, pair: torch.Tensor, io: int | torch.Tensor, i: torch.Tensor, j: torch.Tensor,
          d8: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """The class of cell (i, j) of the transformed grid ``io`` (0 input, 1 output; an int or a long
    tensor) of ``pair``:
    the stored grid's source cell under transform ``d8``, through colour table ``lut`` ((N, 11): one
    table per leading index); ``OUTSIDE`` beyond the transformed grid. The index arguments broadcast
    together to (N, ...); returns long of that shape."""
    h, w = store.hw[pair, io, 0], store.hw[pair, io, 1]
    table = d8_table(store.device)
    swap, flip_r, flip_c = table[d8, 0], table[d8, 1], table[d8, 2]
    a, b = torch.where(swap, j, i), torch.where(swap, i, j)
    inside = (a < h) & (b < w)
    r = torch.where(flip_r, h - 1 - a, a).clamp(0, MAX_SIDE - 1)
    c = torch.where(flip_c, w - 1 - b, b).clamp(0, MAX_SIDE - 1)
    value = store.grids[pair, io, r, c].long()  # (N, ...) stored classes: one gather, no copy of the store
    return torch.where(inside, _lookup(lut, value), OUTSIDE)


def _lookup(lut: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``lut[..., value]`` for a (N, 11) table and (N, ...) values: each row through its own table."""
    n = lut.shape[0]
    return torch.gather(lut, 1, value.reshape(n, -1)).reshape(value.shape)


def view_sides(store: TaskStore, draw: ViewDraw) -> torch.Tensor:
    """(N,) long: each view's square, the largest side of its demonstrations, query and target."""
    demo_side = torch.where(draw.demo_valid, store.stats[draw.demos, COL["side"]].long(), 0)  # (N, 4)
    return torch.maximum(demo_side.max(dim=1).values, store.stats[draw.query, COL["side"]].long())


def features(store: TaskStore, draw: ViewDraw) -> torch.Tensor:
    """(N, 15) float32: the task features of each view (efe_ray/data/features.py), from the
    demonstrations' per-pair statistics and the query input; height and width features trade places
    under the transforms that swap the axes."""
    st = store.stats[draw.demos]  # (N, 4, len(STATS)) float64
    valid = draw.demo_valid.to(st.dtype)  # (N, 4)

    def mean(name: str, weight: torch.Tensor = valid) -> torch.Tensor:
        return (st[..., COL[name]] * weight).sum(1) / weight.sum(1).clamp_min(1.0)

    same = st[..., COL["same"]] * valid
    side, colours, ratio = float(MAX_SIDE), float(NUM_COLOURS), MAX_RATIO
    q = store.stats[draw.query]  # (N, len(STATS))
    feats = torch.stack([
        mean("in_h") / side, mean("in_w") / side, mean("out_h") / side, mean("out_w") / side,
        mean("h_ratio") / ratio, mean("w_ratio") / ratio, mean("same"),
        mean("in_colours") / colours, mean("out_colours") / colours, mean("subset"),
        mean("changed", same), mean("background"),
        q[:, COL["in_h"]] / side, q[:, COL["in_w"]] / side, q[:, COL["in_colours"]] / colours,
    ], dim=1)  # (N, 15) float64
    swapped = feats.clone()
    for a, b in AXIS_PAIRS:
        swapped[:, a], swapped[:, b] = feats[:, b], feats[:, a]
    swap = d8_table(store.device)[draw.d8, 0]
    return torch.where(swap[:, None], swapped, feats).float()


def view_tensors(store: TaskStore, draw: ViewDraw, side: int) -> BatchTensors:
    """The views' tensors on a canvas of ``side`` (at least every view's square; shapes in
    efe_ray/data/batching.py): query canvases, targets, loss and target masks, features, views."""
    dev = store.device
    idx = torch.arange(side, device=dev)
    i, j = idx[None, :, None], idx[None, None, :]  # (1, S, 1), (1, 1, S)
    pair, d8 = draw.query[:, None, None], draw.d8[:, None, None]
    canvas = cells(store, pair, 0, i, j, d8, draw.colours)  # (N, S, S)
    target = cells(store, pair, 1, i, j, d8, draw.colours)
    hw = transformed_hw(store.hw[draw.query], draw.d8[:, None])  # (N, 2, 2): input, output
    (hi, wi), (ht, wt) = hw[:, 0].unbind(-1), hw[:, 1].unbind(-1)
    vside = view_sides(store, draw)[:, None, None]
    far = (i < vside) & (j < vside)
    near = (i < torch.maximum(ht, hi)[:, None, None] + 1) & (j < torch.maximum(wt, wi)[:, None, None] + 1)
    loss_mask = torch.where(near, 1.0, torch.where(far, FAR_WEIGHT, 0.0)).float()
    target_mask = ((i < ht[:, None, None]) & (j < wt[:, None, None])).float()
    return BatchTensors(canvas=canvas, target=target, loss_mask=loss_mask, target_mask=target_mask,
                        features=features(store, draw), view=draw.d8)


# -- prompt tokens ---------------------------------------------------------------------------------
# The prompt text (efe_ray/data/serialize.py) of a view is a sequence of segments: for each
# demonstration "I\n", its input grid, "\nO\n", its output grid, "\n|\n"; then "Q\n" and the query
# input. A grid of h x w is h rows of w digits joined by "\n": h * (w + 1) - 1 characters.
_LITERALS = ("I\n", "\nO\n", "\n|\n", "Q\n")
_SEGMENTS = [(kind, d) for d in range(MAX_DEMOS) for kind in ("lit0", "in", "lit1", "out", "lit2")] + \
            [("lit3", -1), ("query", -1)]
"""(kind, demonstration slot) of each segment of a prompt, in order."""


@dataclass(frozen=True)
class CharIds:
    """The token ids of a character-level tokenizer: each prompt character one id, framed by
    ``bos`` and ``eos``, right-padded with ``pad``."""

    digits: tuple[int, ...]
    """Ids of "0".."9"."""
    newline: int
    bar: int
    letters: dict
    """Ids of "I", "O" and "Q"."""
    bos: int
    eos: int
    pad: int

    def of(self, ch: str) -> int:
        """The id of one prompt character."""
        if ch.isdigit():
            return self.digits[int(ch)]
        return {"\n": self.newline, "|": self.bar}.get(ch, self.letters.get(ch))


def prompt_tokens(store: TaskStore, draw: ViewDraw, ids: CharIds, max_tokens: int,
                  longest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (N, T) long, of the views' prompt texts as a character-level
    tokenizer encodes them: ``bos``, one id per character, ``eos``; a text longer than
    ``max_tokens`` loses its start (left truncation: the query at the end stays), shorter ones are
    right-padded. ``longest``: a bound on the views' text lengths in characters, known on the host
    (:meth:`TaskStore.text_bound`), so that T = min(longest, max_tokens - 2) + 2 needs no device
    read; padding beyond a text's ``eos`` changes nothing a causal model computes for it."""
    dev, n = store.device, draw.query.shape[0]
    keep = max_tokens - 2  # characters that fit between bos and eos
    kinds, lengths, pairs, ios = [], [], [], []
    demo_hw = transformed_hw(store.hw[draw.demos], draw.d8[:, None, None])  # (N, 4, 2, 2)
    query_hw = transformed_hw(store.hw[draw.query], draw.d8[:, None])  # (N, 2, 2)
    valid = draw.demo_valid.long()  # (N, 4)
    for kind, d in _SEGMENTS:
        if kind.startswith("lit"):
            k = int(kind[3])
            length = torch.full((n,), len(_LITERALS[k]), device=dev) * (valid[:, d] if d >= 0 else 1)
            kinds.append(k), pairs.append(draw.query), ios.append(0)
        else:
            hw = query_hw[:, 0] if kind == "query" else demo_hw[:, d, 0 if kind == "in" else 1]  # (N, 2)
            length = (hw[:, 0] * (hw[:, 1] + 1) - 1) * (valid[:, d] if d >= 0 else 1)
            kinds.append(-1), ios.append(1 if kind == "out" else 0)
            pairs.append(draw.query if kind == "query" else draw.demos[:, d])
        lengths.append(length)
    seg_len = torch.stack(lengths, dim=1)  # (N, G) characters per segment
    ends = seg_len.cumsum(dim=1)  # (N, G)
    total = ends[:, -1]  # (N,) characters
    chars = min(longest, keep)
    start = (total - keep).clamp_min(0)  # (N,) characters cut from the start
    pos = torch.arange(chars, device=dev)[None, :] + start[:, None]  # (N, C) character index
    real = pos < total[:, None]
    seg = torch.searchsorted(ends, pos, right=True).clamp_max(len(_SEGMENTS) - 1)  # (N, C)
    offset = pos - (ends.gather(1, seg) - seg_len.gather(1, seg))  # (N, C) within the segment
    # The small tables go up through pinned memory, queued behind the running kernels: a plain
    # torch.tensor(list, device=cuda) would wait for the GPU to drain (a prompt is built mid-step).
    seg_kind = upload(np.asarray(kinds, dtype=np.int64), dev)[seg]  # (N, C): literal 0..3, -1 a grid
    seg_pair = torch.stack(pairs, dim=1).gather(1, seg)  # (N, C)
    seg_io = upload(np.asarray(ios, dtype=np.int64), dev)[seg]  # (N, C): 0 an input grid, 1 an output grid
    # A grid character: row offset // (w + 1), column offset % (w + 1); column w is the "\n".
    source = store.hw[seg_pair, seg_io]  # (N, C, 2): the source grid's h, w
    width = torch.where(d8_table(dev)[draw.d8, 0][:, None], source[..., 0], source[..., 1])  # transformed width
    row, col = offset // (width + 1), offset % (width + 1)
    d8 = draw.d8[:, None].expand_as(row)
    colour = cells(store, seg_pair, seg_io, row, col.clamp_max(MAX_SIDE - 1), d8, draw.colours)
    colour = colour.clamp_max(NUM_COLOURS - 1)  # the "\n" column and literal positions read past the grid
    digit = upload(np.asarray(ids.digits, dtype=np.int64), dev)[colour]
    grid_char = torch.where(col == width, ids.newline, digit)
    lit_char = _literal_table(ids, dev)[seg_kind.clamp_min(0), offset.clamp(0, 2)]
    body = torch.where(seg_kind >= 0, lit_char, grid_char)
    body = torch.where(real, body, ids.pad)  # (N, C)
    length = total.clamp_max(keep)  # (N,) characters kept
    tokens = torch.full((n, chars + 2), ids.pad, dtype=torch.long, device=dev)
    tokens[:, 0] = ids.bos
    tokens[:, 1: chars + 1] = body
    tokens.scatter_(1, (length + 1)[:, None], ids.eos)
    mask = (torch.arange(chars + 2, device=dev)[None, :] <= (length + 1)[:, None]).long()
    return tokens, mask


def _literal_table(ids: CharIds, device: torch.device) -> torch.Tensor:
    """(4, 3) long: the ids of each literal segment's characters (padded with ``pad``)."""
    rows = [[ids.of(ch) for ch in lit] + [ids.pad] * (3 - len(lit)) for lit in _LITERALS]
    return upload(np.asarray(rows, dtype=np.int64), device)
