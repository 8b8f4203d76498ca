"""Popularity with exponential time decay: the cold-start fallback of every model."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, OnlineRecommender

__all__ = ["Popularity"]

_MAX_EXPONENT = 60.0  # rescale the accumulator before 2**exponent overflows float64


class Popularity(OnlineRecommender):
    """Items ranked by their event weight, each event decaying with a half-life.

    The score of item ``i`` at time ``t`` is ``sum(w * 2 ** (-(t - t_e) / half_life))``
    over its events ``e``. The sum is kept relative to an anchor time, so an
    update touches only the items in the batch.

    Parameters
    ----------
    half_life
        Seconds after which an event counts half; ``None`` disables decay.
    seed
        Unused (popularity is deterministic); kept for a uniform signature.

    Examples
    --------
    >>> model = Popularity(half_life=3600.0)
    >>> model.learn(Interactions.from_columns(["u1", "u2", "u3"], ["a", "b", "b"], timestamps=[0, 0, 0]))
    >>> model.recommend(["u9"], k=2).items
    [['b', 'a']]
    >>> model.recommend(["u1"], k=2).items   # seen items are left out
    [['b']]
    """

    name: ClassVar[str] = "popularity"
    personalized: ClassVar[bool] = False
    batch_equals_sequential: ClassVar[bool] = True
    shares_state: ClassVar[bool] = True
    sharing_is_exact: ClassVar[bool] = True
    _item_arrays: ClassVar[tuple[str, ...]] = ("_acc",)

    def __init__(self, half_life: float | None = 7 * 24 * 3600.0, seed: int = 0) -> None:
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be > 0 seconds or None, got {half_life}")
        self.half_life = half_life
        super().__init__(seed=seed)

    def _init_state(self) -> None:
        super()._init_state()
        self._acc = np.zeros(0, dtype=np.float64)
        self._anchor: float | None = None

    def _grow(self, n_users: int, n_items: int) -> None:
        self._acc = self._grown(self._acc, n_items)

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        if len(i) == 1:  # one event: scalar arithmetic
            weight, ts = float(batch.weights[0]), float(batch.timestamps[0])
            if self.half_life is not None:
                if self._anchor is None:
                    self._anchor = ts
                exponent = (ts - self._anchor) / self.half_life
                if exponent > _MAX_EXPONENT:
                    self._rescale(exponent)
                    exponent = 0.0
                weight *= math.exp2(exponent)
            self._acc[i[0]] += weight
            return
        weights = batch.weights.astype(np.float64)
        if self.half_life is not None:
            if self._anchor is None:
                self._anchor = float(batch.timestamps.min())
            exponent = (batch.timestamps - self._anchor) / self.half_life
            if exponent.max() > _MAX_EXPONENT:
                shift = float(exponent.max())
                self._rescale(shift)
                exponent -= shift
            weights = weights * np.exp2(exponent)
        np.add.at(self._acc, i, weights)

    def _rescale(self, shift: float) -> None:
        """Move the anchor ``shift`` half-lives later (the shared-delta base moves with it)."""
        factor = 2.0 ** (-shift)
        self._acc *= factor
        base = getattr(self, "_shared_base", None)
        if base is not None:
            base["_acc"] *= factor
        self._anchor = (self._anchor or 0.0) + shift * (self.half_life or 0.0)

    # -- sharing across workers: scores travel with the anchor they are relative to

    def _take_item_delta_extra(self, delta: Any) -> None:
        delta.extra["anchor"] = self._anchor

    def _export_items_extra(self, delta: Any, rows: np.ndarray) -> None:
        delta.extra["anchor"] = self._anchor

    def _prepare_item_delta(self, delta: Any) -> Any:
        theirs = delta.extra.get("anchor")
        if self.half_life is None or theirs is None:
            return delta
        if self._anchor is None or delta.extra.get("absolute"):
            self._anchor = theirs
            return delta
        if theirs > self._anchor:  # move to the newer anchor first: scaling their scores up could overflow
            self._rescale((theirs - self._anchor) / self.half_life)
        factor = 2.0 ** ((theirs - self._anchor) / self.half_life)
        arrays = {k: v * factor for k, v in delta.arrays.items()}
        return type(delta)(delta.model, delta.items, arrays, delta.globals, delta.extra, delta.extra_arrays)

    def item_scores(self) -> np.ndarray:
        """Decayed score of every item at the newest event time seen."""
        acc = self._acc[: self.n_items]
        if self.half_life is None or self._anchor is None:
            return acc.copy()
        return acc * 2.0 ** (-(self.last_timestamp - self._anchor) / self.half_life)

    def _score(self, u: np.ndarray) -> np.ndarray:
        row = self.item_scores().astype(np.float32)
        return np.broadcast_to(row, (len(u), row.shape[0]))

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Nothing per user: the item scores are aggregates and stay (see ``forget_user``)."""

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        self._acc[rows] = 0.0

    def _state(self) -> dict[str, np.ndarray]:
        return {"acc": self._acc[: self.n_items]}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._acc = self._grown(arrays["acc"].astype(np.float64), self.n_items)

    def _extra_meta(self) -> dict[str, Any]:
        return {"anchor": self._anchor}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._anchor = extra.get("anchor")

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"half_life": 3600.0}, {"half_life": None}]
