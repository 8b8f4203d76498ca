"""Popularity with exponential time decay: the cold-start fallback of every model."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np

from models.base import Interactions, OnlineRecommender
from models.ranking import top_k_row

__all__ = ["Popularity"]

_MAX_EXPONENT = 60.0  # rescale the accumulator before 2**exponent overflows float64
#: Items kept in the maintained top list (catalogues up to this size are ranked by a full pass instead).
TOP_KEPT = 4096


class Popularity(OnlineRecommender):
    """Items ranked by the users who chose them, each event decaying with a half-life.

    With ``per_user="max"`` (the default) an item's score counts people, not
    events: each user adds to an item at most the weight of their strongest
    event on it, decayed. The score of item ``i`` at time ``t`` is
    ``sum over users u of max over u's events e on i of w_e * 2 ** (-(t - t_e) / half_life)``.
    A first view counts 1; a later purchase by the same user raises that
    user's part to 5 (the difference is added); a repeat adds only what time
    took from the user's part since their strongest event (without decay,
    nothing). So one user clicking an item 1,500 times moves it as much as
    one click, and cannot take over the list every new user gets. What each
    user gave each item is per-user state, kept as long as the model keeps
    the user and the item (a forgotten or evicted user who comes back counts
    again), and moved with the user between workers (``export_users``), so
    that several workers hold what one holds. Events of weight ``<= 0`` add
    nothing.

    With ``per_user="sum"`` every event adds its decayed weight,
    ``sum(w * 2 ** (-(t - t_e) / half_life))`` over the item's events (the
    behaviour before the per-user cap; kept for comparisons).

    Either sum is kept relative to an anchor time, so an update touches only
    the items in the batch. A user's strongest contribution is kept as
    ``log2(w) + t_e / half_life`` (depending on no anchor), or ``w`` without decay.

    Parameters
    ----------
    half_life
        Seconds after which an event counts half; ``None`` disables decay.
    per_user
        ``"max"``: a user adds at most their strongest event to an item;
        ``"sum"``: every event adds its weight.
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

    One user's flood counts as one user; a purchase raises the user's part to its weight:

    >>> flood = Interactions.from_columns(["bot"] * 1000 + ["ann", "bob"], ["spam"] * 1000 + ["tea", "tea"])
    >>> for per_user in ("max", "sum"):
    ...     model = Popularity(half_life=None, per_user=per_user)
    ...     model.learn(flood)
    ...     scores = dict(zip(model.item_index.ids, model.item_scores().tolist()))
    ...     print(per_user, model.recommend(["new"], k=2).items[0], scores)
    max ['tea', 'spam'] {'spam': 1.0, 'tea': 2.0}
    sum ['spam', 'tea'] {'spam': 1000.0, 'tea': 2.0}
    >>> model = Popularity(half_life=None)
    >>> model.learn(Interactions.from_columns(["ann", "ann", "ann"], ["tea"] * 3, weights=[1.0, 5.0, 5.0]))
    >>> model.item_scores().tolist()
    [5.0]
    """

    name: ClassVar[str] = "popularity"
    personalized: ClassVar[bool] = False
    batch_equals_sequential: ClassVar[bool] = True
    shares_state: ClassVar[bool] = True
    sharing_is_exact: ClassVar[bool] = True
    item_changes_tracked: ClassVar[bool] = True  # its item arrays change at the rows of learned items only
    _item_arrays: ClassVar[tuple[str, ...]] = ("_acc",)
    merges_item_deltas: ClassVar[bool] = True
    _frame_keys: ClassVar[tuple[str, ...]] = ("last_timestamp", "anchor")
    _nonnegative_item_arrays: ClassVar[bool] = True

    def __init__(
        self,
        half_life: float | None = 7 * 24 * 3600.0,
        per_user: Literal["max", "sum"] = "max",
        seed: int = 0,
    ) -> None:
        if half_life is not None and not half_life > 0:
            raise ValueError(f"half_life must be > 0 seconds or None, got {half_life}")
        if per_user not in ("max", "sum"):
            raise ValueError(f"per_user must be 'max' or 'sum', got {per_user!r}")
        self.half_life = half_life
        self.per_user = per_user
        super().__init__(seed=seed)

    def _init_state(self) -> None:
        super()._init_state()
        self._acc = np.zeros(0, dtype=np.float64)
        self._anchor: float | None = None
        # per_user="max": user row -> {item row: level of the user's strongest event on it}, where
        # level = log2(weight) + timestamp / half_life (anchor-free), or the weight itself without decay
        self._strongest: dict[int, dict[int, float]] = {}
        # the TOP_KEPT rows of largest _acc (when the catalogue is larger), kept as scores grow: every row outside
        # has _acc <= _top_floor; None: to be rebuilt by one pass (after a change that can lower scores)
        self._top_buf = np.empty(0, dtype=np.int64)
        self._top_n = -1  # rows kept in _top_buf; -1: no list kept yet (or to be rebuilt)
        self._top_floor = 0.0
        self._top_member = np.zeros(0, dtype=bool)

    def _grow(self, n_users: int, n_items: int) -> None:
        self._acc = self._grown(self._acc, n_items)

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        self._learn_scores(u, i, batch)
        self._top_raised(i)

    def _learn_scores(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        if self.per_user == "max":
            if len(i) == 1:
                self._learn_one_strongest(int(u[0]), int(i[0]), float(batch.weights[0]), float(batch.timestamps[0]))
            else:
                self._learn_strongest(u, i, batch)
            return
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

    # -- per_user="max": each user adds their strongest (decayed) event per item

    def _anchor_level(self) -> float:
        """The level of the anchor: a contribution of level ``L`` is ``2 ** (L - anchor_level)`` in ``_acc``."""
        if self.half_life is None or self._anchor is None:
            return 0.0
        return self._anchor / self.half_life

    def _learn_one_strongest(self, u: int, i: int, weight: float, ts: float) -> None:
        """One event: raise user ``u``'s part of item ``i`` to this event's, when it is stronger."""
        if not weight > 0:
            return
        if self.half_life is None:
            level = weight
        else:
            if self._anchor is None:
                self._anchor = ts
            level = math.log2(weight) + ts / self.half_life
        parts = self._strongest.setdefault(u, {})
        old = parts.get(i)
        if old is not None and level <= old:
            return
        parts[i] = level
        if self.half_life is None:
            self._acc[i] += level - (0.0 if old is None else old)
            return
        base = self._anchor_level()
        if level - base > _MAX_EXPONENT:
            self._rescale(level - base)
            base = self._anchor_level()
        self._acc[i] += math.exp2(level - base) - (0.0 if old is None else math.exp2(old - base))

    def _learn_strongest(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        """A batch: as :meth:`_learn_one_strongest` event by event, with each (user, item) pair visited once."""
        weights = batch.weights.astype(np.float64)
        keep = weights > 0
        if not keep.all():
            u, i, weights, ts = u[keep], i[keep], weights[keep], batch.timestamps[keep]
        else:
            ts = batch.timestamps
        if not len(u):
            return
        if self.half_life is None:
            levels = weights
        else:
            if self._anchor is None:
                self._anchor = float(ts.min())
            levels = np.log2(weights) + ts / self.half_life
        width = int(i.max()) + 1
        pairs, slot = np.unique(u.astype(np.int64) * width + i, return_inverse=True)
        best = np.full(len(pairs), -np.inf)
        np.maximum.at(best, slot, levels)
        rows: list[int] = []
        new: list[float] = []
        old: list[float | None] = []
        strongest = self._strongest
        for pair, level in zip(pairs.tolist(), best.tolist(), strict=True):
            user, item = divmod(pair, width)
            parts = strongest.get(user)
            if parts is None:
                parts = strongest[user] = {}
            before = parts.get(item)
            if before is not None and level <= before:
                continue
            parts[item] = level
            rows.append(item)
            new.append(level)
            old.append(before)
        if not rows:
            return
        np.add.at(self._acc, np.asarray(rows, dtype=np.int64), self._raise_by(np.asarray(new), old))

    def _raise_by(self, new: np.ndarray, old: list[float | None]) -> np.ndarray:
        """What raising parts from levels ``old`` (``None``: no part yet) to ``new`` adds to ``_acc``."""
        if self.half_life is None:  # levels are weights
            return new - np.array([0.0 if x is None else x for x in old])
        base = self._anchor_level()
        top = float(new.max()) - base
        if top > _MAX_EXPONENT:
            self._rescale(top)
            base = self._anchor_level()
        before = np.array([-np.inf if x is None else x for x in old])
        return np.exp2(new - base) - np.exp2(before - base)

    def _rescale(self, shift: float) -> None:
        """Move the anchor ``shift`` half-lives later (the shared-delta base moves with it)."""
        factor = 2.0 ** (-shift)
        self._acc *= factor
        self._top_floor *= factor  # every score scaled alike: the order and the kept rows stay
        base = getattr(self, "_shared_base", None)
        if base is not None:
            base["_acc"] *= factor
        self._anchor = (self._anchor or 0.0) + shift * (self.half_life or 0.0)

    # -- sharing across workers: scores travel with the anchor they are relative to

    def _take_item_delta_extra(self, delta: Any) -> None:
        delta.extra["anchor"] = self._anchor

    def _export_items_extra(self, delta: Any, rows: np.ndarray) -> None:
        delta.extra["anchor"] = self._anchor

    def _in_one_frame(self, deltas: list[Any]) -> list[Any]:
        """Scores relative to the newest anchor among ``deltas`` (older ones scaled down: no overflow)."""
        return [type(d)(d.model, d.items, arrays, d.globals, {**d.extra, "anchor": anchor}, d.extra_arrays)
                for d, arrays, anchor in _one_anchor(deltas, "_acc", self.half_life)]  # fmt: skip

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

    # -- the kept top list: a list for a user or the fallback costs O(TOP_KEPT), not O(catalogue)

    def _top_raised(self, rows: np.ndarray) -> None:
        """Scores of ``rows`` went up (they never go down as events arrive): admit those above the floor.

        Admitted rows are appended; the list is cut back to the ``TOP_KEPT``
        largest only when it doubles, so an admission costs O(1) amortised.
        """
        if self._top is None or not len(rows):
            return
        acc, member = self._acc, self._top_member
        if len(member) < self.n_items:
            self._top_member = member = self._grown(member, self.n_items)
        rows = rows[(acc[rows] > self._top_floor) & ~member[rows]]  # most events touch kept items: nothing to do
        if not len(rows):
            return
        rows = np.unique(rows)
        n, buf = self._top_n, self._top_buf
        if n + len(rows) > len(buf):  # cut back to the TOP_KEPT largest
            kept = np.concatenate([buf[:n], rows])
            keep = kept[np.argpartition(acc[kept], len(kept) - TOP_KEPT)[len(kept) - TOP_KEPT :]]
            member[kept] = False
            member[keep] = True
            buf[: len(keep)] = keep
            self._top_n = len(keep)
            self._top_floor = float(acc[keep].min())
            return
        buf[n : n + len(rows)] = rows
        member[rows] = True
        self._top_n = n + len(rows)

    @property
    def _top(self) -> np.ndarray | None:
        """The kept rows (unordered): every live row outside has ``_acc <= _top_floor``; ``None``: not kept."""
        return None if self._top_n < 0 else self._top_buf[: self._top_n]

    def _top_forget(self) -> None:
        """Scores may have gone down (a whole state imported, items evicted): rebuilt at the next list."""
        self._top_n = -1

    def _top_rebuild(self) -> None:
        n = self.n_items
        acc = self._acc[:n].copy()
        if self.item_index.n_free:
            acc[self.item_index.free_rows()] = -np.inf
        top = top_k_row(acc, TOP_KEPT)[0]  # not argpartition: most of a large catalogue ties at 0
        self._top_floor = float(acc[top].min()) if len(top) else 0.0
        top = top[np.isfinite(acc[top])]
        self._top_buf = np.empty(2 * TOP_KEPT, dtype=np.int64)
        self._top_buf[: len(top)] = top
        self._top_n = len(top)
        self._top_member = np.zeros(n, dtype=bool)
        self._top_member[top] = True

    def _global_top(self, m: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.n_items <= TOP_KEPT or m > TOP_KEPT // 2:
            return None  # a small catalogue, or a long list: one pass over the items
        if self._top is None:
            self._top_rebuild()
        top = self._top
        assert top is not None
        factor = 1.0
        if self.half_life is not None and self._anchor is not None:
            factor = 2.0 ** (-(self.last_timestamp - self._anchor) / self.half_life)
        values = (self._acc[top] * factor).astype(np.float32)  # as item_scores() then _score compute them
        if len(values) < m:
            return None
        # the m largest, ties at the m-th place to the lower rows, ordered by (score desc, row asc): a full pass's order
        t = np.partition(values, len(values) - m)[len(values) - m]
        above = np.flatnonzero(values > t)
        tied = np.flatnonzero(values == t)
        tied = tied[np.argsort(top[tied], kind="stable")[: m - len(above)]]
        chosen = np.concatenate([above, tied])
        order = chosen[np.lexsort((top[chosen], -values[chosen]))]
        if not values[order[-1]] > np.float32(self._top_floor * factor):
            return None  # a tie with rows outside the kept list could reorder the m-th place
        return top[order], values[order]

    def _after_item_change(self, rows: np.ndarray) -> None:
        self._top_raised(rows)  # another worker's increments (positive, as learning's)

    def _apply_item_delta_extra(self, delta: Any, rows: np.ndarray) -> None:
        if delta.extra.get("absolute") or any((np.asarray(v) < 0).any() for v in delta.arrays.values()):
            self._top_forget()  # a whole state, or a decrease: rebuilt at the next list

    def item_scores(self) -> np.ndarray:
        """Decayed score of every item at the newest event time seen."""
        acc = self._acc[: self.n_items]
        if self.half_life is None or self._anchor is None:
            return acc.copy()
        return acc * 2.0 ** (-(self.last_timestamp - self._anchor) / self.half_life)

    def browse_scores(self) -> np.ndarray:
        """Scores that order a catalogue page (a category list) for anyone: :meth:`item_scores` here."""
        return self.item_scores()

    def _score(self, u: np.ndarray) -> np.ndarray:
        row = self.item_scores().astype(np.float32)
        return np.broadcast_to(row, (len(u), row.shape[0]))

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Erase what each user gave each item; the item scores are aggregates and stay (see ``forget_user``)."""
        for r in rows.tolist():
            self._strongest.pop(r, None)

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        self._acc[rows] = 0.0
        self._top_forget()  # evicted rows leave the list: rebuilt at the next list
        dead = set(rows.tolist())
        for parts in self._strongest.values():
            if not parts.keys().isdisjoint(dead):
                for r in dead:
                    parts.pop(r, None)

    def _state(self) -> dict[str, np.ndarray]:
        sizes = np.zeros(self.n_users, dtype=np.int64)
        owners = sorted(r for r, parts in self._strongest.items() if parts)
        sizes[owners] = [len(self._strongest[r]) for r in owners]
        pairs = [(item, level) for r in owners for item, level in sorted(self._strongest[r].items())]
        return {
            "acc": self._acc[: self.n_items],
            "strongest_sizes": sizes,
            "strongest_items": np.array([p[0] for p in pairs], dtype=np.int64),
            "strongest_levels": np.array([p[1] for p in pairs], dtype=np.float64),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._acc = self._grown(arrays["acc"].astype(np.float64), self.n_items)
        self._top_forget()
        self._strongest = {}
        sizes = arrays.get("strongest_sizes")  # absent in files written before per_user existed
        if sizes is None:
            return
        items, levels = arrays["strongest_items"].tolist(), arrays["strongest_levels"].tolist()
        at = 0
        for r, n in enumerate(sizes.tolist()):
            if n:
                self._strongest[r] = dict(zip(items[at : at + n], levels[at : at + n], strict=True))
                at += n

    # -- what each user gave each item travels with the user (per_user="max")

    def _export_user_extra(self, rows: np.ndarray) -> dict[str, Any]:
        if self.per_user != "max":
            return {}
        ids = self.item_index.ids
        out = []
        for r in rows.tolist():
            parts = sorted(self._strongest.get(r, {}).items())
            out.append({"items": [ids[i] for i, _ in parts], "levels": [level for _, level in parts]})
        return {"strongest": out}

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        records = extra.get("strongest") or [None] * len(rows)
        for r, record in zip(rows.tolist(), records, strict=True):
            self._strongest.pop(r, None)
            if record and record["items"]:
                items = self._rows_for_items(record["items"]).tolist()
                self._strongest[r] = dict(zip(items, map(float, record["levels"]), strict=True))

    def _extra_meta(self) -> dict[str, Any]:
        return {"anchor": self._anchor}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._anchor = extra.get("anchor")

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"half_life": 3600.0}, {"half_life": None}, {"half_life": 3600.0, "per_user": "sum"}]


def _one_anchor(
    deltas: list[Any], name: str, half_life: float | None, anchor_of: Any = None
) -> list[tuple[Any, dict[str, np.ndarray], float | None]]:
    """Each delta's arrays with array ``name`` moved to the newest anchor among ``deltas``, and that anchor.

    ``anchor_of(delta)`` reads a delta's anchor (default: ``extra["anchor"]``).
    Scores decay as ``2 ** (-(t - anchor) / half_life)``, so a score kept
    relative to an older anchor is scaled by ``2 ** ((theirs - newest) / half_life)``.
    """
    read = anchor_of or (lambda d: d.extra.get("anchor"))
    known = [read(d) for d in deltas if read(d) is not None]
    newest = max(known) if known else None
    out = []
    for delta in deltas:
        theirs, arrays = read(delta), dict(delta.arrays)
        if half_life is not None and theirs is not None and newest is not None and theirs != newest and name in arrays:
            arrays[name] = arrays[name] * 2.0 ** ((theirs - newest) / half_life)
        out.append((delta, arrays, newest if half_life is not None else read(delta)))
    return out
