"""A hybrid recommender: online models weighed by their recent hits, popularity and item content."""

from __future__ import annotations

import inspect
import itertools
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

import models
from models.base import Interactions, OnlineRecommender, Recommendations
from models.ids import IdIndex
from models.persistence import read_model_dir, write_model_dir
from models.popularity import Popularity
from models.sharing import ItemDelta, UserStates

__all__ = ["Hybrid"]

#: At most this many users per ``recommend`` call keep their member scores for the next ``learn``.
_CACHE_USERS = 8
#: The prefix of an owned model's part of a shared payload (``m<j>.``, ``j`` its place in ``Hybrid._owned()``).
_MEMBER_KEY = re.compile(r"m\d+\.")


class Hybrid(OnlineRecommender):
    """Online models whose weights follow which of them has been hitting, per history length.

    The hybrid owns one instance of each member model (created with
    :func:`models.create` and the hybrid's ``seed``) and a :class:`Popularity`
    model; all of them learn every batch.

    **Learned weights.** Before the members learn an event ``(u, i)``, the
    hybrid looks where ``i`` sits in each member's current ranking for ``u``
    (the member's scores, ``u``'s seen items excluded): a *hit* when it is in
    the top ``hit_k``. Per bucket of ``u``'s history length (the number of
    distinct items ``u`` had before the event; buckets cut at
    ``bucket_edges``) it keeps each member's exponentially decayed hit rate,
    with a half-life of ``half_life`` updates of that bucket. The weights
    therefore depend only on earlier events, through the members' states
    before each event. Within a batch of several events the members' states
    before the batch are used, and an event of a user already seen earlier in
    the same batch, a repeat of a seen item or an item nobody interacted with
    updates nothing (its member states are not current, or no member can hit it).

    **Serving.** A user's score of an item is:

    - **users with no history**: the popularity score (same list for all);
    - **items with interactions** (warm): a fusion of the members' candidate
      lists. Each member gives its own top ``candidates`` for the user (at
      least as many as the list asked for; seen items left out unless the
      call includes them), through its :meth:`recommend`, so each member pays
      what its own list costs (an index, its neighbours), never a pass over
      the catalogue. With ``temperature=0`` the list of the member with the
      best hit rate in the user's bucket (ties: the first in ``components``),
      so the hybrid tracks the best member per bucket; with
      ``temperature > 0``, a reciprocal-rank fusion
      ``sum_m w_m * (rrf_k + 1) / (rrf_k + rank_m)`` with
      ``w = softmax(hit_rates / temperature)``, where ``rank_m`` (1 = best) is
      the item's place among the warm items of member ``m``'s list (an item
      not in it adds nothing). A member that has never been scored in a
      bucket has rate 0 there.
    - **items with no interactions** (cold, e.g. added by :meth:`add_items`):
      ``content_weight`` times the cosine between the item's tag vector and the
      user's profile (the sum of the normalised tag vectors of the items they
      interacted with), so a new item that matches a user's taste can enter
      their list before anyone interacted with it.

    The cost of an event is the sum of the members' costs: every member gives
    its list for the user once per learned event (reused from the
    ``recommend`` of that user just before, when there was one and no event
    came in between) and learns the event.

    Reasons come from the first member that gives some (ItemKNN's
    "because you interacted with X").

    **Several workers** (:mod:`models.sharing`), when every member shares
    (the default members do; a hybrid with one that cannot, such as
    ``isgd``, says so and runs on one worker). Each owned model shares as it
    does alone, and the hybrid carries their payloads inside its own:

    - item deltas and snapshots hold each owned model's
      :meth:`take_item_delta` / :meth:`export_items` (arrays under
      ``m<j>.``, ``j`` the member's place in ``components``, the popularity
      model last), with the hybrid's event count per item (exact: counts add
      up) and, in snapshots, the items' tags;
    - user states hold each owned model's :meth:`export_users` (arrays and
      extras under ``m<j>.``, item references into one list of ids; the seen
      items once, the hybrid's, which every owned model shares);
    - the decayed hit rates: each worker scores the events it learns and
      sends, per bucket, its hits and updates since its last delta, decayed
      within its own sequence, with how many updates they span; a receiver
      first decays its own sums by that many updates, then adds them, as if
      the other worker's events came after its own. With members that share
      exactly, the hits are those one worker counts, and the sums differ
      from one worker's (which interleaves the events) only by the order
      within one exchange: with ``n`` updates of a bucket between exchanges,
      each event's weight by at most a factor ``2 ** (n / half_life)``
      (tested), so a rate by at most its square (1% for ``n = 14`` at the
      default half-life of 2,000). Members that share approximately add
      their own departure to the hits.

    Handing users off (:meth:`drop_users`) hands them off in every owned
    model (session kNN keeps their sessions, SASRec their waiting examples),
    which :meth:`forget_user` would erase. Sharing is as exact as the least
    exact member (``sharing_is_exact`` is false).

    :meth:`save` writes one model directory as every model does: each owned
    model is saved with its own :meth:`save` and its arrays and metadata are
    stored inside the hybrid's (arrays prefixed ``m<j>.``), with the hit
    statistics, so :meth:`OnlineRecommender.load` restores all of it.

    Parameters
    ----------
    components
        Registry names of the member models (see ``models.MODEL_PATHS``),
        created with their default hyperparameters. The defaults (these four
        members, ``temperature=0.05``) were chosen on the development parts
        of both logs; see ``docs/tuning/hybrid.md``.
    temperature
        0 serves the list of the best member of the user's bucket (switching);
        a positive value fuses the members' ranks with weights
        ``softmax(hit_rate / temperature)`` (hit rates are in [0, 1]).
    hit_k
        A member hits an event when the event's item is in its top ``hit_k``.
    bucket_edges
        Increasing history lengths where a new bucket starts (the first bucket
        is the lengths below ``bucket_edges[0]``).
    half_life
        Half-life, in updates of a bucket, of the decayed hit rates.
    rrf_k
        Constant of reciprocal-rank fusion: larger values flatten the weight
        of the top ranks.
    candidates
        How many items of each member's list are fused (at least the list's length).
    content_weight
        Scale of the content score of items with no interactions, on the
        fused scale: 1 ties a cold item whose tags match the user's profile
        perfectly with an item every member ranks first; 0 never promotes
        cold items.
    popularity_half_life
        Half-life in seconds of the popularity model used for cold users.
    seed
        Seed passed to every member.

    Examples
    --------
    >>> model = Hybrid(components=("itemknn", "isgd"))
    >>> model.add_items(["up", "heat", "cars"], tags=[("animation",), ("crime",), ("animation",)])
    >>> model.learn(Interactions.from_columns(["ann", "ann", "bob", "bob"], ["up", "heat", "up", "heat"]))
    >>> model.add_items(["coco"], tags=[("animation",)])       # nobody has seen coco or cars yet
    >>> model.learn(Interactions.from_columns(["cid"], ["up"]))
    >>> model.recommend(["cid"], k=3).items                      # heat from the best member, then content
    [['heat', 'cars', 'coco']]
    >>> model.recommend(["newcomer"], k=2).items                 # no history: popularity
    [['up', 'heat']]
    >>> model.learn(Interactions.from_columns(["cid"], ["heat"]))
    >>> model.hit_rates()[1]                                     # users with 1 item: both members hit
    {'itemknn': 1.0, 'isgd': 1.0}
    """

    name: ClassVar[str] = "hybrid"
    personalized: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = False
    #: With the default members; an instance with a member that cannot share has it false (see ``__init__``).
    shares_state: ClassVar[bool] = True
    #: Asynchronous SGD (sasrec, two_tower), session kNN's rings and hit rates judged on each worker's events.
    sharing_is_exact: ClassVar[bool] = False
    #: ``_item_events`` changes on learned items only (and freed rows): deltas compare those rows.
    item_changes_tracked: ClassVar[bool] = True
    _item_arrays: ClassVar[tuple[str, ...]] = ("_item_events",)
    #: Members' deltas are cut, merged and negated by the members; hit counters go with part 0.
    merges_item_deltas: ClassVar[bool] = True

    def __init__(
        self,
        components: tuple[str, ...] = ("sasrec", "sknn", "itemknn", "two_tower"),
        temperature: float = 0.05,
        hit_k: int = 10,
        bucket_edges: tuple[int, ...] = (1, 5),
        half_life: float = 2000.0,
        rrf_k: float = 60.0,
        candidates: int = 50,
        content_weight: float = 0.75,
        popularity_half_life: float | None = 7 * 24 * 3600.0,
        seed: int = 0,
    ) -> None:
        components = tuple(str(c) for c in components)
        if not components:
            raise ValueError("components must name at least one model")
        for name in components:
            if name == self.name:
                raise ValueError("a hybrid cannot contain a hybrid")
            if name not in models.MODEL_PATHS:
                raise ValueError(f"unknown component {name!r}; choose from {sorted(models.MODEL_PATHS)}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if int(hit_k) < 1:
            raise ValueError(f"hit_k must be >= 1, got {hit_k}")
        bucket_edges = tuple(int(e) for e in bucket_edges)
        if any(b <= a for a, b in itertools.pairwise(bucket_edges)) or any(e < 1 for e in bucket_edges):
            raise ValueError(f"bucket_edges must be increasing and >= 1, got {bucket_edges}")
        if not half_life > 0:
            raise ValueError(f"half_life must be > 0, got {half_life}")
        if not rrf_k > 0:
            raise ValueError(f"rrf_k must be > 0, got {rrf_k}")
        if int(candidates) < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        if content_weight < 0:
            raise ValueError(f"content_weight must be >= 0, got {content_weight}")
        self.components = components
        self.temperature = float(temperature)
        self.hit_k = int(hit_k)
        self.bucket_edges = bucket_edges
        self.half_life = float(half_life)
        self.rrf_k = rrf_k
        self.candidates = int(candidates)
        self.content_weight = content_weight
        self.popularity_half_life = popularity_half_life
        #: The members that cannot share state across workers (then neither can the hybrid).
        self.unsharing_components = self._unsharing(components)
        if self.unsharing_components:
            self.shares_state = False  # type: ignore[misc]  # this instance only
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self._models: list[OnlineRecommender] = [models.create(name, seed=self.seed) for name in self.components]
        self._popularity = Popularity(half_life=self.popularity_half_life)
        self._item_events = np.zeros(0, dtype=np.int64)
        self.tag_index = IdIndex()
        self._tag_items = np.zeros(0, dtype=np.int64)  # (item, tag) pairs of the 0/1 item x tag matrix
        self._tag_ids = np.zeros(0, dtype=np.int64)
        self._tags_cache: sp.csr_array | None = None
        n_buckets = len(self.bucket_edges) + 1
        self._hits = np.zeros((n_buckets, len(self._models)), dtype=np.float64)  # decayed hits
        self._trials = np.zeros((n_buckets, len(self._models)), dtype=np.float64)  # decayed updates
        # the same sums over the updates made here since the last delta, and how many updates per bucket
        self._unsent_hits = np.zeros_like(self._hits)
        self._unsent_trials = np.zeros_like(self._trials)
        self._unsent_updates = np.zeros(n_buckets, dtype=np.int64)
        self._handing_off = False  # drop_users in progress: owned models hand the users off themselves
        self._cache: dict[int, list[np.ndarray]] = {}  # user row -> the members' lists (item rows; seen excluded)
        self._cache_at = (-1, -1)
        self._exclude_seen = True  # of the recommend call in progress

    @property
    def component_models(self) -> list[OnlineRecommender]:
        """The component model instances, in the order of ``components``."""
        return list(self._models)

    def hit_rates(self) -> list[dict[str, float]]:
        """The decayed hit rate of each member, per history bucket (0 where never updated)."""
        rates = self._rates()
        return [dict(zip(self.components, row.tolist(), strict=True)) for row in rates]

    def _rates(self) -> np.ndarray:
        return np.divide(self._hits, self._trials, out=np.zeros_like(self._hits), where=self._trials > 0)

    def _bucket(self, history: int) -> int:
        return int(np.searchsorted(self.bucket_edges, history, side="right"))

    def _member_weights(self, rows: np.ndarray) -> np.ndarray:
        """Weights of the members (rows sum to 1) for users ``rows``, from their history buckets."""
        rates = self._rates()
        buckets = [self._bucket(len(self._seen[x])) for x in rows.tolist()]
        per_bucket = np.zeros_like(rates)
        if self.temperature == 0:
            per_bucket[np.arange(len(rates)), np.argmax(rates, axis=1)] = 1.0
        else:
            z = np.exp((rates - rates.max(axis=1, keepdims=True)) / self.temperature)
            per_bucket = z / z.sum(axis=1, keepdims=True)
        return per_bucket[buckets]

    def _grow(self, n_users: int, n_items: int) -> None:
        self._cache.clear()
        self._item_events = self._grown(self._item_events, n_items)
        self._tags_cache = None
        for model in (*self._models, self._popularity):
            self._sync_items(model)

    def _sync_items(self, model: OnlineRecommender) -> None:
        """Index the hybrid's new items in an owned model, each in the hybrid's row.

        Owned models index items in the hybrid's order: their item indices are
        the hybrid's. They evict the hybrid's evicted rows (see
        :meth:`_forget_item_rows`) and, like the hybrid, fill the smallest free
        row first, so adding the new ids in row order puts each in its row.
        """
        mine, theirs = self.item_index, model.item_index
        if len(theirs) == 0 and mine.n_free:  # a fresh model (on load): copy the rows, tombstones included
            model.item_index = IdIndex(mine.ids)
            model._grow(model.n_users, model.n_items)
            return
        rows = [r for r in theirs.free_rows().tolist() if mine.ids[r] is not None]
        rows += range(len(theirs), len(mine))
        if not rows:
            return
        ids = mine.ids_of(rows)
        if None not in ids:
            model.add_items(ids)
        if None in ids or not np.array_equal(theirs.lookup(ids), rows):
            raise RuntimeError(f"owned model {model.name} is out of step with the hybrid's item rows")

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        self._score_members(u, i)
        self._cache.clear()
        for model in (*self._models, self._popularity):
            model.learn(batch)
        np.add.at(self._item_events, i, 1)  # the batch's items only: no pass over the catalogue

    def _score_members(self, u: np.ndarray, i: np.ndarray) -> None:
        """Update the members' decayed hit rates with the events ``(u, i)``, in order, before they learn them."""
        decay = 0.5 ** (1.0 / self.half_life)
        events = self._item_events
        todo: list[tuple[int, int]] = []
        done: set[int] = set()
        for x, j in zip(u.tolist(), i.tolist(), strict=True):
            if x not in done and self._seen[x] and j < len(events) and events[j] > 0 and j not in self._seen[x]:
                todo.append((x, j))
            done.add(x)
        if not todo:
            return
        cached = self._cache if self._cache_at == (self.n_learned, self.n_items) else {}
        for x, j in todo:
            lists = cached.get(x)
            if lists is None:
                lists = self._member_lists(x, self.hit_k, exclude_seen=True)
            hits = np.array([float(j in set(rows[: self.hit_k].tolist())) for rows in lists], dtype=np.float64)
            b = self._bucket(len(self._seen[x]))
            self._hits[b] = decay * self._hits[b] + hits
            self._trials[b] = decay * self._trials[b] + 1.0
            self._unsent_hits[b] = decay * self._unsent_hits[b] + hits
            self._unsent_trials[b] = decay * self._unsent_trials[b] + 1.0
            self._unsent_updates[b] += 1

    def _set_item_tags(self, items: np.ndarray, tags: list[tuple[str, ...]]) -> None:
        self._set_own_tags(items, tags)
        for model in self._models:
            model._set_item_tags(items, tags)

    def _set_own_tags(self, items: np.ndarray | list[str], tags: list[tuple[str, ...]]) -> None:
        """Replace the tags of ``items`` (known ids) in the hybrid's own item x tag matrix."""
        idx = self.item_index.lookup(items)
        keep = ~np.isin(self._tag_items, idx)
        sizes = [len(t) for t in tags]
        new_items = np.repeat(idx, sizes)
        new_tags = self.tag_index.add_many([str(tag) for t in tags for tag in t])
        self._tag_items = np.concatenate([self._tag_items[keep], new_items])
        self._tag_ids = np.concatenate([self._tag_ids[keep], new_tags])
        self._tags_cache = None
        self._cache.clear()

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Forget the users in every owned model (they index users by id, not by the hybrid's rows)."""
        self._cache.clear()
        if self._handing_off:  # drop_users: the owned models dropped the users already
            return
        users = self.user_index.ids_of(rows)
        for model in (*self._models, self._popularity):
            for user in users:
                model.forget_user(user)

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Evict the same rows from every owned model; drop the items' event counts and tags."""
        self._cache.clear()
        items = self.item_index.ids_of(rows)
        for model in (*self._models, self._popularity):
            if model.item_index.ids_of(rows) != items:
                raise RuntimeError(f"owned model {model.name} is out of step with the hybrid's item rows")
            model._drop_item_rows(rows)
        self._item_events[rows] = 0
        keep = ~np.isin(self._tag_items, rows)
        self._tag_items, self._tag_ids = self._tag_items[keep], self._tag_ids[keep]
        self._tags_cache = None

    def _normalised_tags(self) -> sp.csr_array:
        """Items x tags, each item's row scaled to unit length (cached until tags change)."""
        if self._tags_cache is None:
            shape = (self.n_items, len(self.tag_index))
            ones = np.ones(len(self._tag_items), dtype=np.float32)
            tags = sp.coo_array((ones, (self._tag_items, self._tag_ids)), shape=shape).tocsr()
            tags.data[:] = 1.0  # an item listing a tag twice still has it once
            norms = np.sqrt(np.asarray(tags.multiply(tags).sum(axis=1))).ravel()
            self._tags_cache = sp.csr_array(sp.diags_array(1.0 / np.maximum(norms, 1e-12)) @ tags)
        return self._tags_cache

    # -- scoring ----------------------------------------------------------------------

    def recommend(
        self,
        users: Any,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Any = None,
        with_reasons: bool = True,
    ) -> Recommendations:
        """As :meth:`OnlineRecommender.recommend`; the members' lists leave seen items out as this call does."""
        self._exclude_seen = exclude_seen
        try:
            return super().recommend(users, k, exclude_seen=exclude_seen, exclude=exclude, with_reasons=with_reasons)
        finally:
            self._exclude_seen = True

    def _member_lists(self, x: int, depth: int, exclude_seen: bool) -> list[np.ndarray]:
        """Each member's top ``depth`` item rows for user row ``x``, best first."""
        user = self.user_index.ids[x]
        out = []
        for model in self._models:
            if model.n_items != self.n_items:
                raise RuntimeError(f"component {model.name} has {model.n_items} items, the hybrid {self.n_items}")
            if type(model).recommend is OnlineRecommender.recommend:  # its rows are the hybrid's (_sync_items)
                out.append(model._top_rows_one(user, depth, exclude_seen)[1])
                continue
            items = model.recommend([user], k=depth, exclude_seen=exclude_seen, with_reasons=False).items[0]
            out.append(self.item_index.lookup(items) if items else np.zeros(0, dtype=np.int64))
        return out

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """Per user: the fused candidates (warm items), content for cold items, popularity for cold users."""
        events = self._item_events
        out: list[tuple[np.ndarray, np.ndarray]] = []
        history = [x >= 0 and bool(self._seen[x]) for x in u.tolist()]
        users_with_history = u[np.asarray(history, dtype=bool)] if len(u) else u
        weights = self._member_weights(users_with_history) if len(users_with_history) else None
        content = None
        if self.content_weight > 0 and len(self.tag_index) and len(users_with_history):  # items with tags exist
            cold_items = np.flatnonzero(events[: self.n_items] == 0)
            if len(cold_items):
                content = self.content_weight * self._content(self._seen_matrix(users_with_history), cold_items)
        keep = len(u) <= _CACHE_USERS and self._exclude_seen
        if keep and self._cache_at != (self.n_learned, self.n_items):
            self._cache.clear()
            self._cache_at = (self.n_learned, self.n_items)
        if not keep and len(u) > _CACHE_USERS:
            self._cache.clear()
        w = 0
        for r, x in enumerate(u.tolist()):
            if not history[r]:
                top = self._popularity.recommend(["*"], k=want[r], exclude_seen=False, with_reasons=False)
                rows = self.item_index.lookup(top.items[0]) if top.items[0] else np.zeros(0, dtype=np.int64)
                out.append((rows, np.asarray(top.scores[0], dtype=np.float32)))
                continue
            lists = self._member_lists(x, max(self.candidates, want[r], self.hit_k), self._exclude_seen)
            if keep:
                self._cache[x] = lists
            assert weights is not None
            members_rows, members_gains = [], []
            for weight, rows in zip(weights[w].tolist(), lists, strict=True):
                if weight == 0.0:
                    continue
                rows = rows[events[rows] > 0]
                members_rows.append(rows)
                members_gains.append(
                    weight * (self.rrf_k + 1.0) / (self.rrf_k + np.arange(1, len(rows) + 1, dtype=np.float64))
                )
            # each item's gains summed in member order (bincount adds in input order)
            cols, where = np.unique(np.concatenate(members_rows or [np.zeros(0, dtype=np.int64)]), return_inverse=True)
            gains = np.concatenate(members_gains or [np.zeros(0)])
            vals = np.bincount(where, weights=gains, minlength=len(cols)).astype(np.float32)
            cols = cols.astype(np.int64, copy=False)
            if content is not None:
                c = content[w]
                positive = c > 0
                cols = np.concatenate([cols, cold_items[positive]])
                vals = np.concatenate([vals, c[positive].astype(np.float32)])
            out.append((cols, vals))
            w += 1
        return out

    def _score(self, u: np.ndarray) -> np.ndarray:
        """The scores :meth:`_score_sparse` gives, as a dense matrix (cold users: every popularity score)."""
        n = self.n_items
        scores = np.zeros((len(u), n), dtype=np.float32)
        want = [max(self.candidates, 1)] * len(u)
        for r, (cols, vals) in enumerate(self._score_sparse(u, want) or []):
            x = int(u[r])
            if x < 0 or not self._seen[x]:
                scores[r] = self._popularity.item_scores().astype(np.float32)[:n]
            else:
                scores[r, cols] = vals
        return scores

    def _seen_matrix(self, rows: np.ndarray) -> sp.csr_array:
        """Users ``rows`` x items, 1 where the user interacted with the item."""
        sets = [self._seen[x] for x in rows.tolist()]
        sizes = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
        items = np.fromiter((j for s in sets for j in s), dtype=np.int64, count=int(sizes.sum()))
        indptr = np.concatenate([[0], np.cumsum(sizes)])
        data = np.ones(len(items), dtype=np.float32)
        return sp.csr_array((data, items, indptr), shape=(len(rows), self.n_items))

    def _content(self, seen: sp.csr_array, items: np.ndarray) -> np.ndarray:
        """Cosine between the tags of ``items`` and each user's tag profile."""
        tags = self._normalised_tags()
        profile = np.asarray((seen @ tags).todense(), dtype=np.float32)
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        profile /= np.maximum(norms, np.float32(1e-12))
        return np.asarray(tags[items] @ profile.T, dtype=np.float32).T

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        for model in self._models:
            comp_u = model.user_index.lookup([self.user_index.ids[x] if x >= 0 else "" for x in u.tolist()])
            comp_u[u < 0] = -1
            reasons = model._reasons(comp_u, idx, lengths)
            if reasons is not None:
                return reasons
        return None

    # -- persistence ------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        arrays, metas = self._dump_models()
        self._pending_metas = metas
        return {
            "item_events": self._item_events[: self.n_items],
            "tag_items": self._tag_items,
            "tag_ids": self._tag_ids,
            "hits": self._hits,
            "trials": self._trials,
            **arrays,
        }

    def _extra_meta(self) -> dict[str, Any]:
        metas = self.__dict__.pop("_pending_metas", None)
        if metas is None:
            metas = self._dump_models()[1]
        return {"tags": self.tag_index.ids, "models": metas}

    def _dump_models(self) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Arrays (prefixed ``m<j>.``) and metadata of every owned model, via their own save."""
        arrays: dict[str, np.ndarray] = {}
        metas: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for j, model in enumerate((*self._models, self._popularity)):
                meta, model_arrays = read_model_dir(model.save(Path(tmp) / f"m{j}"))
                metas.append(meta)
                arrays.update({f"m{j}.{k}": v for k, v in model_arrays.items()})
        return arrays, metas

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._item_events = self._grown(arrays["item_events"].astype(np.int64), self.n_items)
        self._tag_items = arrays["tag_items"].astype(np.int64)
        self._tag_ids = arrays["tag_ids"].astype(np.int64)
        self._tags_cache = None
        self._hits = arrays["hits"].astype(np.float64)
        self._trials = arrays["trials"].astype(np.float64)
        # a loaded model that shares without begin_sharing sends what it holds, as its owned models do
        self._unsent_hits, self._unsent_trials = self._hits.copy(), self._trials.copy()
        self._unsent_updates = np.zeros(len(self._hits), dtype=np.int64)
        self._cache.clear()
        self._loaded_arrays = arrays
        self._restore_models()

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self.tag_index = IdIndex(extra.get("tags", []))
        self._loaded_metas = extra.get("models")
        self._restore_models()

    def _restore_models(self) -> None:
        """Rebuild the owned models once both their arrays and their metadata are loaded."""
        arrays = self.__dict__.get("_loaded_arrays")
        metas = self.__dict__.get("_loaded_metas")
        if arrays is None or metas is None:
            return
        restored = []
        with tempfile.TemporaryDirectory() as tmp:
            for j, meta in enumerate(metas):
                prefix = f"m{j}."
                model_arrays = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
                restored.append(OnlineRecommender.load(write_model_dir(Path(tmp) / f"m{j}", meta, model_arrays)))
        *self._models, popularity = restored
        if not isinstance(popularity, Popularity):
            raise TypeError(f"saved hybrid holds a {type(popularity).__name__} where Popularity was expected")
        self._popularity = popularity
        del self._loaded_arrays, self._loaded_metas

    # -- sharing across workers (see "Several workers" above) -------------------------

    def _owned(self) -> tuple[OnlineRecommender, ...]:
        """The owned models in the order their payloads are numbered (``m<j>.``): members, then popularity."""
        return (*self._models, self._popularity)

    @staticmethod
    def _unsharing(components: Any) -> tuple[str, ...]:
        """The members among ``components`` that cannot share state across workers."""
        return tuple(str(c) for c in components if not models.model_class(str(c)).shares_state)

    @classmethod
    def shares_state_with(cls, params: Mapping[str, Any]) -> bool:
        default = inspect.signature(cls.__init__).parameters["components"].default
        return not cls._unsharing(params.get("components", default))

    def _require_sharing(self) -> None:
        if self.unsharing_components:
            raise NotImplementedError(
                f"hybrid cannot share its state across workers: its member(s) {', '.join(self.unsharing_components)} "
                "cannot; run it with one worker (STREAMREC_TOPIC_PARTITIONS=1), or choose members that can"
            )
        super()._require_sharing()

    def _catch_up_items(self, model: OnlineRecommender) -> None:
        """Index, in the hybrid and every owned model, the items ``model`` indexed on its own (applying a payload).

        Owned models index items in the hybrid's rows, and every index fills
        its smallest free row first, so adding the new ids in row order gives
        them the rows ``model`` gave them.
        """
        mine, theirs = self.item_index, model.item_index
        rows = [r for r in mine.free_rows().tolist() if r < len(theirs) and theirs.ids[r] is not None]
        rows += range(len(mine), len(theirs))
        if not rows:
            return
        got = mine.add_many(theirs.ids_of(rows))  # type: ignore[arg-type]
        if not np.array_equal(got, rows):
            raise RuntimeError(f"owned model {model.name} is out of step with the hybrid's item rows")
        self._grow_base_state()
        self._grow(self.n_users, self.n_items)  # the other owned models index them in the same rows

    def _begin_sharing_extra(self) -> None:
        for model in self._owned():
            model.begin_sharing()
        self._unsent_hits[:] = 0.0
        self._unsent_trials[:] = 0.0
        self._unsent_updates[:] = 0

    def _pack_members(self, delta: ItemDelta, parts: list[ItemDelta]) -> None:
        """Put the owned models' deltas ``parts`` into ``delta`` (``m<j>.`` names; item ids listed once)."""
        at = {item: n for n, item in enumerate(delta.items)}
        more: list[str] = []
        metas: dict[str, dict[str, Any]] = {}
        for j, part in enumerate(parts):
            if part.is_empty():
                continue
            positions = []
            for item in part.items:
                n = at.get(item)
                if n is None:
                    n = at[item] = len(at)
                    more.append(item)
                positions.append(n)
            metas[str(j)] = part.extra
            delta.extra_arrays[f"m{j}.rows"] = np.asarray(positions, dtype=np.int64)
            for kind, arrays in (("a", part.arrays), ("g", part.globals), ("x", part.extra_arrays)):
                for name, values in arrays.items():
                    delta.extra_arrays[f"m{j}.{kind}.{name}"] = values
        if metas:
            delta.extra["members"] = metas
        if more:
            delta.extra["member_items"] = more

    def _unpack_member(self, delta: ItemDelta, j: int) -> ItemDelta | None:
        """Owned model ``j``'s delta inside ``delta`` (``None`` when it holds none)."""
        meta = (delta.extra.get("members") or {}).get(str(j))
        if meta is None:
            return None
        ids = [*delta.items, *delta.extra.get("member_items", [])]
        prefix = f"m{j}."
        parts: dict[str, dict[str, np.ndarray]] = {"a": {}, "g": {}, "x": {}}
        for key, values in delta.extra_arrays.items():
            if key.startswith(prefix) and key != f"{prefix}rows":
                kind, _, name = key.removeprefix(prefix).partition(".")
                parts[kind][name] = values
        items = [ids[n] for n in delta.extra_arrays[f"{prefix}rows"].tolist()]
        return ItemDelta(self._owned()[j].name, items, parts["a"], parts["g"], meta, parts["x"])

    def _take_item_delta_extra(self, delta: ItemDelta) -> None:
        self._pack_members(delta, [model.take_item_delta() for model in self._owned()])
        if self._unsent_updates.any():
            delta.extra["hybrid_hits"] = self._unsent_hits.tolist()
            delta.extra["hybrid_trials"] = self._unsent_trials.tolist()
            delta.extra["hybrid_updates"] = self._unsent_updates.tolist()
            self._unsent_hits[:] = 0.0
            self._unsent_trials[:] = 0.0
            self._unsent_updates[:] = 0

    # -- item state owned by item: each member cuts, merges and negates its own delta

    def split_item_delta(self, delta: ItemDelta, parts: int) -> dict[int, ItemDelta]:
        """Cut the hybrid's rows and each member's delta by item part (see :meth:`OnlineRecommender.split_item_delta`)."""
        members, bare = self._members_of(delta)
        out = super().split_item_delta(bare, parts)
        cut = [
            model.split_item_delta(part, parts) if part is not None else {}
            for model, part in zip(self._owned(), members, strict=True)
        ]
        frame = {k: v for k, v in delta.extra.items() if k in self._frame_keys}
        for p in sorted(set().union(*cut)):
            piece = out.setdefault(p, ItemDelta(delta.model, [], {}, {}, dict(frame)))
            self._pack_members(piece, [c.get(p, ItemDelta(m.name)) for c, m in zip(cut, self._owned(), strict=True)])
        return out

    def _members_of(self, delta: ItemDelta) -> tuple[list[ItemDelta | None], ItemDelta]:
        """Each owned model's delta inside ``delta``, and ``delta`` without them."""
        members = [self._unpack_member(delta, j) for j in range(len(self._owned()))]
        bare = ItemDelta(
            delta.model,
            list(delta.items),
            dict(delta.arrays),
            dict(delta.globals),
            {k: v for k, v in delta.extra.items() if k not in ("members", "member_items")},
            {k: v for k, v in delta.extra_arrays.items() if not _MEMBER_KEY.match(k)},
        )
        return members, bare

    def _merge_item_deltas_extra(self, deltas: list[ItemDelta], merged: ItemDelta) -> None:
        self._combine_members(deltas, merged, join=False)

    def _join_item_deltas_extra(self, deltas: list[ItemDelta], joined: ItemDelta) -> None:
        self._combine_members(deltas, joined, join=True)

    def _combine_members(self, deltas: list[ItemDelta], into: ItemDelta, join: bool) -> None:
        """Merge (or join) each member's deltas into ``into``, and the hit counters in the deltas' order."""
        combined: list[ItemDelta] = []
        for j, model in enumerate(self._owned()):
            held = [part for part in (self._unpack_member(d, j) for d in deltas) if part is not None]
            if not held:
                combined.append(ItemDelta(model.name))
            else:
                combined.append(model.join_item_deltas(held) if join else model.merge_item_deltas(held))
        self._pack_members(into, combined)
        counted = [d for d in deltas if "hybrid_updates" in d.extra]
        if not counted:
            return
        hits = trials = updates = np.zeros(1)
        for d in counted:  # as applied one after the other: earlier counts decay by the later updates
            u = np.asarray(d.extra["hybrid_updates"], dtype=np.float64)
            keep = self._kept(u)
            hits = keep * hits + np.asarray(d.extra["hybrid_hits"], dtype=np.float64)
            trials = keep * trials + np.asarray(d.extra["hybrid_trials"], dtype=np.float64)
            updates = updates + u
        into.extra["hybrid_hits"] = hits.tolist()
        into.extra["hybrid_trials"] = trials.tolist()
        into.extra["hybrid_updates"] = updates.tolist()

    def _kept(self, updates: np.ndarray) -> np.ndarray:
        """The share of each bucket's hit counts kept after ``updates`` more updates (a column per bucket)."""
        return (0.5 ** (1.0 / self.half_life)) ** updates[:, None]

    def _negate_item_delta_extra(self, delta: ItemDelta) -> None:
        members, bare = self._members_of(delta)
        delta.extra, delta.extra_arrays = bare.extra, bare.extra_arrays
        self._pack_members(
            delta,
            [
                model.negate_item_delta(part) if part is not None else ItemDelta(model.name)
                for model, part in zip(self._owned(), members, strict=True)
            ],
        )
        if "hybrid_updates" in delta.extra:  # the counters' inverse: undo the decay, then the counts
            u = np.asarray(delta.extra["hybrid_updates"], dtype=np.float64)
            undo = self._kept(-u)
            for key in ("hybrid_hits", "hybrid_trials"):
                delta.extra[key] = (-undo * np.asarray(delta.extra[key], dtype=np.float64)).tolist()
            delta.extra["hybrid_updates"] = (-u).tolist()

    def _export_items_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        self._pack_members(delta, [model.export_items() for model in self._owned()])
        delta.extra["hybrid_hits"] = self._hits.tolist()
        delta.extra["hybrid_trials"] = self._trials.tolist()
        tags = self.tag_index.ids
        tagged = np.isin(rows, self._tag_items)
        if tagged.any():
            of_item: dict[int, list[str]] = {}
            for item, tag in zip(self._tag_items.tolist(), self._tag_ids.tolist(), strict=True):
                of_item.setdefault(item, []).append(tags[tag])  # type: ignore[arg-type]
            delta.extra["hybrid_tags"] = {delta.items[n]: of_item[r] for n, r in enumerate(rows.tolist()) if tagged[n]}

    def _apply_item_delta_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        absolute = bool(delta.extra.get("absolute"))
        more = delta.extra.get("member_items")
        if more:
            self._rows_for_items(more)  # indexed here first: the owned models find them in the hybrid's rows
        for j, model in enumerate(self._owned()):
            part = self._unpack_member(delta, j)
            if part is not None:
                model.apply_item_delta(part)
                self._catch_up_items(model)  # items an owned model's own payload names (session appends, pairs)
        hits, trials = delta.extra.get("hybrid_hits"), delta.extra.get("hybrid_trials")
        if hits is not None and trials is not None:
            hits, trials = np.asarray(hits, dtype=np.float64), np.asarray(trials, dtype=np.float64)
            if absolute:
                self._hits, self._trials = hits.copy(), trials.copy()
            else:  # their updates after ours: ours decay by as many updates as theirs span
                updates = np.asarray(delta.extra.get("hybrid_updates", np.zeros(len(hits))), dtype=np.float64)
                keep = self._kept(updates)
                self._hits = keep * self._hits + hits
                self._trials = keep * self._trials + trials
        if absolute and delta.extra.get("hybrid_tags"):
            tagged = delta.extra["hybrid_tags"]
            self._set_own_tags(list(tagged), [tuple(t) for t in tagged.values()])
        self._cache.clear()

    def _after_item_change(self, rows: np.ndarray) -> None:
        self._cache.clear()

    def export_users(self, users: Any) -> UserStates:
        """The users' state in every owned model, in one payload (see "Several workers" above)."""
        states = super().export_users(users)
        refs: dict[str, int] = {}
        for j, model in enumerate(self._owned()):
            part = model.export_users(states.users)
            if part.users != states.users:
                raise RuntimeError(f"owned model {model.name} is out of step with the hybrid's users")
            lookup = np.asarray([refs.setdefault(item, len(refs)) for item in part.items] or [0], dtype=np.int64)
            for name, values in part.arrays.items():
                if name in part.item_refs:
                    values = np.where(values >= 0, lookup[np.maximum(values, 0)], -1)
                    states.item_refs = (*states.item_refs, f"m{j}.{name}")
                states.arrays[f"m{j}.{name}"] = values
            states.extra.update({f"m{j}.{key}": value for key, value in part.extra.items()})
        states.items = list(refs)
        return states

    def import_users(self, states: UserStates) -> None:
        """Take over users exported by :meth:`export_users` in the hybrid and in every owned model."""
        if not self._has_users_to_import(states):
            return
        own = {k: v for k, v in states.extra.items() if not _MEMBER_KEY.match(k)}
        # the hybrid indexes every item the payload names first; the owned models then find them in its rows
        super().import_users(UserStates(self.name, states.users, {}, states.seen, states.items, (), own))
        for j, model in enumerate(self._owned()):
            prefix = f"m{j}."
            part = UserStates(
                model.name,
                states.users,
                {k.removeprefix(prefix): v for k, v in states.arrays.items() if k.startswith(prefix)},
                states.seen,
                states.items,
                tuple(k.removeprefix(prefix) for k in states.item_refs if k.startswith(prefix)),
                {k.removeprefix(prefix): v for k, v in states.extra.items() if k.startswith(prefix)},
            )
            model.import_users(part)
            self._catch_up_items(model)
        self._cache.clear()

    def drop_users(self, users: Any) -> int:
        """Hand ``users`` off in the hybrid and in every owned model (their own hand-off, not a forget)."""
        users = [str(u) for u in users]
        for model in self._owned():
            model.drop_users(users)
        self._handing_off = True
        try:
            return super().drop_users(users)
        finally:
            self._handing_off = False

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {},
            {"components": ("itemknn", "sknn"), "temperature": 0.05, "content_weight": 0.5, "candidates": 5},
            {"components": ("itemknn", "isgd"), "temperature": 0.0},  # a member that cannot share
        ]
