"""The protocol every online model implements, and the machinery they share.

A model learns from :class:`Interactions` (a columnar micro-batch of events in
arrival order) and recommends top-k items for a batch of users as
:class:`Recommendations`. It keeps its own id indices, so new users and items
are handled on first sight with no re-fit. Models import nothing from Kafka,
Faust or Redis: the stream app, the backtest and the benchmarks all call the
same methods.

Subclasses implement four hooks:

- ``_grow(n_users, n_items)``: make room for newly indexed users and items;
- ``_learn(u, i, batch)``: update from the batch given as index arrays;
- ``_score(u)``: a dense ``(len(u), n_items)`` float matrix of scores for the
  user indices ``u`` (``-1`` marks a user never seen: score them cold);
- ``_state()`` / ``_set_state(arrays)``: the model's arrays for save/load;

and two hooks that erase rows so that their ids can go:

- ``_forget_rows(rows)``: reset the per-user state of user rows (used by
  :meth:`OnlineRecommender.forget_user` and by eviction);
- ``_forget_item_rows(rows)``: reset the state of item rows (eviction).

Ids map to rows through :class:`models.ids.IdIndex`; a freed row is a
tombstone until a new id reuses it. With :meth:`OnlineRecommender.set_capacity`
the number of rows stays bounded: before a batch's new ids are indexed, the
least recently active users and items make room for them.
"""

from __future__ import annotations

import inspect
import itertools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models.ids import IdIndex
from models.persistence import read_model_dir, write_model_dir
from models.ranking import top_k, top_k_row, top_k_row_by
from models.sharing import ItemDelta, UserStates, item_parts, sum_item_rows

__all__ = ["Interactions", "OnlineRecommender", "Recommendations"]

ContextT = Mapping[str, Any] | None
#: Calls for at most this many users score each user's row; larger calls of shared-ranking
#: models rank within the global top candidates (the same lists either way).
_FEW_USERS = 4


def _as_str_array(values: Iterable[Any]) -> np.ndarray:
    array = np.asarray([str(v) for v in values], dtype=object)
    return array


@dataclass(frozen=True)
class Interactions:
    """A micro-batch of user-item events in arrival order, stored by column.

    Parameters
    ----------
    users, items
        Opaque ids (converted to ``str``).
    timestamps
        Event times in seconds since the epoch (``float64``).
    weights
        Implicit strength of each event (a view counts less than a purchase).
    ratings
        Explicit rating of each event, ``NaN`` where the event is not a rating.
    contexts
        Optional per-event context (device, hour, ...), ``None`` where absent.

    Examples
    --------
    >>> batch = Interactions.from_columns(["u1", "u2"], ["i1", "i1"], timestamps=[1.0, 2.0])
    >>> len(batch), batch.users.tolist(), batch.weights.tolist()
    (2, ['u1', 'u2'], [1.0, 1.0])
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    weights: np.ndarray
    ratings: np.ndarray
    contexts: tuple[ContextT, ...] | None = None

    @classmethod
    def from_columns(
        cls,
        users: Iterable[Any],
        items: Iterable[Any],
        timestamps: Iterable[float] | None = None,
        weights: Iterable[float] | None = None,
        ratings: Iterable[float] | None = None,
        contexts: Iterable[ContextT] | None = None,
    ) -> Interactions:
        """Build a batch from columns, filling defaults for the optional ones."""
        u = _as_str_array(users)
        i = _as_str_array(items)
        n = len(u)
        if len(i) != n:
            raise ValueError(f"users and items differ in length: {n} != {len(i)}")

        def column(values: Iterable[float] | None, default: float, dtype: Any) -> np.ndarray:
            if values is None:
                return np.full(n, default, dtype=dtype)
            array = np.array(list(values) if not isinstance(values, np.ndarray) else values, dtype=dtype)
            if array.shape != (n,):
                raise ValueError(f"a column has shape {array.shape}, expected ({n},)")
            return array

        ts = column(timestamps, 0.0, np.float64)
        if timestamps is None:
            ts = np.arange(n, dtype=np.float64)
        ctx = None if contexts is None else tuple(contexts)
        if ctx is not None and len(ctx) != n:
            raise ValueError(f"contexts has {len(ctx)} entries, expected {n}")
        return cls(
            users=u,
            items=i,
            timestamps=ts,
            weights=column(weights, 1.0, np.float32),
            ratings=column(ratings, np.nan, np.float32),
            contexts=ctx,
        )

    def __len__(self) -> int:
        return len(self.users)

    def select(self, mask_or_index: np.ndarray) -> Interactions:
        """Return the sub-batch picked by a boolean mask or an index array."""
        ctx = None
        if self.contexts is not None:
            idx = np.arange(len(self))[mask_or_index]
            ctx = tuple(self.contexts[j] for j in idx)
        return Interactions(
            users=self.users[mask_or_index],
            items=self.items[mask_or_index],
            timestamps=self.timestamps[mask_or_index],
            weights=self.weights[mask_or_index],
            ratings=self.ratings[mask_or_index],
            contexts=ctx,
        )


@dataclass(frozen=True)
class Recommendations:
    """Top-k lists for a batch of users, best first.

    ``items[n]`` and ``scores[n]`` belong to ``users[n]``; a list is shorter
    than ``k`` when fewer items are eligible. ``reasons[n][j]``, when the model
    gives reasons, is the id of the item that most explains ``items[n][j]``.
    """

    users: list[str]
    items: list[list[str]]
    scores: list[list[float]]
    reasons: list[list[str | None]] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.users)

    def as_dict(self) -> dict[str, list[str]]:
        """Map each user to its ranked item ids."""
        return dict(zip(self.users, self.items, strict=True))


_REGISTRY: dict[str, type[OnlineRecommender]] = {}


class OnlineRecommender(ABC):
    """Base class of every online model: id handling, seen items, top-k, save/load.

    Constructor arguments are the hyperparameters (River style): they are
    stored as attributes of the same name, returned by :meth:`get_params` and
    written to ``params.json`` by :meth:`save`.
    """

    #: Registry name of the model (also the suffix of its Redis keys).
    name: ClassVar[str] = "base"
    #: Whether scores depend on the user (popularity does not).
    personalized: ClassVar[bool] = True
    #: Whether learning a batch equals learning its events one by one.
    batch_equals_sequential: ClassVar[bool] = False
    #: Whether the model learns from explicit ratings only.
    uses_ratings: ClassVar[bool] = False
    #: Whether forgetting a user changes other users' lists (user-kNN: the user was their neighbour).
    forget_changes_other_users: ClassVar[bool] = False
    #: Whether the items :meth:`_score_sparse` leaves out score 0 (exact) or are retrieved approximately.
    sparse_rest_zero: ClassVar[bool] = True
    #: Whether every change to the shared item arrays is to a row of a learned batch's items or a row
    #: the model notes with :meth:`_note_item_rows`: a delta then compares those rows only, not the catalogue.
    item_changes_tracked: ClassVar[bool] = False
    #: Whether :meth:`learn_negatives` teaches the model anything (explicit "not interested" feedback).
    learns_negatives: ClassVar[bool] = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        #: Caps on the live users and items (``None``: unbounded); see :meth:`set_capacity`.
        self.max_users: int | None = None
        self.max_items: int | None = None
        self._init_state()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and "name" in cls.__dict__:  # a subclass that names itself
            _REGISTRY[cls.name] = cls

    # -- state shared by every model -------------------------------------------------

    def _init_state(self) -> None:
        self.user_index = IdIndex()
        self.item_index = IdIndex()
        self._seen: list[set[int]] = []
        # user row -> array whose first len(_seen[row]) entries are the row's seen items (spare capacity after),
        # kept up to date as items are learned so that masking them costs no conversion of a set
        self._seen_arrays: dict[int, np.ndarray] = {}
        self.n_learned = 0
        self.last_timestamp = float("-inf")
        # per row: arrival number (0, 1, ... over all events learned) of its newest event; -1 when free
        self._user_active = np.zeros(0, dtype=np.int64)
        self._item_active = np.zeros(0, dtype=np.int64)
        self._sized_for = (-1, -1)  # (users, items) rows the arrays were last grown for by learn
        # while sharing: item rows changed (noted) and freed since the last delta (item_changes_tracked)
        self._noted_items: list[np.ndarray] = []
        self._freed_items: list[np.ndarray] = []

    @property
    def n_users(self) -> int:
        """Rows of the user index (free rows included): the row capacity of per-user arrays."""
        return len(self.user_index)

    @property
    def n_items(self) -> int:
        """Rows of the item index (free rows included): the row capacity of per-item arrays."""
        return len(self.item_index)

    def get_params(self) -> dict[str, Any]:
        """Return the constructor arguments (hyperparameters) of this model."""
        signature = inspect.signature(type(self).__init__)
        return {
            name: getattr(self, name)
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def clone(self) -> OnlineRecommender:
        """Return a fresh, untrained model with the same hyperparameters and capacity."""
        fresh = type(self)(**self.get_params())
        fresh.set_capacity(self.max_users, self.max_items)
        return fresh

    def has_history(self, user: Any) -> bool:
        """Whether the model has learned at least one event of ``user``."""
        idx = self.user_index.get(str(user))
        return idx >= 0 and bool(self._seen[idx])

    def seen_items(self, user: Any) -> set[str]:
        """Ids of the items ``user`` interacted with (empty for unknown users)."""
        idx = self.user_index.get(str(user))
        if idx < 0:
            return set()
        return {self.item_index.id_of(i) for i in self._seen[idx]}

    def learn_negatives(self, batch: Interactions) -> None:
        """Learn explicit negative feedback: the user of each event does not want its item ("not interested").

        Only pairs of a known user and a known item teach anything (there is nothing to push apart
        otherwise); the items are not recorded as seen (reads leave them out through the user's
        not-interested set). A model that cannot use negatives (``learns_negatives`` false) ignores them.
        """
        if not self.learns_negatives or len(batch) == 0:
            return
        u = self.user_index.lookup(batch.users)
        i = self.item_index.lookup(batch.items)
        known = (u >= 0) & (i >= 0)
        if not known.any():
            return
        self._learn_negatives(u[known], i[known], batch.select(known))
        if self.item_changes_tracked:
            self._note_item_rows(i[known])

    def _learn_negatives(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        """One step away from the pairs ``(u, i)`` (rows of known users and items); see :meth:`learn_negatives`."""

    # -- privacy and bounded memory ----------------------------------------------------

    def forget_user(self, user: Any) -> bool:
        """Remove every trace of ``user`` from the model; return whether it was known.

        The user's seen items, their row in ``user_index`` and their per-user
        state (factor rows, biases, history windows, last context, optimiser
        state) are erased, and the row is freed for a later user. If the same
        id comes back it is a new, cold user. A saved model no longer holds
        the id.

        Aggregates that do not identify the user stay: item popularity,
        item co-occurrence counts, item factors and biases, the global rating
        mean and the event counter were shaped by the user's events but keep
        nothing keyed by them, and removing their contribution would need the
        events themselves. Lists of other known users do not change; the
        cold-start list of models that score unknown users with the mean user
        vector can, as the mean no longer includes this user.

        Examples
        --------
        >>> from models.popularity import Popularity
        >>> model = Popularity(half_life=None)
        >>> model.learn(Interactions.from_columns(["ann", "bob"], ["tea", "jam"]))
        >>> model.forget_user("ann"), model.has_history("ann"), model.forget_user("ann")
        (True, False, False)
        >>> model.user_index.ids   # a tombstone, reused by the next new user
        [None, 'bob']
        """
        row = self.user_index.get(str(user))
        if row < 0:
            return False
        self._drop_user_rows(np.array([row], dtype=np.int64))
        return True

    def set_capacity(self, max_users: int | None = None, max_items: int | None = None) -> None:
        """Bound the number of users and items kept, evicting the least recently active.

        Before a batch (or a catalogue update) indexes new ids past a cap,
        the users (items) whose newest event is oldest and that are not in
        the batch are evicted: a user as by :meth:`forget_user`, an item by
        resetting its state and dropping it from every user's seen items.
        New ids reuse the freed rows, so ``n_users <= max_users`` and
        ``n_items <= max_items`` hold whatever the number of ids in the
        stream. A batch with more distinct users or items than a cap is
        learned in consecutive parts that fit.

        The caps are a resource setting, not a hyperparameter: they are not
        constructor arguments (so every model gets them without a change to
        its signature or ``get_params``), but :meth:`save`, :meth:`load` and
        :meth:`clone` keep them. Lowering a cap evicts at once; rows already
        allocated stay allocated (later ids reuse them). Evicting items
        visits every user's seen items, ``O(users)`` per evicting batch.

        Parameters
        ----------
        max_users, max_items
            Caps on live users and items (positive), or ``None`` for no cap.

        Examples
        --------
        >>> from models.popularity import Popularity
        >>> model = Popularity(half_life=None)
        >>> model.set_capacity(max_users=2, max_items=2)
        >>> model.learn(Interactions.from_columns(["ann", "bob", "cid"], ["tea", "jam", "ham"]))
        >>> model.n_users, model.user_index.ids, model.item_index.ids   # ann and tea were evicted
        (2, ['cid', 'bob'], ['ham', 'jam'])
        """
        for name, cap in (("max_users", max_users), ("max_items", max_items)):
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int | np.integer) or cap < 1):
                raise ValueError(f"{name} must be a positive int or None, got {cap!r}")
        self.max_users = None if max_users is None else int(max_users)
        self.max_items = None if max_items is None else int(max_items)
        self._make_room((), ())

    # -- the protocol ----------------------------------------------------------------

    def learn(self, batch: Interactions) -> None:
        """Update the model from a micro-batch of events (arrival order).

        New users and items are indexed on first sight. Models that learn
        from explicit ratings only (``uses_ratings``) learn nothing from events
        whose rating is ``NaN``, but still record their items as seen. Under
        caps (:meth:`set_capacity`) the least recently active users and items
        are evicted first to make room for the batch's new ids.
        """
        if len(batch) == 0:
            return
        if self.max_users is None and self.max_items is None:
            self._learn_batch(batch)
            return
        for part in self._capacity_parts(batch):
            self._make_room(part.users.tolist(), part.items.tolist())
            self._learn_batch(part)

    def _learn_batch(self, batch: Interactions) -> None:
        n = len(batch)
        if n == 1:  # the per-event path: scalars instead of array machinery
            uu, ii = self.user_index.add(batch.users[0]), self.item_index.add(batch.items[0])
            u, i = np.array([uu], dtype=np.int64), np.array([ii], dtype=np.int64)
        else:
            u = self.user_index.add_many(batch.users)
            i = self.item_index.add_many(batch.items)
        sizes = (len(self.user_index), len(self.item_index))
        if sizes != self._sized_for:  # new rows: every array grows (nothing to do for known ids)
            self._grow_base_state()
            self._grow(*sizes)
            self._sized_for = sizes
        if self.uses_ratings:
            rated = ~np.isnan(batch.ratings)
            if rated.all():
                self._learn(u, i, batch)
            elif rated.any():
                self._learn(u[rated], i[rated], batch.select(rated))
        else:
            self._learn(u, i, batch)
        if self.item_changes_tracked:
            self._note_item_rows(i)
        seen, arrays = self._seen, self._seen_arrays
        if n == 1:
            s = seen[uu]
            if ii not in s:
                s.add(ii)
                if uu in arrays:
                    self._append_seen(uu, ii, len(s))
            self._user_active[uu] = self._item_active[ii] = self.n_learned
            self.last_timestamp = max(self.last_timestamp, float(batch.timestamps[0]))
        else:
            for a, b in zip(u.tolist(), i.tolist(), strict=True):
                s = seen[a]
                if b not in s:
                    s.add(b)
                    if a in arrays:
                        self._append_seen(a, b, len(s))
            arrival = np.arange(self.n_learned, self.n_learned + n, dtype=np.int64)
            np.maximum.at(self._user_active, u, arrival)
            np.maximum.at(self._item_active, i, arrival)
            self.last_timestamp = max(self.last_timestamp, float(batch.timestamps.max()))
        self.n_learned += n

    def add_items(
        self,
        items: Iterable[Any],
        tags: Iterable[Sequence[str]] | None = None,
        titles: Iterable[str | None] | None = None,
    ) -> None:
        """Add items to the catalogue before any interaction (catalogue updates).

        ``tags`` (genres, categories) and ``titles`` are ignored by models
        without content features; the catalogue still grows so new items can
        be recommended. An added item counts as active now (for eviction
        under ``max_items``).
        """
        ids = _as_str_array(items)
        cap = self.max_items
        chunks = [ids] if cap is None else [ids[a : a + cap] for a in range(0, len(ids), cap)]
        for chunk in chunks:
            if cap is not None:
                self._make_room((), chunk.tolist())
            rows = self.item_index.add_many(chunk)
            self._grow_base_state()
            self._grow(self.n_users, self.n_items)
            self._item_active[rows] = self.n_learned
        content = {
            name: [tuple(v) for v in values] if name == "tags" else [v or "" for v in values]
            for name, values in (("tags", tags), ("titles", titles))
            if values is not None
        }
        if len(chunks) > 1 and content:  # more items than the cap: the first ones were evicted again
            live = (self.item_index.lookup(ids) >= 0).tolist()
            ids = ids[np.asarray(live, dtype=bool)]
            content = {k: [v for v, ok in zip(vs, live, strict=True) if ok] for k, vs in content.items()}
        if "tags" in content:
            self._set_item_tags(ids, content["tags"])  # type: ignore[arg-type]
        if "titles" in content:
            self._set_item_titles(ids, content["titles"])  # type: ignore[arg-type]

    def recommend(
        self,
        users: Iterable[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Mapping[str, Iterable[Any]] | None = None,
        with_reasons: bool = True,
    ) -> Recommendations:
        """Recommend the top-``k`` items for each user in ``users``.

        A user's list does not depend on which other users are in the call:
        the live worker and the backtest batch users differently.

        Parameters
        ----------
        users
            User ids; unknown users get the model's cold-start ranking.
        k
            List length; larger than the catalogue returns every eligible item.
        exclude_seen
            Leave out the items each user already interacted with.
        exclude
            Further item ids to leave out, per user id.
        with_reasons
            Explain each item when the model can (``reasons``); the backtest
            does not need them and saves the time.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        user_ids = [str(u) for u in users]
        if not user_ids or self.n_items == 0 or k == 0:
            return Recommendations(user_ids, [[] for _ in user_ids], [[] for _ in user_ids])
        if len(user_ids) == 1 and not exclude:
            return self._recommend_one(user_ids[0], k, exclude_seen, with_reasons)
        u = self.user_index.lookup(user_ids)
        none = np.zeros(0, dtype=np.intp)
        excluded: list[np.ndarray] = [none] * len(user_ids)
        if exclude_seen:
            seen_array = self._seen_array
            excluded = [seen_array(x) if x >= 0 else none for x in u.tolist()]
        if exclude:
            for row, uid in enumerate(user_ids):
                extra = self.item_index.lookup([str(v) for v in exclude.get(uid, ())])
                excluded[row] = np.concatenate([excluded[row], extra[extra >= 0]])
        sparse = self._score_sparse(u, [k + len(e) for e in excluded]) if self.personalized else None
        if sparse is not None:  # the model scored a few items per user: rank those, no pass over the catalogue
            return self._recommend_sparse(user_ids, u, sparse, k, excluded, with_reasons)
        if self.personalized or len(u) <= _FEW_USERS:  # few users: score their rows directly
            raw = self._score(u)
            # a fresh float32 array is masked in place; views and other dtypes are copied
            fresh = isinstance(raw, np.ndarray) and raw.dtype == np.float32 and raw.flags.writeable and raw.base is None
            scores = raw if fresh else np.array(raw, dtype=np.float32, copy=True)
            if scores.shape != (len(u), self.n_items):
                raise RuntimeError(f"{self.name}._score returned {scores.shape}, expected {(len(u), self.n_items)}")
            columns = None
        else:  # one ranking for everyone: rank each user within the global top (k + most excluded)
            scores, columns, excluded = self._global_candidates(u, k, excluded)
        if not np.isfinite(scores).all():
            np.nan_to_num(scores, copy=False, nan=-3.0e38, posinf=3.0e38, neginf=-3.0e38)
        if columns is None and self.item_index.n_free:  # tombstones hold no item: never recommend them
            scores[:, self.item_index.free_rows()] = -np.inf
        self._mask(scores, excluded)
        idx, vals = top_k(scores, k)
        if columns is not None:
            idx = columns[idx]
        ids = self.item_index.ids
        items: list[list[str]] = []
        out_scores: list[list[float]] = []
        for row_idx, row_vals in zip(idx.tolist(), vals.tolist(), strict=True):
            c = len(row_vals)
            while c and row_vals[c - 1] == -np.inf:  # masked items sort last
                c -= 1
            items.append([ids[j] for j in row_idx[:c]])
            out_scores.append(row_vals[:c])
        reasons = self._reasons(u, idx, [len(r) for r in items]) if with_reasons else None
        return Recommendations(user_ids, items, out_scores, reasons)

    def _recommend_one(self, user_id: str, k: int, exclude_seen: bool, with_reasons: bool) -> Recommendations:
        """:meth:`recommend` for one user: the same list, without the batch machinery (the per-event path)."""
        u, rows, values = self._top_rows_one(user_id, k, exclude_seen)
        ids = self.item_index.ids
        items = [ids[j] for j in rows.tolist()]
        reasons = self._reasons(u, rows[None, :].astype(np.int64), [len(items)]) if with_reasons else None
        return Recommendations([user_id], [items], [values], reasons)  # type: ignore[list-item]

    def _top_rows_one(self, user_id: str, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray, list[float]]:
        """One user's list as item rows, best first, with scores: what :meth:`recommend` names, before the ids.

        Returns the user's row (as a one-element array), the item rows and
        their scores. A model that holds another's item rows (the hybrid's
        members) reads its members' lists through it without the ids.
        """
        row = self.user_index.get(user_id)
        u = np.array([row], dtype=np.int64)
        n = len(self.item_index)
        if n == 0 or k == 0:
            return u, np.zeros(0, dtype=np.int64), []
        seen = self._seen_array(row) if exclude_seen and row >= 0 else np.zeros(0, dtype=np.intp)
        if not self.personalized:
            top = self._global_top(min(k + len(seen), n))
            if top is not None:  # the model's kept top list
                columns, values = top
                if len(seen):
                    keep = ~np.isin(columns, seen)
                    columns, values = columns[keep], values[keep]
                return u, np.asarray(columns[:k], dtype=np.int64), values[:k].tolist()
        else:
            sparse = self._score_sparse(u, [k + len(seen)])
            if sparse is not None:
                idx, scores = self._rank_scored(u, *sparse[0], k, seen)
                return u, np.asarray(idx, dtype=np.int64), scores
        raw = self._score(u)
        if raw.shape != (1, n):
            raise RuntimeError(f"{self.name}._score returned {raw.shape}, expected {(1, n)}")
        scores_row = np.array(raw[0], dtype=np.float32, copy=True)
        if not np.isfinite(scores_row).all():
            np.nan_to_num(scores_row, copy=False, nan=-3.0e38, posinf=3.0e38, neginf=-3.0e38)
        if self.item_index.n_free:  # tombstones hold no item: never recommend them
            scores_row[self.item_index.free_rows()] = -np.inf
        if len(seen):
            scores_row[seen] = -np.inf
        idx, top = top_k_row(scores_row, min(k, n))
        values = top.tolist()
        c = len(values)
        while c and values[c - 1] == -np.inf:  # masked items sort last
            c -= 1
        return u, np.asarray(idx[:c], dtype=np.int64), values[:c]

    def _recommend_sparse(
        self,
        user_ids: list[str],
        u: np.ndarray,
        sparse: list[tuple[np.ndarray, np.ndarray]],
        k: int,
        excluded: list[np.ndarray],
        with_reasons: bool,
    ) -> Recommendations:
        """:meth:`recommend` from per-user sparse scores (:meth:`_score_sparse`): the lists the dense scores give."""
        ids = self.item_index.ids
        rows: list[np.ndarray] = []
        out_scores: list[list[float]] = []
        for r, ((cols, vals), banned) in enumerate(zip(sparse, excluded, strict=True)):
            idx, values = self._rank_scored(u[r : r + 1], cols, vals, k, banned)
            rows.append(idx)
            out_scores.append(values)
        width = max((len(r) for r in rows), default=0)
        idx = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            idx[r, : len(row)] = row
        items = [[ids[j] for j in row.tolist()] for row in rows]
        reasons = self._reasons(u, idx, [len(r) for r in rows]) if with_reasons else None
        return Recommendations(user_ids, items, out_scores, reasons)  # type: ignore[arg-type]

    def _rank_scored(
        self, u: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int, banned: np.ndarray
    ) -> tuple[np.ndarray, list[float]]:
        """The top ``k`` of one user's sparse scores (:meth:`_score_sparse`), as the model ranks them."""
        if self.sparse_rest_zero:
            return self._rank_sparse(cols, vals, k, banned)
        return self._rank_candidates(u, cols, vals, k, banned)

    def _rank_candidates(
        self, u: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int, banned: np.ndarray
    ) -> tuple[np.ndarray, list[float]]:
        """The top ``k`` of a user's retrieved candidates (exact scores); a dense pass when too few remain."""
        cols = np.asarray(cols, dtype=np.int64)
        vals = np.asarray(vals, dtype=np.float32)
        keep = np.isin(cols, self._live_item_rows(cols)) if self.item_index.n_free else np.ones(len(cols), dtype=bool)
        if len(banned) and len(cols):
            keep &= ~np.isin(cols, banned)
        cols, vals = cols[keep], vals[keep]
        if len(cols) < min(k, self.item_index.n_live - len(banned)):  # the index ran short: score every item
            row = np.array(self._score(u)[0], dtype=np.float32, copy=True)
            if not np.isfinite(row).all():
                np.nan_to_num(row, copy=False, nan=-3.0e38, posinf=3.0e38, neginf=-3.0e38)
            if self.item_index.n_free:
                row[self.item_index.free_rows()] = -np.inf
            row[banned] = -np.inf
            idx, top = top_k_row(row, min(k, len(row)))
            values = top.tolist()
            c = len(values)
            while c and values[c - 1] == -np.inf:
                c -= 1
            return idx[:c].astype(np.int64), values[:c]
        order = np.argsort(cols, kind="stable")  # ties to the lower row, as in a dense ranking
        cols, vals = cols[order], vals[order]
        pos, top = top_k_row(vals, min(k, len(cols))) if len(cols) else (cols, vals)
        return cols[pos], top.tolist()

    def _rank_sparse(
        self, cols: np.ndarray, vals: np.ndarray, k: int, banned: np.ndarray
    ) -> tuple[np.ndarray, list[float]]:
        """The top ``k`` of a score row given by its positive entries (every other item scores 0).

        The same rows and order as ranking the dense row with ``banned`` rows
        and free rows masked: positive scores first (ties to the lower row),
        then items of score 0 in row order. Costs ``O(len(cols) + k + len(banned))``.
        """
        ids = self.item_index.ids
        cols = np.asarray(cols, dtype=np.int64)
        vals = np.asarray(vals, dtype=np.float32)
        keep = vals > 0
        cols, vals = cols[keep], vals[keep]
        if self.item_index.n_free and len(cols):
            live = np.isin(cols, self._live_item_rows(cols))
            cols, vals = cols[live], vals[live]
        if len(cols):
            # the banned rows can take at most len(banned) places: rank k + len(banned), then drop them
            # (the same top k as dropping them from every candidate first, without a lookup per candidate)
            pos, top = top_k_row_by(vals, cols, min(k + len(banned), len(cols)))  # ties go to the lower row
            chosen = cols[pos]
            if len(banned):
                allowed = ~np.isin(chosen, banned, kind="sort")  # "table" would allocate the range of rows
                chosen, top = chosen[allowed], top[allowed]
            chosen, values = chosen[:k], top[:k].tolist()
        else:
            chosen, values = cols, []
        if len(chosen) < k:  # items scoring 0 follow, in row order, as in a dense row
            skip = set(banned.tolist()) | set(cols.tolist())
            fill: list[int] = []
            need, n = k - len(chosen), len(ids)
            row = 0
            while len(fill) < need and row < n:
                if ids[row] is not None and row not in skip:
                    fill.append(row)
                row += 1
            chosen = np.concatenate([chosen, np.asarray(fill, dtype=np.int64)])
            values = values + [0.0] * len(fill)
        return chosen, values

    def save(self, path: str | Path) -> Path:
        """Write the model to directory ``path`` (JSON and ``.npz``; no pickle).

        Free rows are written as ``null`` ids (tombstones), so forgotten and
        evicted ids are not in the files.
        """
        self._grow_base_state()
        seen_sizes = np.array([len(s) for s in self._seen], dtype=np.int64)
        seen_flat = np.fromiter((i for s in self._seen for i in sorted(s)), dtype=np.int64, count=int(seen_sizes.sum()))
        arrays = {f"model.{k}": np.asarray(v) for k, v in self._state().items()}
        arrays["base.seen_sizes"] = seen_sizes
        arrays["base.seen_items"] = seen_flat
        arrays["base.user_active"] = self._user_active[: self.n_users]
        arrays["base.item_active"] = self._item_active[: self.n_items]
        meta = {
            "model": self.name,
            "params": self.get_params(),
            "user_ids": self.user_index.ids,
            "item_ids": self.item_index.ids,
            "n_learned": self.n_learned,
            "last_timestamp": self.last_timestamp if np.isfinite(self.last_timestamp) else None,
            "capacity": {"max_users": self.max_users, "max_items": self.max_items},
            "extra": self._extra_meta(),
        }
        return write_model_dir(path, meta, arrays)

    @classmethod
    def load(cls, path: str | Path) -> OnlineRecommender:
        """Read a model written by :meth:`save` (any registered model class)."""
        meta, arrays = read_model_dir(path)
        model_cls = _REGISTRY.get(meta["model"])
        if model_cls is None:  # not imported yet: resolve it through the lazy registry
            from models import MODEL_PATHS, model_class

            if meta["model"] not in MODEL_PATHS:
                raise ValueError(f"{path}: unknown model {meta['model']!r}; known: {sorted(MODEL_PATHS)}")
            model_cls = model_class(meta["model"])
        if cls is not OnlineRecommender and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a {model_cls.__name__}, not a {cls.__name__}")
        model = model_cls(**meta["params"])
        model.user_index = IdIndex(meta["user_ids"])
        model.item_index = IdIndex(meta["item_ids"])
        sizes = arrays.pop("base.seen_sizes")
        flat = arrays.pop("base.seen_items")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        model._seen = [set(flat[a:b].tolist()) for a, b in itertools.pairwise(bounds.tolist())]
        model._grow_base_state()
        for side, index, active in (
            ("user", model.user_index, model._user_active),
            ("item", model.item_index, model._item_active),
        ):
            saved = arrays.pop(f"base.{side}_active", None)
            # files written before activity was tracked: every live row equally old
            active[: len(index)] = np.where(index.live_mask(), 0, -1) if saved is None else saved
        model.n_learned = int(meta["n_learned"])
        ts = meta.get("last_timestamp")
        model.last_timestamp = float("-inf") if ts is None else float(ts)
        model._grow(model.n_users, model.n_items)
        model._set_state({k.removeprefix("model."): v for k, v in arrays.items()})
        model._load_extra_meta(meta.get("extra") or {})
        capacity = meta.get("capacity") or {}
        model.set_capacity(capacity.get("max_users"), capacity.get("max_items"))
        return model

    # -- sharing state across workers (see models.sharing) ------------------------------

    def export_users(self, users: Iterable[Any]) -> UserStates:
        """The per-user state of ``users`` (unknown ones left out), to move them to another worker.

        Generic: the rows of the arrays named in ``_user_arrays`` (entries of
        ``_user_item_refs`` as item ids), the users' seen items, and what
        :meth:`_export_user_extra` adds.

        Examples
        --------
        >>> from models import create
        >>> a, b = create("itemknn"), create("itemknn")
        >>> a.learn(Interactions.from_columns(["ann", "ann", "bob"], ["tea", "jam", "tea"]))
        >>> b.import_items(a.export_items())
        >>> b.import_users(a.export_users(["ann", "nobody"]))
        >>> b.history("ann"), b.seen_items("ann") == {"tea", "jam"}, b.recommend(["ann"]).items == a.recommend(["ann"]).items
        (['jam', 'tea'], True, True)
        """
        self._require_sharing()
        ids = [str(u) for u in users]
        rows = self.user_index.lookup(ids)
        keep = rows >= 0
        rows, ids = rows[keep], [u for u, ok in zip(ids, keep.tolist(), strict=True) if ok]
        item_ids = self.item_index.ids
        refs: dict[int, int] = {}
        arrays: dict[str, np.ndarray] = {}
        for name in self._user_arrays:
            values = np.array(_as_numpy(getattr(self, name))[rows], copy=True)
            if name in self._user_item_refs:
                mapped = np.full(values.shape, -1, dtype=np.int64)
                live = values >= 0
                mapped[live] = [refs.setdefault(int(v), len(refs)) for v in values[live].tolist()]
                values = mapped
            arrays[name] = values
        return UserStates(
            model=self.name,
            users=ids,
            arrays=arrays,
            seen=[[item_ids[i] for i in sorted(self._seen[r])] for r in rows.tolist()],  # type: ignore[misc]
            items=[item_ids[r] for r in refs],  # type: ignore[misc]
            item_refs=tuple(n for n in self._user_arrays if n in self._user_item_refs),
            extra=self._export_user_extra(rows),
        )

    def import_users(self, states: UserStates) -> None:
        """Take over the users of ``states`` (from :meth:`export_users` of a model with the same parameters)."""
        if not self._has_users_to_import(states):
            return
        rows = self.user_index.add_many(states.users)
        item_rows = self.item_index.add_many(states.items) if states.items else np.zeros(0, dtype=np.int64)
        seen_rows = [self.item_index.add_many(s) if s else np.zeros(0, dtype=np.int64) for s in states.seen]
        self._grow_base_state()
        self._grow(self.n_users, self.n_items)
        for name, values in states.arrays.items():
            if name in states.item_refs:
                local = np.full(values.shape, -1, dtype=np.int64)
                live = values >= 0
                local[live] = item_rows[values[live]]
                values = local
            _set_rows(getattr(self, name), rows, values)
        for r, items in zip(rows.tolist(), seen_rows, strict=True):
            self._seen[r] = set(items.tolist())
            self._seen_arrays.pop(r, None)
        self._user_active[rows] = self.n_learned
        self._import_user_extra(rows, states.extra)

    def _has_users_to_import(self, states: UserStates) -> bool:
        """Whether ``states`` holds users for this model (another model's states raise)."""
        self._require_sharing()
        if states.model != self.name:
            raise ValueError(f"user states of a {states.model} model cannot go into a {self.name} model")
        return bool(states.users)

    def drop_users(self, users: Iterable[Any]) -> int:
        """Erase ``users`` as :meth:`forget_user` does (a partition moved away); return how many were known."""
        rows = self.user_index.lookup([str(u) for u in users])
        rows = np.unique(rows[rows >= 0])
        if len(rows):
            self._drop_user_rows(rows)
        return len(rows)

    def begin_sharing(self) -> None:
        """From now on, :meth:`take_item_delta` returns only what learning here changes (call before learning).

        Without it the first delta holds everything learned before, which is
        what a model that learned alone and now joins others must send.
        """
        self._require_sharing()
        self._delta_base()
        base = self._shared_base
        for name in self._item_arrays:
            n = self.n_items
            base[name][:n] = _as_numpy(getattr(self, name))[:n]
        self._begin_sharing_extra()

    def take_item_delta(self) -> ItemDelta:
        """What learning here changed on the item side since the last call, as additive increments.

        Deltas applied with :meth:`apply_item_delta` are not part of the next
        delta: each worker sends only its own changes.
        """
        self._require_sharing()
        tracked = self.item_changes_tracked and getattr(self, "_shared_base", None) is not None
        n_before = len(getattr(self, "_shared_base_ids", []))
        base = self._delta_base()
        freed = self._freed_items
        n = self.n_items
        if tracked:  # only the rows learning noted, new rows and rows freed since the last delta
            candidates = np.unique(np.concatenate([*self._noted_items, *freed, np.arange(n_before, n)]))
            candidates = candidates[(candidates >= 0) & (candidates < n)]
        else:
            candidates = np.arange(n)
        self._noted_items, self._freed_items = [], []
        diffs: dict[str, np.ndarray] = {}
        changed = np.zeros(len(candidates), dtype=bool)
        for name in self._item_arrays:
            current = _as_numpy(getattr(self, name))
            diff = current[candidates] - base[name][candidates]
            diffs[name] = diff
            changed |= diff.reshape(len(candidates), -1).any(axis=1) if len(candidates) else changed
        keep = np.flatnonzero(changed)
        keep = keep[np.isin(candidates[keep], self._live_item_rows(candidates[keep]))]
        rows = candidates[keep]
        delta = ItemDelta(self.name, self.item_index.ids_of(rows), {k: v[keep] for k, v in diffs.items()})  # type: ignore[arg-type]
        for name in self._item_arrays:
            base[name][candidates] = _as_numpy(getattr(self, name))[candidates]
        for name in self._global_arrays:
            current = _as_numpy(getattr(self, name))
            diff = current - base[f"global.{name}"]
            if diff.any():
                delta.globals[name] = diff
            base[f"global.{name}"] = np.array(current, copy=True)
        if np.isfinite(self.last_timestamp):
            delta.extra["last_timestamp"] = self.last_timestamp
        self._take_item_delta_extra(delta)
        return delta

    def apply_item_delta(self, delta: ItemDelta) -> None:
        """Add another worker's item-side increments (:meth:`take_item_delta`) to this model."""
        self._require_sharing()
        if delta.model != self.name:
            raise ValueError(f"an item delta of a {delta.model} model cannot go into a {self.name} model")
        delta = self._prepare_item_delta(delta)
        absolute = bool(delta.extra.get("absolute"))
        rows = self._rows_for_items(delta.items)
        base = self._delta_base()
        for name, values in delta.arrays.items():
            target = getattr(self, name)
            if absolute:
                _set_rows(target, rows, values)
                base[name][rows] = values
            else:
                _add_rows(target, rows, values)
                base[name][rows] += values
        for name, values in delta.globals.items():
            target = getattr(self, name)
            if absolute:
                _set_rows(target, None, values)
                base[f"global.{name}"] = np.array(values, copy=True)
            else:
                _add_rows(target, None, values)
                base[f"global.{name}"] = base[f"global.{name}"] + values
        theirs = delta.extra.get("last_timestamp")
        if theirs is not None:  # "now" is the newest event any worker saw
            self.last_timestamp = max(self.last_timestamp, float(theirs))
        self._apply_item_delta_extra(delta, rows)
        self._after_item_change(rows)

    def export_items(self) -> ItemDelta:
        """The whole item-side state, as a delta that sets it (for a worker that starts)."""
        self._require_sharing()
        rows = np.flatnonzero(self.item_index.live_mask())
        n = self.n_items
        delta = ItemDelta(
            self.name,
            self.item_index.ids_of(rows),  # type: ignore[arg-type]
            {name: np.array(_as_numpy(getattr(self, name))[:n][rows], copy=True) for name in self._item_arrays},
            {name: np.array(_as_numpy(getattr(self, name)), copy=True) for name in self._global_arrays},
            {"absolute": True},
        )
        if np.isfinite(self.last_timestamp):
            delta.extra["last_timestamp"] = self.last_timestamp
        self._export_items_extra(delta, rows)
        return delta

    def import_items(self, delta: ItemDelta) -> None:
        """Set the item-side state from :meth:`export_items` of another worker."""
        if not delta.extra.get("absolute"):
            raise ValueError("import_items takes a whole item state (export_items), not an increment")
        self.apply_item_delta(delta)

    # -- item state owned by item: a worker's delta cut by the item's owner, owners' merges, own parts taken back

    def split_item_delta(self, delta: ItemDelta, parts: int) -> dict[int, ItemDelta]:
        """``delta`` cut by the part that owns each item (:func:`~models.sharing.item_parts`), parts without items left out.

        What belongs to no item (global arrays, counters) goes to part 0. The
        owner of a part merges every worker's piece of it (:meth:`merge_item_deltas`)
        and every worker applies the merge less its own piece (:meth:`negate_item_delta`).

        Examples
        --------
        >>> import models
        >>> model = models.create("popularity")
        >>> model.begin_sharing()
        >>> model.learn(Interactions.from_columns(["u", "u", "v"], ["a", "b", "c"], timestamps=[1.0, 2.0, 3.0]))
        >>> pieces = model.split_item_delta(model.take_item_delta(), 4)
        >>> sorted(i for piece in pieces.values() for i in piece.items)
        ['a', 'b', 'c']
        """
        self._require_merging(delta)
        owner = item_parts(delta.items, parts)
        frame = {k: v for k, v in delta.extra.items() if k in self._frame_keys}
        out: dict[int, ItemDelta] = {}
        for p in np.unique(owner).tolist():
            rows = np.flatnonzero(owner == p)
            items = [delta.items[r] for r in rows.tolist()]
            out[p] = ItemDelta(delta.model, items, {k: v[rows] for k, v in delta.arrays.items()}, {}, dict(frame))
        rest = ItemDelta(
            delta.model,
            [],
            {},
            dict(delta.globals),
            {k: v for k, v in delta.extra.items() if k not in self._frame_keys},
            dict(delta.extra_arrays),
        )
        self._split_item_delta_extra(rest, parts, out, frame)
        return out

    def merge_item_deltas(self, deltas: Sequence[ItemDelta]) -> ItemDelta:
        """One delta that adds what ``deltas`` add (every worker's piece of one part); this model is not changed.

        Examples
        --------
        >>> import models
        >>> model = models.create("popularity")
        >>> a = ItemDelta("popularity", ["x"], {"_acc": np.array([1.0], dtype=np.float32)})
        >>> b = ItemDelta("popularity", ["x", "y"], {"_acc": np.array([2.0, 1.0], dtype=np.float32)})
        >>> merged = model.merge_item_deltas([a, b])
        >>> merged.items, merged.arrays["_acc"].tolist()
        (['x', 'y'], [3.0, 1.0])
        >>> model.merge_item_deltas([merged, model.negate_item_delta(a)]).arrays["_acc"].tolist()
        [2.0, 1.0]
        """
        if len(deltas) == 1:  # one worker's piece: nothing to add up (the pieces are not changed in place)
            return self._require_merging(deltas[0])
        deltas = self._in_one_frame([self._require_merging(d) for d in deltas])
        model = deltas[0].model if deltas else self.name
        ids, arrays, globals_ = sum_item_rows(deltas, self._nonnegative_item_arrays)
        merged = ItemDelta(model, ids, arrays, globals_, self._frame_of(deltas))
        self._merge_item_deltas_extra(deltas, merged)
        return merged

    def join_item_deltas(self, deltas: Sequence[ItemDelta]) -> ItemDelta:
        """One delta that adds what ``deltas`` add, when no item (nor cell) is in two of them: merges of different parts.

        Cheaper than :meth:`merge_item_deltas`: rows are laid end to end, not summed by id.

        Examples
        --------
        >>> import models
        >>> model = models.create("popularity", half_life=None)
        >>> a = ItemDelta("popularity", ["x"], {"_acc": np.array([1.0])})
        >>> b = ItemDelta("popularity", ["y"], {"_acc": np.array([2.0])})
        >>> joined = model.join_item_deltas([a, b])
        >>> joined.items, joined.arrays["_acc"].tolist()
        (['x', 'y'], [1.0, 2.0])
        """
        if len(deltas) == 1:
            return self._require_merging(deltas[0])
        deltas = self._in_one_frame([self._require_merging(d) for d in deltas])
        names: dict[str, np.ndarray] = {}
        for delta in deltas:
            for name, values in delta.arrays.items():
                names.setdefault(name, values)
        arrays = {
            name: np.concatenate([
                d.arrays[name] if name in d.arrays else np.zeros((len(d.items), *like.shape[1:]), dtype=like.dtype)
                for d in deltas
            ])
            for name, like in names.items()
        }  # fmt: skip
        globals_ = sum_item_rows([ItemDelta(d.model, globals=d.globals) for d in deltas])[2]
        joined = ItemDelta(
            deltas[0].model, [i for d in deltas for i in d.items], arrays, globals_, self._frame_of(deltas)
        )
        self._join_item_deltas_extra(deltas, joined)
        return joined

    def _frame_of(self, deltas: Sequence[ItemDelta]) -> dict[str, Any]:
        """The frame of ``deltas`` brought into one (:meth:`_in_one_frame`), and the newest event time among them."""
        extra: dict[str, Any] = {k: v for d in deltas for k, v in d.extra.items() if k in self._frame_keys}
        times = [float(d.extra["last_timestamp"]) for d in deltas if d.extra.get("last_timestamp") is not None]
        if times:
            extra["last_timestamp"] = max(times)
        return extra

    def _join_item_deltas_extra(self, deltas: list[ItemDelta], joined: ItemDelta) -> None:
        """Join what the deltas carry beyond item and global arrays (default: as :meth:`merge_item_deltas` merges it)."""
        self._merge_item_deltas_extra(deltas, joined)

    def net_item_deltas(self, merged: ItemDelta, held: Sequence[ItemDelta]) -> list[ItemDelta]:
        """Deltas that, applied in order, add ``merged`` less the ``held`` pieces it includes (applied here already).

        Default: one delta, the merge of ``merged`` and the negated pieces.
        A model whose merge costs more than its apply (item-kNN's cells) may
        apply the merge and then the negated pieces instead.
        """
        if not held:
            return [merged]
        return [self.merge_item_deltas([merged, *(self.negate_item_delta(d) for d in held)])]

    def negate_item_delta(self, delta: ItemDelta) -> ItemDelta:
        """A delta that takes back what ``delta`` adds (a worker's own piece, which it learned already)."""
        self._require_merging(delta)
        negated = ItemDelta(
            delta.model,
            list(delta.items),
            {k: -v for k, v in delta.arrays.items()},
            {k: -v for k, v in delta.globals.items()},
            dict(delta.extra),
            dict(delta.extra_arrays),
        )
        self._negate_item_delta_extra(negated)
        return negated

    def _require_merging(self, delta: ItemDelta) -> ItemDelta:
        if not self.merges_item_deltas:
            raise NotImplementedError(
                f"{self.name} cannot split, merge or negate its item deltas: it shares by broadcast only "
                "(STREAMREC_ITEM_STATE=broadcast)"
            )
        if delta.extra.get("absolute"):
            raise ValueError("a whole item state (export_items) is not an increment: it cannot be split or merged")
        return delta

    #: Whether the model cuts, merges and negates its item deltas (:meth:`split_item_delta`).
    merges_item_deltas: ClassVar[bool] = False
    #: ``extra`` keys of an item delta that say in which frame its arrays are (copied into every piece).
    _frame_keys: ClassVar[tuple[str, ...]] = ("last_timestamp",)
    #: Whether merged item arrays are clipped at 0 (counts: a piece taken back never leaves less than 0).
    _nonnegative_item_arrays: ClassVar[bool] = False

    def _in_one_frame(self, deltas: list[ItemDelta]) -> list[ItemDelta]:
        """``deltas`` brought into one frame before they are summed (decayed scores: one anchor)."""
        return deltas

    def _split_item_delta_extra(
        self, rest: ItemDelta, parts: int, out: dict[int, ItemDelta], frame: dict[str, Any]
    ) -> None:
        """Place what belongs to no item (``rest``: globals, extra, extra arrays) in ``out``: part 0 by default."""
        if rest.globals or rest.extra or rest.extra_arrays:
            first = out.setdefault(0, ItemDelta(rest.model, [], {}, {}, dict(frame)))
            first.globals.update(rest.globals)
            first.extra.update(rest.extra)
            first.extra_arrays.update(rest.extra_arrays)

    def _merge_item_deltas_extra(self, deltas: list[ItemDelta], merged: ItemDelta) -> None:
        """Merge what the deltas carry beyond item and global arrays (counters, cells) into ``merged``."""

    def _negate_item_delta_extra(self, delta: ItemDelta) -> None:
        """Negate, in place, what ``delta`` carries beyond item and global arrays."""

    @classmethod
    def shares_state_with(cls, params: Mapping[str, Any]) -> bool:
        """Whether a model built with hyperparameters ``params`` can share its state (without building it).

        The class's ``shares_state`` unless its parameters decide (a hybrid's members).
        """
        return cls.shares_state

    def _require_sharing(self) -> None:
        if not self.shares_state:
            raise NotImplementedError(
                f"{self.name} cannot share its state across workers: run it with one worker "
                "(STREAMREC_TOPIC_PARTITIONS=1), or choose models that can"
            )

    def _rows_for_items(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of item ``ids``, indexing (and initialising) the unknown ones."""
        rows = self.item_index.add_many(ids) if len(ids) else np.zeros(0, dtype=np.int64)
        self._grow_base_state()
        self._grow(self.n_users, self.n_items)
        return rows

    def _delta_base(self) -> dict[str, np.ndarray]:
        """The item arrays as of the last delta (rows of new ids start from their initial values)."""
        base: dict[str, np.ndarray] | None = getattr(self, "_shared_base", None)
        ids: list[str | None] = getattr(self, "_shared_base_ids", [])
        n = self.n_items
        if base is None:
            base, ids = {}, []
            for name in self._item_arrays:
                current = _as_numpy(getattr(self, name))
                base[name] = np.zeros((0, *current.shape[1:]), dtype=current.dtype)
            for name in self._global_arrays:
                base[f"global.{name}"] = np.array(_as_numpy(getattr(self, name)), copy=True)
        current_ids = self.item_index.ids
        if self.item_changes_tracked and getattr(self, "_shared_base", None) is not None:
            # a row's id changes only when the row is freed (and maybe reused): look at those rows alone
            freed = np.unique(np.concatenate(self._freed_items)) if self._freed_items else np.zeros(0, np.int64)
            stale = [r for r in freed.tolist() if r < min(len(ids), n) and ids[r] != current_ids[r]]
        else:
            stale = [r for r in range(min(len(ids), n)) if ids[r] != current_ids[r]]
        fresh = list(range(len(ids), n))
        todo = stale + fresh
        if todo or len(ids) < n:
            for name in self._item_arrays:
                array = base[name]
                if array.shape[0] < n:
                    grown = np.zeros((max(n, 2 * array.shape[0], 16), *array.shape[1:]), dtype=array.dtype)
                    grown[: array.shape[0]] = array
                    base[name] = array = grown
                if todo:
                    rows = np.asarray(todo, dtype=np.int64)
                    live = [current_ids[r] for r in todo]
                    array[rows] = self._initial_item_rows(name, [i if i is not None else "" for i in live])
            for r in stale:
                ids[r] = current_ids[r]
            ids.extend(current_ids[len(ids) : n])
        self._shared_base, self._shared_base_ids = base, ids
        return base

    # hooks of the sharing machinery; the defaults share the declared arrays only

    #: Attributes holding per-user arrays (first axis: user row) that move with a user.
    _user_arrays: ClassVar[tuple[str, ...]] = ()
    #: Those of ``_user_arrays`` whose entries are item rows (``-1`` padding).
    _user_item_refs: ClassVar[tuple[str, ...]] = ()
    #: Attributes holding per-item arrays (first axis: item row) whose changes are shared.
    _item_arrays: ClassVar[tuple[str, ...]] = ()
    #: Attributes holding arrays of no user or item (network weights) whose changes are shared.
    _global_arrays: ClassVar[tuple[str, ...]] = ()
    #: Whether the model implements the sharing methods (it can run on several workers).
    shares_state: ClassVar[bool] = False
    #: Whether learning split over workers that exchange deltas gives exactly one model's item state.
    sharing_is_exact: ClassVar[bool] = False

    def _initial_item_rows(self, name: str, ids: list[str]) -> np.ndarray:
        """The values new rows of item array ``name`` start from (a function of the id: every worker agrees)."""
        current = _as_numpy(getattr(self, name))
        return np.zeros((len(ids), *current.shape[1:]), dtype=current.dtype)

    def _begin_sharing_extra(self) -> None:
        """Start tracking the changes of item state kept outside ``_item_arrays``."""

    def _prepare_item_delta(self, delta: ItemDelta) -> ItemDelta:
        """Bring another worker's delta into this model's frame before it is applied (default: as is)."""
        return delta

    def _export_user_extra(self, rows: np.ndarray) -> dict[str, Any]:
        """JSON-ready per-user state beyond ``_user_arrays`` (lists in ``rows`` order)."""
        return {}

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_export_user_extra` wrote, for user ``rows``."""

    def _take_item_delta_extra(self, delta: ItemDelta) -> None:
        """Add to ``delta`` what changed in item state kept outside ``_item_arrays``."""

    def _apply_item_delta_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        """Apply what :meth:`_take_item_delta_extra` added (``rows``: local rows of ``delta.items``)."""

    def _export_items_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        """Add the whole item state kept outside ``_item_arrays`` to a snapshot (``rows``: its items' rows)."""

    def _after_item_change(self, rows: np.ndarray) -> None:
        """Refresh caches derived from the item state after shared changes to ``rows``."""

    # -- helpers for subclasses --------------------------------------------------------

    def _global_candidates(
        self, u: np.ndarray, k: int, excluded: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """For models that rank every user alike: candidate scores, their item rows, exclusions.

        The global top ``k + max(len(excluded))`` holds every user's top-k, so
        ranking within it gives what the full ``users x items`` matrix gives,
        ties included (candidates are ordered by score, then by row).
        """
        m = min(self.n_items, k + max((len(e) for e in excluded), default=0))
        top = self._global_top(m)
        if top is not None:  # the model keeps its top list: no pass over the catalogue
            columns, values = top
        else:
            row = np.array(self._score(u[:1]), dtype=np.float32, copy=True)[0]
            row[~np.isfinite(row)] = np.float32(-3.0e38)
            if self.item_index.n_free:
                row[self.item_index.free_rows()] = -np.inf
            columns = top_k(row[None, :], m)[0][0]
            values = row[columns]
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[columns] = np.arange(m)
        mapped = []
        for items in excluded:
            pos = position[items] if len(items) else np.empty(0, dtype=np.int64)
            mapped.append(pos[pos >= 0])
        scores = np.broadcast_to(values, (len(u), m)).copy()
        return scores, columns, mapped

    def _global_top(self, m: int) -> tuple[np.ndarray, np.ndarray] | None:
        """For models that rank every user alike and keep their top list: its first ``m`` rows and scores.

        Rows ordered by float32 score descending, ties by row ascending, exactly
        as a full pass over the catalogue orders them; ``None`` when the model
        keeps no such list (or it cannot answer ``m`` exactly): the caller then
        scores every item.
        """
        return None

    def _seen_array(self, row: int) -> np.ndarray:
        """The seen items of user ``row`` as an index array (cached, kept current by :meth:`learn`)."""
        s = self._seen[row]
        array = self._seen_arrays.get(row)
        if array is None:
            array = np.empty(max(8, 2 * len(s)), dtype=np.intp)
            array[: len(s)] = np.fromiter(s, dtype=np.intp, count=len(s))
            self._seen_arrays[row] = array
        return array[: len(s)]

    def _append_seen(self, row: int, item: int, size: int) -> None:
        """Write ``item`` as the ``size``-th entry of the cached seen array of ``row`` (grown if full)."""
        array = self._seen_arrays[row]
        if size > len(array):
            grown = np.empty(2 * size, dtype=np.intp)
            grown[: size - 1] = array[: size - 1]
            self._seen_arrays[row] = array = grown
        array[size - 1] = item

    def _grow_seen(self) -> None:
        while len(self._seen) < self.n_users:
            self._seen.append(set())

    def _grow_base_state(self) -> None:
        """Size the seen sets and the activity times to the rows of the id indices."""
        self._grow_seen()
        self._user_active = self._grown(self._user_active, self.n_users, fill=-1)
        self._item_active = self._grown(self._item_active, self.n_items, fill=-1)

    def _capacity_parts(self, batch: Interactions) -> list[Interactions]:
        """``batch`` cut, in arrival order, into parts with at most ``max_users`` users and ``max_items`` items."""
        columns = [
            (keys.tolist(), cap)
            for keys, cap in ((batch.users, self.max_users), (batch.items, self.max_items))
            if cap is not None
        ]
        if all(len(set(keys)) <= cap for keys, cap in columns):
            return [batch]
        starts = [0]
        distinct: list[set[str]] = [set() for _ in columns]
        for j in range(len(batch)):
            if any(keys[j] not in d and len(d) >= cap for (keys, cap), d in zip(columns, distinct, strict=True)):
                starts.append(j)
                for d in distinct:
                    d.clear()
            for (keys, _), d in zip(columns, distinct, strict=True):
                d.add(keys[j])
        bounds = [*starts, len(batch)]
        return [batch.select(np.arange(a, b)) for a, b in itertools.pairwise(bounds)]

    def _make_room(self, users: Iterable[str], items: Iterable[str]) -> None:
        """Evict the least recently active rows so that ``users`` and ``items`` fit under the caps."""
        self._grow_base_state()
        if self.max_users is not None:
            rows = _rows_to_evict(self.user_index, self._user_active, self.max_users, users)
            if len(rows):
                self._drop_user_rows(rows)
        if self.max_items is not None:
            rows = _rows_to_evict(self.item_index, self._item_active, self.max_items, items)
            if len(rows):
                self._drop_item_rows(rows)

    def _drop_user_rows(self, rows: np.ndarray) -> None:
        """Erase users ``rows`` (model state, seen items, ids) and free their rows."""
        self._grow_base_state()
        self._forget_rows(rows)  # first: the hook may still look the ids up
        for r, key in zip(rows.tolist(), self.user_index.ids_of(rows), strict=True):
            self._seen[r] = set()
            self._seen_arrays.pop(r, None)
            if key is not None:
                self.user_index.remove(key)
        self._user_active[rows] = -1

    def _drop_item_rows(self, rows: np.ndarray) -> None:
        """Erase items ``rows`` (model state, every user's seen set, ids) and free their rows."""
        self._grow_base_state()
        self._forget_item_rows(rows)  # first: the hook may still look the ids up
        dead = set(rows.tolist())
        for row, seen in enumerate(self._seen):
            if not seen.isdisjoint(dead):
                seen.difference_update(dead)
                self._seen_arrays.pop(row, None)
        for key in self.item_index.ids_of(rows):
            if key is not None:
                self.item_index.remove(key)
        self._item_active[rows] = -1
        if getattr(self, "_shared_base", None) is not None:
            self._freed_items.append(np.asarray(rows, dtype=np.int64))

    @staticmethod
    def _mask(scores: np.ndarray, per_row: Sequence[Sequence[int] | np.ndarray]) -> None:
        for r, items in enumerate(per_row):
            if len(items):
                scores[r, items] = -np.inf

    @staticmethod
    def _grown(array: np.ndarray, n: int, fill: float | np.ndarray = 0.0) -> np.ndarray:
        """Return ``array`` with at least ``n`` rows (capacity doubles; new rows ``fill``)."""
        if array.shape[0] >= n:
            return array
        capacity = max(n, 2 * array.shape[0], 16)
        out = np.empty((capacity, *array.shape[1:]), dtype=array.dtype)
        out[: array.shape[0]] = array
        out[array.shape[0] :] = fill
        return out

    # -- hooks ---------------------------------------------------------------------------

    @abstractmethod
    def _grow(self, n_users: int, n_items: int) -> None:
        """Make room for ``n_users`` users and ``n_items`` items."""

    @abstractmethod
    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        """Update from the batch; ``u`` and ``i`` are its user and item indices."""

    @abstractmethod
    def _score(self, u: np.ndarray) -> np.ndarray:
        """Scores of every item for user indices ``u`` (``-1``: unknown user)."""

    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """The model's arrays, for :meth:`save`."""

    @abstractmethod
    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore the arrays returned by :meth:`_state`."""

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Erase the per-user state of user rows ``rows``, which are then freed for new users.

        Called by :meth:`forget_user` and by eviction while the rows' ids are
        still in ``user_index``; the base class then clears their seen items
        and ids. Reset each row to what a never-used row holds, so that a
        new user given the row starts cold. Every model that keeps per-user
        state must implement this; the default refuses rather than keep a
        user's data.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot forget users: it does not implement _forget_rows")

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Erase the state of item rows ``rows`` (evicted), which are then freed for new items.

        Called while the rows' ids are still in ``item_index``; the base
        class then drops them from every user's seen items and from the
        index. Reset each row to what a never-used row holds, and remove the
        items from any per-user structure (histories).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot evict items: it does not implement _forget_item_rows")

    def _live_item_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows among ``rows`` that hold an item (not freed), in their order; costs ``len(rows)``, not the catalogue."""
        ids = self.item_index.ids
        return rows[np.fromiter((ids[r] is not None for r in rows.tolist()), dtype=bool, count=len(rows))]

    def _note_item_rows(self, rows: np.ndarray) -> None:
        """Item ``rows`` of the shared item arrays changed here (with ``item_changes_tracked``; a no-op unless sharing)."""
        if getattr(self, "_shared_base", None) is not None and len(rows):
            self._noted_items.append(np.asarray(rows, dtype=np.int64).ravel())

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per user index in ``u``, some item rows and their ``float32`` scores; ``None``: use :meth:`_score`.

        With ``sparse_rest_zero`` (neighbourhood models, whose scores are 0
        for every item not reachable from the user's state): per user, the
        item rows with a positive score (in any order) and those scores,
        exactly the non-zero entries of what :meth:`_score` returns; every
        other item scores 0. A list then costs what the reachable items cost,
        not a pass over the catalogue, and equals the dense one.

        Without it (embedding models with an item index): per user, about
        ``want[r]`` candidates retrieved approximately (the list's length plus
        the user's excluded items), with their exact scores; the list is the
        best of them, and a user left short by the exclusions is scored
        densely.
        """
        return None

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        """Explain recommendations; models that can give reasons override this."""
        return None

    def _set_item_tags(self, items: np.ndarray, tags: list[tuple[str, ...]]) -> None:
        """Receive content tags of catalogue items; ignored unless overridden."""

    def _set_item_titles(self, items: np.ndarray, titles: list[str]) -> None:
        """Receive the titles of catalogue items; ignored unless overridden."""

    def _extra_meta(self) -> dict[str, Any]:
        """JSON-serialisable state beyond arrays, for :meth:`save`."""
        return {}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_meta` wrote."""

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        """Hyperparameters the conformance suite runs this model with."""
        return [{}]


def _rows_to_evict(index: IdIndex, active: np.ndarray, cap: int, incoming: Iterable[str]) -> np.ndarray:
    """Rows to free so that the ids ``incoming`` fit in ``cap`` live rows: the least recently active others."""
    unique = list(set(incoming))
    present = index.lookup(unique)
    present = present[present >= 0]
    excess = index.n_live + len(unique) - len(present) - cap
    if excess <= 0:
        return np.zeros(0, dtype=np.int64)
    candidates = index.live_mask()
    candidates[present] = False
    rows = np.flatnonzero(candidates)
    if excess < len(rows):
        rows = rows[np.argpartition(active[rows], excess - 1)[:excess]]
    return np.sort(rows)


def _as_numpy(array: Any) -> np.ndarray:
    """A NumPy view (or, for a torch tensor on a device, a copy) of a model array."""
    if isinstance(array, np.ndarray):
        return array
    return array.detach().cpu().numpy()


def _set_rows(target: Any, rows: np.ndarray | None, values: np.ndarray) -> None:
    """``target[rows] = values`` (all of it for ``rows=None``) for a NumPy array or a torch tensor."""
    if isinstance(target, np.ndarray):
        if rows is None:
            target[...] = values
        else:
            target[rows] = values
        return
    import torch

    with torch.no_grad():
        src = torch.as_tensor(values, dtype=target.dtype, device=target.device)
        if rows is None:
            target.copy_(src)
        else:
            target[torch.as_tensor(rows, device=target.device)] = src


def _add_rows(target: Any, rows: np.ndarray | None, values: np.ndarray) -> None:
    """``target[rows] += values`` (rows distinct; all of it for ``rows=None``), NumPy or torch."""
    if isinstance(target, np.ndarray):
        if rows is None:
            target += values
        else:
            target[rows] += values
        return
    import torch

    with torch.no_grad():
        src = torch.as_tensor(values, dtype=target.dtype, device=target.device)
        if rows is None:
            target.add_(src)
        else:
            target.index_add_(0, torch.as_tensor(rows, device=target.device), src)


def registered_models() -> dict[str, type[OnlineRecommender]]:
    """Models registered so far (import a model's module to register it)."""
    return dict(_REGISTRY)
