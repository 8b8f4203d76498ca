"""Approximate top-k for factor models: a faiss inverted-file index over item factors.

:class:`ANNRecommender` wraps a fitted factor model (ISGD, BiasedMF, TorchBPR:
anything with a ``factors()`` method whose ``P @ Q.T`` is the model's score)
and serves :meth:`~ANNRecommender.recommend` with the model's interface from
an :class:`~models.retrieval.ItemVectorIndex` (faiss IVF-Flat, inner products
searched as Euclidean distances) instead of scoring the whole catalogue. The
exact path costs ``O(users x items)`` per call; a query scans ``nprobe`` lists
of the index, a few thousand items whatever the catalogue size. The index was
hnswlib's HNSW graph until faiss replaced it (``models.retrieval`` says why).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from models.base import Interactions, OnlineRecommender, Recommendations
from models.retrieval import ItemVectorIndex

__all__ = ["ANNRecommender"]


class ANNRecommender:
    """Recommend from a factor model through an inverted-file index of its item factors (faiss).

    The index holds one vector per live item row of the model (``Q`` of
    ``model.factors()``, labelled by the row), so a user's approximate top-k
    is a search with the user's row of ``P``; the returned items are scored
    by their exact inner products, the model's own scores.

    Seen items (and ``exclude``) are left out by over-fetching: a user with
    ``s`` banned items asks the index for ``k + s`` neighbours (users are
    grouped by that number, rounded up to a power of two) and drops the
    banned ones; a user still short of ``k`` is asked again for twice as many.
    A query that asks for at least half of the indexed items (small
    catalogues, users with many seen items) is answered exactly from the
    indexed vectors instead. Users the model has never seen are passed to the model's exact
    :meth:`~models.base.OnlineRecommender.recommend` (its cold-start ranking).

    The index follows the model incrementally: :meth:`update` adds new item
    rows, re-inserts rows whose vector changed and removes freed rows;
    :meth:`learn` and :meth:`add_items` forward to the model and then update.
    A copy of the indexed vectors is kept to find the changed rows. There is
    no ``save``: save the model and build a new index from it.

    Parameters
    ----------
    model
        A fitted model with ``factors() -> (P, Q)``, ``user_index``,
        ``item_index`` and ``recommend``.
    nlist
        Inverted lists of the index (at most one per 16 items).
    nprobe
        Lists scanned per query (recall and cost grow with it).
    seed
        Seed of the quantizer's training sample.

    Examples
    --------
    >>> from models.isgd import ISGD
    >>> model = ISGD(n_factors=8, seed=0)
    >>> users, items = ["ann", "bob", "cid"] * 40, [f"i{j % 30}" for j in range(120)]
    >>> model.learn(Interactions.from_columns(users, items))
    >>> ann = ANNRecommender(model, nprobe=16, seed=0)
    >>> ann.recommend(["ann"], k=5).items == model.recommend(["ann"], k=5).items
    True
    >>> ann.add_items(["new"])
    >>> ann.n_indexed
    31
    """

    def __init__(self, model: OnlineRecommender, *, nlist: int = 2048, nprobe: int = 32, seed: int = 0) -> None:
        if not callable(getattr(model, "factors", None)):
            raise TypeError(f"{type(model).__name__} has no factors() method: wrap ISGD, BiasedMF or TorchBPR")
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be >= 1; got {nlist}, {nprobe}")
        self.model = model
        self.nlist = nlist
        self.seed = seed
        self.name = f"{getattr(model, 'name', type(model).__name__)}+ivf"
        self.build_seconds = 0.0
        self._index = ItemVectorIndex(min_items=0, nlist=nlist, nprobe=nprobe, seed=seed)
        self.rebuild()

    @property
    def nprobe(self) -> int:
        """Lists scanned per query (settable): the index's."""
        return self._index.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._index.nprobe = value

    # -- the index -----------------------------------------------------------------------

    @property
    def n_indexed(self) -> int:
        """Items in the index (live rows)."""
        return self._index.n_indexed

    def rebuild(self) -> None:
        """Build the index from scratch from the model's current item factors."""
        start = time.perf_counter()
        _, q = self.model.factors()
        q = np.ascontiguousarray(q, dtype=np.float32)
        self.dim = q.shape[1]
        self._index = ItemVectorIndex(min_items=0, nlist=self.nlist, nprobe=self._index.nprobe, seed=self.seed)
        self._vectors = q.copy()
        self._n_rows = len(q)
        if self._n_rows:
            self._index.refresh(self._indexed, self._n_rows, self._live)
        self.build_seconds = time.perf_counter() - start

    def _indexed(self, rows: np.ndarray) -> np.ndarray:
        return self._vectors[rows]

    def _live(self, rows: np.ndarray) -> np.ndarray:
        return rows[_live_mask(self.model, self._n_rows)[rows]]

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
        if changed is None:  # rows already indexed whose vector moved
            moved = np.flatnonzero(np.any(q[:n_old] != self._vectors[:n_old], axis=1))
        else:
            changed = changed[changed < n_old]
            moved = changed[np.any(q[changed] != self._vectors[changed], axis=1)]
        live = _live_mask(self.model, n_new)
        freed = np.flatnonzero(~live[:n_old])  # free rows: out of the index (a no-op for those already out)
        todo = np.concatenate([moved, np.arange(n_old, n_new, dtype=np.int64)])
        self._vectors = q.copy() if n_new != n_old else self._vectors
        self._vectors[todo] = q[todo]
        self._n_rows = n_new
        self._index.drop(freed)
        self._index.mark(todo)  # freed rows among them stay out: only live rows are inserted
        if n_new:
            self._index.refresh(self._indexed, n_new, self._live)
        return int(np.count_nonzero(live[todo])) if len(todo) else 0

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
            order = np.argsort(-sims[g], kind="stable")  # sorted already; this only breaks float ties
            items[j] = ids_of(labels[g][order])
            scores[j] = sims[g][order].astype(float).tolist()
        return Recommendations(user_ids, items, scores)

    def _query(self, queries: np.ndarray, size: int, n_live: int) -> tuple[np.ndarray, np.ndarray]:
        """About ``size`` best items of each query (labels, ``1 - inner product``), from the index or exactly.

        A query that asks for most of a small catalogue is answered by
        scoring the indexed vectors exactly, which is cheap at that size; so
        is a query the probed lists cannot fill.
        """
        if 2 * size < n_live:
            found = self._index.search(queries, size, self._indexed, self._n_rows, self._live)
            if found is not None and all(len(f) >= size for f in found):
                labels = np.stack([f[:size] for f in found])
                sims = np.einsum("qd,qkd->qk", queries, self._vectors[labels])
                order = np.argsort(-sims, axis=1, kind="stable")
                return np.take_along_axis(labels, order, axis=1), 1.0 - np.take_along_axis(sims, order, axis=1)
        scores = queries @ self._vectors[: self._n_rows].T
        dead = ~_live_mask(self.model, self._n_rows)
        if dead.any():
            scores[:, dead] = -np.inf
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
