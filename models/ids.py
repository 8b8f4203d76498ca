"""Mapping between opaque external ids (``str``) and dense row indices."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["IdIndex"]


class IdIndex:
    """A growing bijection between string ids and ``0..n-1``.

    Examples
    --------
    >>> index = IdIndex()
    >>> index.add_many(["a", "b", "a"]).tolist()
    [0, 1, 0]
    >>> index.lookup(["b", "zzz"]).tolist()
    [1, -1]
    >>> index.ids_of([1, 0])
    ['b', 'a']
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self.ids: list[str] = []
        self._pos: dict[str, int] = {}
        for i in ids:
            self.add(i)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, key: object) -> bool:
        return key in self._pos

    def add(self, key: str) -> int:
        """Index ``key`` (if new) and return its position."""
        pos = self._pos.get(key)
        if pos is None:
            pos = len(self.ids)
            self._pos[key] = pos
            self.ids.append(key)
        return pos

    def add_many(self, keys: Iterable[str]) -> np.ndarray:
        """Index every key in ``keys`` and return their positions as ``int64``."""
        pos = self._pos
        out = [pos.get(k, -1) for k in keys]
        if -1 in out:
            add = self.add
            out = [p if p >= 0 else add(k) for p, k in zip(out, keys, strict=True)]
        return np.asarray(out, dtype=np.int64)

    def get(self, key: str) -> int:
        """Position of ``key``, or ``-1`` when unknown."""
        return self._pos.get(key, -1)

    def lookup(self, keys: Iterable[str]) -> np.ndarray:
        """Positions of ``keys`` (``-1`` for unknown ones) as ``int64``."""
        get = self._pos.get
        return np.asarray([get(k, -1) for k in keys], dtype=np.int64)

    def id_of(self, pos: int) -> str:
        """The id at position ``pos``."""
        return self.ids[pos]

    def ids_of(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """The ids at ``positions``."""
        ids = self.ids
        return [ids[p] for p in np.asarray(positions).tolist()]
