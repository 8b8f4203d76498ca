"""Negative items for implicit-feedback losses, drawn uniformly or partly by recent popularity.

Models that learn from positive events only (a click, a rating: "the user
interacted") need items the user did not pick to contrast them with. A
:class:`NegativeSampler` draws them from its own seeded generator: uniformly
over the live item rows, and, for a share ``popularity`` of the draws, the item
of a random event among the newest ``window`` events, so that an item comes up
in proportion to how often it was picked recently (popular items are then
pushed down harder than under uniform sampling).

Examples
--------
>>> sampler = NegativeSampler(popularity=0.5, window=4, seed=0)
>>> sampler.record(np.array([7, 7, 7, 7]))
>>> draws = sampler.draw((1000,), n_items=10)
>>> bool(0.4 < (draws == 7).mean() < 0.7), int(draws.min()) >= 0, int(draws.max()) < 10
(True, True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["NegativeSampler"]


class NegativeSampler:
    """Seeded draws of negative item rows: uniform, or partly in proportion to recent picks.

    Parameters
    ----------
    popularity
        Share of the draws taken from the items of the newest ``window``
        events (in proportion to their recent counts); the rest are uniform
        over the live item rows. 0 draws uniformly and records nothing.
    window
        Number of newest events whose items the popular draws choose from.
    seed
        Seed of the sampler's generator (``numpy.random.PCG64``).
    """

    def __init__(self, popularity: float = 0.0, window: int = 10_000, seed: int = 0) -> None:
        if not 0.0 <= popularity <= 1.0:
            raise ValueError(f"the popularity share of negatives must be in [0, 1], got {popularity}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.popularity = float(popularity)
        self.window = int(window)
        self._rng = np.random.default_rng([seed, 0xBEEF])
        self._recent = np.full(0, -1, dtype=np.int64)  # ring buffer of item rows of the newest events
        self._count = 0  # events recorded so far

    def record(self, items: np.ndarray) -> None:
        """Note the item rows of learned events (only kept when ``popularity > 0``)."""
        if self.popularity <= 0.0 or len(items) == 0:
            return
        if len(self._recent) < self.window:
            self._recent = np.concatenate([self._recent, np.full(self.window - len(self._recent), -1, np.int64)])
        items = np.asarray(items, dtype=np.int64)[-self.window :]
        slots = (self._count + np.arange(len(items))) % self.window
        self._recent[slots] = items
        self._count += len(items)

    def draw(self, shape: tuple[int, ...], n_items: int, live: np.ndarray | None = None) -> np.ndarray:
        """Item rows of the given ``shape``; ``live`` lists the rows holding an item when some are free.

        Parameters
        ----------
        shape
            Shape of the returned ``int64`` array.
        n_items
            Item rows in use (draws are below it).
        live
            The rows that hold an item, when the index has free rows (``None``: all of ``range(n_items)``).
        """
        pool = n_items if live is None else len(live)
        if pool == 0:
            raise ValueError("no item to draw a negative from")
        out = self._rng.integers(pool, size=shape)
        if live is not None:
            out = live[out]
        filled = min(self._count, self.window)
        if self.popularity > 0.0 and filled:
            popular = self._rng.random(shape) < self.popularity
            picks = self._recent[self._rng.integers(filled, size=int(popular.sum()))]
            keep = picks >= 0  # entries of evicted items stay uniform draws
            rows = np.flatnonzero(popular.ravel())[keep]
            out.ravel()[rows] = picks[keep]
        return out

    def forget_items(self, rows: np.ndarray) -> None:
        """Drop evicted item rows from the recent events (a new item may reuse the row)."""
        if len(self._recent):
            self._recent[np.isin(self._recent, rows)] = -1

    # -- persistence -----------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON-ready values that :meth:`set_state` restores."""
        meta = {"count": self._count, "rng": self._rng.bit_generator.state}
        return {"recent": self._recent.copy()}, meta

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Restore what :meth:`state` returned."""
        self._recent = np.asarray(arrays["recent"], dtype=np.int64).copy()
        self._count = int(meta.get("count", 0))
        if "rng" in meta:
            self._rng.bit_generator.state = meta["rng"]
