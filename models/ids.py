"""Mapping between opaque external ids (``str``) and dense row indices, with reusable rows."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["IdIndex"]


class IdIndex:
    """A bijection between string ids and rows ``0..n-1``, whose freed rows are reused.

    ``ids[row]`` is the id held by ``row``, or ``None`` (a tombstone) when the
    row was freed by :meth:`remove`. A new id takes the smallest free row
    before the table grows, so the number of rows stays bounded when ids come
    and go. ``len(index)`` is the number of rows (free ones included): the
    row capacity a model's arrays must have. A row freed and taken again is
    a new id: nothing ties it to the id it held before.

    Examples
    --------
    >>> index = IdIndex()
    >>> index.add_many(["a", "b", "a"]).tolist()
    [0, 1, 0]
    >>> index.lookup(["b", "zzz"]).tolist()
    [1, -1]
    >>> index.ids_of([1, 0])
    ['b', 'a']
    >>> index.remove("a"), index.ids, len(index), index.n_live
    (0, [None, 'b'], 2, 1)
    >>> index.add("c")   # the freed row is reused
    0
    """

    def __init__(self, ids: Iterable[str | None] = ()) -> None:
        self.ids: list[str | None] = list(ids)
        self._pos: dict[str, int] = {}
        self._free: list[int] = []  # heap of free rows: the smallest is reused first
        for pos, key in enumerate(self.ids):
            if key is None:
                self._free.append(pos)  # ascending, hence already a heap
            elif self._pos.setdefault(key, pos) != pos:
                raise ValueError(f"id {key!r} appears twice (rows {self._pos[key]} and {pos})")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    @property
    def n_live(self) -> int:
        """Number of rows holding an id (``len(index)`` minus the free rows)."""
        return len(self._pos)

    @property
    def n_free(self) -> int:
        """Number of free rows (freed by :meth:`remove` and not reused yet)."""
        return len(self._free)

    def add(self, key: str) -> int:
        """Index ``key`` (if new, in the smallest free row, else a new row) and return its position."""
        pos = self._pos.get(key)
        if pos is None:
            if self._free:
                pos = heapq.heappop(self._free)
                self.ids[pos] = key
            else:
                pos = len(self.ids)
                self.ids.append(key)
            self._pos[key] = pos
        return pos

    def add_many(self, keys: Iterable[str]) -> np.ndarray:
        """Index every key in ``keys`` and return their positions as ``int64``."""
        pos = self._pos
        out = [pos.get(k, -1) for k in keys]
        if -1 in out:
            add = self.add
            out = [p if p >= 0 else add(k) for p, k in zip(out, keys, strict=True)]
        return np.asarray(out, dtype=np.int64)

    def remove(self, key: str) -> int:
        """Forget ``key`` and free its row for a later id; return the row (``-1`` if unknown)."""
        pos = self._pos.pop(key, None)
        if pos is None:
            return -1
        self.ids[pos] = None
        heapq.heappush(self._free, pos)
        return pos

    def get(self, key: str) -> int:
        """Position of ``key``, or ``-1`` when unknown."""
        return self._pos.get(key, -1)

    def lookup(self, keys: Iterable[str]) -> np.ndarray:
        """Positions of ``keys`` (``-1`` for unknown ones) as ``int64``."""
        get = self._pos.get
        return np.asarray([get(k, -1) for k in keys], dtype=np.int64)

    def id_of(self, pos: int) -> str | None:
        """The id at position ``pos`` (``None`` for a free row)."""
        return self.ids[pos]

    def ids_of(self, positions: Sequence[int] | np.ndarray) -> list[str | None]:
        """The ids at ``positions`` (``None`` for free rows)."""
        ids = self.ids
        return [ids[p] for p in np.asarray(positions).tolist()]

    def free_rows(self) -> np.ndarray:
        """The free rows, ascending, as ``int64``."""
        return np.asarray(sorted(self._free), dtype=np.int64)

    def live_mask(self) -> np.ndarray:
        """Boolean mask over the rows, ``True`` where the row holds an id."""
        mask = np.ones(len(self.ids), dtype=bool)
        mask[self._free] = False
        return mask
