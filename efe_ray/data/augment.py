"""Invertible task augmentations: the dihedral group D8 of the square, and colour permutations.

An :class:`Augmentation` is one element of ``D8 x S10``: a geometric transform (index ``d8``)
followed by a colour relabelling (``colours``). Both act cell-wise or position-wise, so they
commute, and every augmentation has an exact inverse. An augmentation is recorded with a sample
(:meth:`Augmentation.to_dict`) so that a prediction made on an augmented task can be mapped
back onto the original task with :meth:`Augmentation.invert`.

The geometric index is ``d8 = k + 4 * t``: first transpose the grid if ``t == 1``, then rotate
it with ``np.rot90(grid, k)`` (counter-clockwise by ``90 * k`` degrees). Spelled out:

====  ================================  ==========================================
d8    transform                         equivalent numpy
====  ================================  ==========================================
0     identity                          ``g``
1     rotate 90 degrees counter-clockw  ``np.rot90(g, 1)``
2     rotate 180 degrees                ``np.rot90(g, 2)``
3     rotate 270 degrees (90 clockwise) ``np.rot90(g, 3)``
4     transpose (main-diagonal flip)    ``g.T``
5     flip upside down (rows reversed)  ``np.flipud(g)`` == ``np.rot90(g.T, 1)``
6     anti-transpose (anti-diagonal)    ``g[::-1, ::-1].T`` == ``np.rot90(g.T, 2)``
7     flip left-right (cols reversed)   ``np.fliplr(g)`` == ``np.rot90(g.T, 3)``
====  ================================  ==========================================

Indices 1 and 3 (rotations by 90/270) and 4 and 6 (the diagonal flips) turn an ``(H, W)`` grid
into a ``(W, H)`` grid; the others keep the shape. The inverse of rotation ``k`` is rotation
``(4 - k) % 4``; indices 4..7 are reflections and are their own inverses.

``colours`` is a permutation of ``0..9``: ``colours[old] == new``.

Colour versions (``learner.colour_versions``): :func:`colour_versions` gives a task ``V`` fixed,
distinct colour permutations fixing 0, version 0 the identity, from the learner's seed and a stable
hash of the task id (never Python's ``hash``, which is salted per process), so that every process,
resume and evaluation agree on them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from efe_ray.data.task import NUM_COLOURS, Pair, Task, as_grid

IDENTITY_COLOURS: tuple[int, ...] = tuple(range(NUM_COLOURS))
"""The colour permutation that changes nothing."""
COLOUR_STREAM = 0x636F6C72
"""Mixed into the seed of a task's colour versions (see :func:`colour_versions`)."""

D8_NAMES: tuple[str, ...] = (
    "identity",
    "rot90",
    "rot180",
    "rot270",
    "transpose",
    "flipud",
    "antitranspose",
    "fliplr",
)
"""A short name for each ``d8`` index (see the module docstring)."""


def _geometric(grid: np.ndarray, d8: int) -> np.ndarray:
    """Apply the geometric transform ``d8`` to ``grid``: transpose if ``d8 >= 4``, then rot90 (a view;
    ``np.rot90(g, k)`` spelled as slices, which skip its axis bookkeeping on this hot path)."""
    k, t = d8 % 4, d8 // 4
    if t:
        grid = grid.T
    if k == 0:
        return grid
    if k == 1:
        return grid.T[::-1]
    if k == 2:
        return grid[::-1, ::-1]
    return grid.T[:, ::-1]


def _inverse_d8(d8: int) -> int:
    """The index of the inverse of geometric transform ``d8``."""
    return (4 - d8) % 4 if d8 < 4 else d8


def _frozen(grid: np.ndarray) -> np.ndarray:
    """Make ``grid`` read-only (as :func:`efe_ray.data.task.as_grid` does) and return it."""
    grid.setflags(write=False)
    return grid


@dataclass(frozen=True)
class Augmentation:
    """A geometric transform (``d8``, see the module docstring) followed by a colour permutation.

    ``colours[old] == new``. Equality and hashing are by value, so augmentations can be used as
    dictionary keys or compared after a :meth:`to_dict` / :meth:`from_dict` round trip.
    """

    d8: int = 0
    """Geometric transform index, 0..7 (see the module docstring)."""
    colours: tuple[int, ...] = IDENTITY_COLOURS
    """A permutation of 0..9; index = old colour, value = new colour."""

    def __post_init__(self) -> None:
        d8 = self.d8
        if isinstance(d8, bool) or not isinstance(d8, (int, np.integer)):
            raise TypeError(f"d8 must be an int in 0..7, got {d8!r}")
        if not 0 <= int(d8) <= 7:
            raise ValueError(f"d8 must lie in 0..7, got {d8}")
        object.__setattr__(self, "d8", int(d8))

        try:
            colours = tuple(int(c) for c in self.colours)
        except (TypeError, ValueError) as err:
            raise TypeError(f"colours must be a sequence of ints, got {self.colours!r}") from err
        if sorted(colours) != list(IDENTITY_COLOURS):
            raise ValueError(f"colours must be a permutation of 0..{NUM_COLOURS - 1}, got {colours}")
        object.__setattr__(self, "colours", colours)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def identity(cls) -> Augmentation:
        """The augmentation that changes nothing."""
        return cls(0, IDENTITY_COLOURS)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        *,
        fix_zero: bool = True,
        geometric: bool = True,
        colours: bool = True,
    ) -> Augmentation:
        """Draw an augmentation uniformly at random.

        Args:
            rng: the random generator to draw from.
            fix_zero: keep colour 0 (the usual ARC background) as 0, permuting only 1..9.
            geometric: draw ``d8`` uniformly from 0..7; otherwise ``d8 = 0``.
            colours: draw a random colour permutation; otherwise the identity permutation.
        """
        d8 = int(rng.integers(8)) if geometric else 0
        if not colours:
            perm = IDENTITY_COLOURS
        elif fix_zero:
            perm = (0, *(int(c) for c in rng.permutation(np.arange(1, NUM_COLOURS))))
        else:
            perm = tuple(int(c) for c in rng.permutation(NUM_COLOURS))
        return cls(d8, perm)

    @classmethod
    def all_d8(cls) -> list[Augmentation]:
        """The 8 geometric transforms with the identity colour permutation, in index order."""
        return all_d8()

    # ------------------------------------------------------------------ properties

    @property
    def is_identity(self) -> bool:
        """Whether this augmentation leaves every grid unchanged."""
        return self.d8 == 0 and self.colours == IDENTITY_COLOURS

    @property
    def fixes_zero(self) -> bool:
        """Whether colour 0 maps to itself."""
        return self.colours[0] == 0

    @property
    def swaps_axes(self) -> bool:
        """Whether an ``(H, W)`` grid becomes ``(W, H)`` (rot90, rot270 and the diagonal flips)."""
        return self.d8 in (1, 3, 4, 6)

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``"rot90+perm(0,2,1,...)"`` or ``"identity"``."""
        if self.colours == IDENTITY_COLOURS:
            return D8_NAMES[self.d8]
        return f"{D8_NAMES[self.d8]}+perm{self.colours}"

    # ------------------------------------------------------------------ grids

    def apply(self, grid: np.ndarray) -> np.ndarray:
        """Transform one ``(H, W)`` grid; returns a new C-contiguous int64 array.

        The result is ``(H, W)`` or, when :attr:`swaps_axes`, ``(W, H)``.
        """
        g = _geometric(as_grid(grid), self.d8)  # (H, W) or (W, H)
        if self.colours == IDENTITY_COLOURS:
            return np.ascontiguousarray(g, dtype=np.int64)
        return np.ascontiguousarray(np.asarray(self.colours, dtype=np.int64)[g])

    def invert(self, grid: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`: ``invert(apply(g)) == g`` for every grid ``g``.

        Returns a new C-contiguous int64 array.
        """
        g = as_grid(grid)  # (H', W')
        inv = np.argsort(np.asarray(self.colours, dtype=np.int64)).astype(np.int64)  # (10,)
        g = inv[g]
        g = _geometric(g, _inverse_d8(self.d8))
        return np.ascontiguousarray(g, dtype=np.int64)

    def inverse(self) -> Augmentation:
        """The augmentation whose :meth:`apply` equals this one's :meth:`invert`."""
        inv = np.argsort(np.asarray(self.colours, dtype=np.int64))
        return Augmentation(_inverse_d8(self.d8), tuple(int(c) for c in inv))

    # ------------------------------------------------------------------ pairs and tasks

    def apply_pair(self, pair: Pair) -> Pair:
        """Transform a pair's input and, when known, its output (grids are made read-only)."""
        out = None if pair.output is None else _frozen(self.apply(pair.output))
        return Pair(input=_frozen(self.apply(pair.input)), output=out)

    def invert_pair(self, pair: Pair) -> Pair:
        """Undo :meth:`apply_pair`."""
        out = None if pair.output is None else _frozen(self.invert(pair.output))
        return Pair(input=_frozen(self.invert(pair.input)), output=out)

    def apply_task(self, task: Task) -> Task:
        """Transform every input and every known output of ``task``.

        The id and source are kept, so that a prediction can be traced to its original task;
        record the augmentation itself (:meth:`to_dict`) to undo it later.
        """
        return Task(
            task_id=task.task_id,
            train=tuple(self.apply_pair(p) for p in task.train),
            test=tuple(self.apply_pair(p) for p in task.test),
            source=task.source,
        )

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record: ``{"d8": int, "colours": [10 ints]}``."""
        return {"d8": self.d8, "colours": list(self.colours)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Augmentation:
        """Rebuild an augmentation from :meth:`to_dict` output (validated as the constructor does)."""
        if not isinstance(data, dict) or set(data) != {"d8", "colours"}:
            raise ValueError(f"expected a dict with keys 'd8' and 'colours', got {data!r}")
        return cls(data["d8"], tuple(data["colours"]))


def all_d8() -> list[Augmentation]:
    """The 8 geometric transforms (``d8`` = 0..7) with the identity colour permutation."""
    return [Augmentation(d8, IDENTITY_COLOURS) for d8 in range(8)]


def task_seed(task_id: str, seed: int) -> np.random.SeedSequence:
    """The seed of ``task_id``'s colour versions: ``seed``, :data:`COLOUR_STREAM` and the first 16 bytes
    of the SHA-256 of the id (the same in every process, unlike Python's ``hash``)."""
    words = np.frombuffer(hashlib.sha256(task_id.encode("utf-8")).digest()[:16], dtype=np.uint32)  # (4,)
    return np.random.SeedSequence([int(seed), COLOUR_STREAM, *(int(w) for w in words)])


def colour_versions(task_id: str, seed: int, versions: int) -> np.ndarray:
    """(versions, 10) int64: ``versions`` distinct colour permutations of task ``task_id``
    (``perm[old] == new``), each fixing 0 and permuting 1..9 uniformly; version 0 is the identity.
    A function of (``task_id``, ``seed``, ``versions``) alone."""
    if not 1 <= versions <= 362_880:  # 9! permutations of 1..9
        raise ValueError(f"colour versions: {versions} must lie in 1..362880 (the permutations of 1..9)")
    rng = np.random.default_rng(task_seed(task_id, seed))
    kept = np.arange(NUM_COLOURS, dtype=np.int64)[None]  # (1, 10): version 0, the identity
    while len(kept) < versions:
        tail = rng.permuted(np.tile(np.arange(1, NUM_COLOURS, dtype=np.int64), (versions - len(kept), 1)), axis=1)
        drawn = np.concatenate([kept, np.pad(tail, ((0, 0), (1, 0)))])  # (K, 10): kept first, 0 fixed
        keys = drawn @ 10 ** np.arange(NUM_COLOURS - 1, -1, -1, dtype=np.int64)  # (K,) one number per permutation
        _, first = np.unique(keys, return_index=True)
        kept = drawn[np.sort(first)]  # the kept versions, then the new distinct ones in draw order
    return kept[:versions]


def version_table(task_ids: list[str] | tuple[str, ...], seed: int, versions: int) -> np.ndarray:
    """(len(task_ids), versions, 10) uint8: :func:`colour_versions` of each task, in order."""
    table = np.zeros((len(task_ids), versions, NUM_COLOURS), dtype=np.uint8)
    for i, t in enumerate(task_ids):
        table[i] = colour_versions(t, seed, versions)
    return table
