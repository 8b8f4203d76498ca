"""Approximate top-k for factor models: an HNSW index (hnswlib, inner product) over item factors.

:class:`ANNRecommender` wraps a fitted factor model (ISGD, BiasedMF, TorchBPR:
anything with a ``factors()`` method whose ``P @ Q.T`` is the model's score)
and serves :meth:`~ANNRecommender.recommend` with the model's interface from
an HNSW graph instead of scoring the whole catalogue. The exact path costs
``O(users x items)`` per call; a query of the graph visits a few thousand items
whatever the catalogue size.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import hnswlib
import numpy as np

from models.base import Interactions, OnlineRecommender, Recommendations

__all__ = ["ANNRecommender"]


class ANNRecommender:
    """Recommend from a factor model through an HNSW inner-product index (hnswlib).

    The index holds one vector per live item row of the model (``Q`` of
    ``model.factors()``, labelled by the row), so a user's approximate top-k
    is a nearest-neighbour query with the user's row of ``P`` in hnswlib's
    inner-product space. Scores are the inner products, i.e. the model's own
    scores of the returned items.

    Seen items (and ``exclude``) are left out by over-fetching: a user with
    ``s`` banned items asks the index for ``k + s`` neighbours (users are
    grouped by that number, rounded up to a power of two) and drops the
    banned ones; a user still short of ``k`` is asked again for twice as many.
    A query that asks for at least half of the indexed items (small
    catalogues, users with many seen items) is answered exactly from the
    indexed vectors instead. Users the model has never seen are passed to the model's exact
    :meth:`~models.base.OnlineRecommender.recommend` (its cold-start ranking).

    The index follows the model incrementally: :meth:`update` adds new item
    rows, re-inserts rows whose vector changed (hnswlib updates an element in
    place) and marks freed rows deleted; :meth:`learn` and :meth:`add_items`
    forward to the model and then update. A copy of the indexed vectors is
    kept to find the changed rows. There is no ``save``: save the model and
    build a new index from it.

    Parameters
    ----------
    model
        A fitted model with ``factors() -> (P, Q)``, ``user_index``,
        ``item_index`` and ``recommend``.
    M
        Graph degree of hnswlib (memory and recall grow with it).
    ef_construction
        Candidate list size while building (build time and recall grow with it).
    ef
        Candidate list size of a query (at least the number of neighbours asked for).
    num_threads
        Threads for building and querying (``-1``: all cores).
    seed
        Seed of hnswlib's level generator.

    Examples
    --------
    >>> from models.isgd import ISGD
    >>> model = ISGD(n_factors=8, seed=0)
    >>> users, items = ["ann", "bob", "cid"] * 40, [f"i{j % 30}" for j in range(120)]
    >>> model.learn(Interactions.from_columns(users, items))
    >>> ann = ANNRecommender(model, M=16, ef=50, seed=0)
    >>> ann.recommend(["ann"], k=5).items == model.recommend(["ann"], k=5).items
    True
    >>> ann.add_items(["new"])
    >>> ann.n_indexed
    31
    """

    def __init__(
        self,
        model: OnlineRecommender,
        *,
        M: int = 32,  # noqa: N803 - hnswlib's name
        ef_construction: int = 200,
        ef: int = 100,
        num_threads: int = -1,
        seed: int = 0,
    ) -> None:
        if not callable(getattr(model, "factors", None)):
            raise TypeError(f"{type(model).__name__} has no factors() method: wrap ISGD, BiasedMF or TorchBPR")
        if M < 2 or ef_construction < 1 or ef < 1:
            raise ValueError(f"M must be >= 2 and ef_construction, ef >= 1; got {M}, {ef_construction}, {ef}")
        self.model = model
        self.M = M
        self.ef_construction = ef_construction
        self.ef = ef
        self.num_threads = num_threads
        self.seed = seed
        self.name = f"{getattr(model, 'name', type(model).__name__)}+hnsw"
        self.build_seconds = 0.0
        self.rebuild()

    # -- the index -----------------------------------------------------------------------

    @property
    def n_indexed(self) -> int:
        """Items in the index (live, not deleted)."""
        return self._n_rows - len(self._deleted)

    def rebuild(self) -> None:
        """Build the index from scratch from the model's current item factors."""
        start = time.perf_counter()
        _, q = self.model.factors()
        q = np.ascontiguousarray(q, dtype=np.float32)
        self.dim = q.shape[1]
        self._index = hnswlib.Index(space="ip", dim=self.dim)
        self._capacity = max(len(q), 1024)
        self._index.init_index(
            max_elements=self._capacity, M=self.M, ef_construction=self.ef_construction, random_seed=self.seed
        )
        self._index.set_num_threads(self.num_threads if self.num_threads > 0 else _cores())
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._n_rows = 0
        self._deleted: set[int] = set()
        self._sync(q, changed=None)
        self.build_seconds = time.perf_counter() - start

    def update(self, items: Iterable[Any] | None = None) -> int:
        """Bring the index up to date with the model; return the number of rows (re)inserted.

        New item rows are always added and freed rows marked deleted. With
        ``items`` (ids) only those rows are compared with their indexed
        vector; with ``None`` every row is (a full scan, exact whatever the
        model changed: TorchBPR also moves its sampled negatives).
        """
        _, q = self.model.factors()
        rows = None
        if items is not None:
            rows = self.model.item_index.lookup([str(i) for i in items])
            rows = np.unique(rows[rows >= 0])
        return self._sync(np.ascontiguousarray(q, dtype=np.float32), changed=rows)

    def _sync(self, q: np.ndarray, changed: np.ndarray | None) -> int:
        n_old, n_new = self._n_rows, len(q)
        if q.shape[1] != self.dim:
            raise ValueError(f"the model's factors have {q.shape[1]} columns, the index {self.dim}: rebuild()")
        live = _live_mask(self.model, n_new)
        # rows already indexed whose vector moved
        if changed is None:
            old = q[:n_old]
            moved = np.flatnonzero(np.any(old != self._vectors[:n_old], axis=1))
        else:
            changed = changed[changed < n_old]
            moved = changed[np.any(q[changed] != self._vectors[changed], axis=1)]
        # rows freed (tombstones) and rows taken again after being freed
        freed = [r for r in np.flatnonzero(~live[:n_old]).tolist() if r not in self._deleted]
        revived = [r for r in self._deleted if r < n_old and live[r]]
        insert = np.unique(np.concatenate([moved, np.asarray(revived, dtype=np.int64)])).astype(np.int64)
        insert = insert[live[insert]]
        new_rows = np.arange(n_old, n_new, dtype=np.int64)
        new_dead = new_rows[~live[n_old:n_new]]
        new_rows = new_rows[live[n_old:n_new]]
        if n_new > self._capacity:  # grow by a quarter: at 1M items, doubling would copy and reserve a lot
            self._capacity = max(n_new, self._capacity + self._capacity // 4)
            self._index.resize_index(self._capacity)
        todo = np.concatenate([insert, new_rows])
        if len(todo):
            self._index.add_items(q[todo], todo.astype(np.uint64))
        for r in freed:
            self._index.mark_deleted(int(r))
        self._deleted.update(int(r) for r in freed)
        self._deleted.difference_update(int(r) for r in revived)
        self._deleted.update(int(r) for r in new_dead)  # free rows never inserted: counted as absent
        if n_new > len(self._vectors):
            grown = np.zeros((max(n_new, len(self._vectors) + len(self._vectors) // 4), self.dim), dtype=np.float32)
            grown[: len(self._vectors)] = self._vectors
            self._vectors = grown
        self._vectors[todo] = q[todo]
        self._n_rows = n_new
        return len(todo)

    # -- the protocol --------------------------------------------------------------------

    def learn(self, batch: Interactions) -> None:
        """Let the model learn ``batch``, then bring the index up to date (a full :meth:`update`)."""
        self.model.learn(batch)
        self.update()

    def add_items(
        self, items: Iterable[Any], tags: Iterable[Any] | None = None, titles: Iterable[Any] | None = None
    ) -> None:
        """Add catalogue items to the model and to the index."""
        ids = [str(i) for i in items]
        self.model.add_items(ids, tags=tags, titles=titles)
        self.update(ids)

    def recommend(
        self,
        users: Iterable[Any],
        k: int = 10,
        *,
        exclude_seen: bool = True,
        exclude: Mapping[str, Iterable[Any]] | None = None,
    ) -> Recommendations:
        """Approximate top-``k`` items of each user, best first, as the model's ``recommend`` returns them.

        Parameters
        ----------
        users
            User ids; users the model has never seen get the model's exact cold-start list.
        k
            List length.
        exclude_seen
            Leave out the items each user already interacted with.
        exclude
            Further item ids to leave out, per user id.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        user_ids = [str(u) for u in users]
        items: list[list[str]] = [[] for _ in user_ids]
        scores: list[list[float]] = [[] for _ in user_ids]
        if not user_ids or k == 0:
            return Recommendations(user_ids, items, scores)
        model = self.model
        rows = model.user_index.lookup(user_ids)
        cold = np.flatnonzero(rows < 0)
        if len(cold):
            exact = model.recommend([user_ids[j] for j in cold], k, exclude_seen=exclude_seen, exclude=exclude)
            for j, its, scs in zip(cold.tolist(), exact.items, exact.scores, strict=True):
                items[j], scores[j] = its, scs
        warm = np.flatnonzero(rows >= 0)
        n_live = self.n_indexed
        if len(warm) == 0 or n_live == 0:
            return Recommendations(user_ids, items, scores)
        p, _ = model.factors()
        queries = np.ascontiguousarray(p[rows[warm]], dtype=np.float32)
        banned = [self._banned(user_ids[j], int(rows[j]), exclude_seen, exclude) for j in warm.tolist()]
        want = np.array([min(k + len(b), n_live) for b in banned], dtype=np.int64)
        labels: list[np.ndarray | None] = [None] * len(warm)
        sims: list[np.ndarray | None] = [None] * len(warm)
        pending = np.arange(len(warm))
        while len(pending):
            fetch = np.minimum(_next_pow2(want[pending]), n_live)
            retry: list[int] = []
            for size in np.unique(fetch).tolist():
                group = pending[fetch == size]
                lab, dist = self._query(queries[group], size, n_live)
                for g, lab_row, dist_row in zip(group.tolist(), lab, dist, strict=True):
                    ban = banned[g]
                    keep = [n for n, x in enumerate(lab_row.tolist()) if x not in ban][:k]
                    if len(keep) < k and size < n_live:
                        want[g] = 2 * size
                        retry.append(g)
                        continue
                    labels[g] = lab_row[keep].astype(np.int64)
                    sims[g] = 1.0 - dist_row[keep]
            pending = np.asarray(retry, dtype=np.int64)
        ids_of = model.item_index.ids_of
        for g, j in enumerate(warm.tolist()):
            order = np.argsort(-sims[g], kind="stable")  # hnswlib sorts; this only breaks float ties
            items[j] = ids_of(labels[g][order])
            scores[j] = sims[g][order].astype(float).tolist()
        return Recommendations(user_ids, items, scores)

    def _query(self, queries: np.ndarray, size: int, n_live: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` nearest items of each query (labels, ``1 - inner product``), from the graph or exactly.

        A query that asks for most of a small catalogue cannot be answered by
        the graph (hnswlib raises when it finds fewer than ``size`` items): the
        indexed vectors are then scored exactly, which is cheap at that size.
        """
        if 2 * size < n_live:
            self._index.set_ef(max(self.ef, size))
            try:
                return self._index.knn_query(queries, k=size)
            except RuntimeError:  # the graph search found fewer than `size` items
                pass
        scores = queries @ self._vectors[: self._n_rows].T
        if self._deleted:
            scores[:, sorted(self._deleted)] = -np.inf
        part = (
            np.argpartition(-scores, size - 1, axis=1)[:, :size] if size < self._n_rows else np.argsort(-scores, axis=1)
        )
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1), 1.0 - np.take_along_axis(vals, order, axis=1)

    def _banned(
        self, user_id: str, row: int, exclude_seen: bool, exclude: Mapping[str, Iterable[Any]] | None
    ) -> set[int]:
        banned: set[int] = set(self.model._seen[row]) if exclude_seen else set()
        if exclude and user_id in exclude:
            extra = self.model.item_index.lookup([str(v) for v in exclude[user_id]])
            banned.update(extra[extra >= 0].tolist())
        return banned


def _live_mask(model: Any, n: int) -> np.ndarray:
    """Rows ``0..n-1`` of the model's item index that hold an item."""
    index = model.item_index
    if getattr(index, "n_free", 0):
        return index.live_mask()[:n]
    return np.ones(n, dtype=bool)


def _next_pow2(values: np.ndarray) -> np.ndarray:
    return (2 ** np.ceil(np.log2(np.maximum(values, 1)))).astype(np.int64)


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
