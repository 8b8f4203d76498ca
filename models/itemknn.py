"""Incremental item-to-item collaborative filtering on a sparse co-occurrence matrix."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from models.base import Interactions, OnlineRecommender
from models.cooccurrence import DENSE_MAX_ITEMS, DenseCooccurrence, SparseCooccurrence, cooccurrence_store
from models.sharing import item_parts

__all__ = ["ItemKNN"]


def _inv_count(count: int, alpha: float) -> np.float32:
    """``count ** -alpha`` (0 for a count of 0), the same float whether one item or many are updated."""
    return np.float32(float(count) ** -alpha) if count > 0 else np.float32(0.0)


class ItemKNN(OnlineRecommender):
    """Item-based nearest neighbours, updated event by event from co-occurrences.

    Each user keeps a window of the last ``window`` distinct items they
    interacted with, newest first. An event ``(u, j)`` whose item is not in
    ``u``'s window adds one to the co-occurrence counts ``C[h, j]`` and
    ``C[j, h]`` of every item ``h`` in the window and to the item count
    ``n_j``, then puts ``j`` at the front of the window (the oldest item drops
    out when it is full). A repeat of an item already in the window only moves
    it to the front, so while a user's distinct items fit in the window ``C``
    counts users, not events, and with ``alpha=0.5`` the similarity

    .. math:: sim(h, j) = C[h, j] / (n_h n_j)^{alpha}

    is the cosine between the items' binary user vectors. A user is scored by
    summing ``decay ** rank * sim(h, :)`` over the ``history_for_scoring``
    newest items ``h`` of their window (``rank`` 0 is the newest).

    ``C`` lives in a :mod:`models.cooccurrence` store: a dense array for
    catalogues up to ``dense_max_items``, else a sparse matrix with pending
    per-row increments, so that learning one event and scoring one user each
    cost microseconds (the per-event path of the live worker at low load and of
    the backtest at freshness 0). Each user is scored by one row sum, alone or
    in a batch alike. Events are processed in arrival order for the windows, so
    a batch gives the same counts as its events learned one by one. Event
    weights and ratings are not used.

    Users never seen, or with an empty window, score 0 for every item (the
    stream app falls back to popularity for them). Recommendations come with
    reasons: for each recommended item, the history item that contributed most
    to its score ("because you interacted with X").

    The defaults were chosen on the first 60% of a rating log and a click log
    (``docs/tuning/itemknn.md``): a short window and a steeper recency decay
    (the newest items say most about the next one), ``alpha`` below cosine.

    Parameters
    ----------
    window
        Distinct recent items kept per user, the partners of a new event.
    history_for_scoring
        Newest window items a user is scored from (at most ``window`` are used).
    decay
        Recency weight ratio between consecutive history items, in ``(0, 1]``.
    alpha
        Exponent of the normalisation ``(n_h n_j) ** alpha``; 0.5 is cosine,
        0 ranks by raw co-occurrence counts (popular neighbours win).

    dense_max_items
        Largest catalogue kept in a dense co-occurrence array (4,096 items:
        64 MiB); a larger one moves to the sparse store.
    max_neighbours
        In the sparse store (catalogues past ``dense_max_items``), a history
        item whose row holds more counts than this is scored through its
        ``max_neighbours`` most similar items only, ties at the last place
        kept (``None``: every row whole). The short list is drawn up when the
        item is first scored and again once its count has grown by a twentieth
        and 8 events, so its cost is spread over the item's events; the
        lists take 8 bytes per neighbour kept, at most what the counts they are
        drawn from take (11 MiB beside 76 MiB of counts at 100,000 items after
        a million events). After a
        million events the rows of popular items hold much of the catalogue:
        see ``bench/results/results.md`` ("after a long stream") for the cost
        and ``docs/tuning/itemknn.md`` for the cap's effect on quality (at 500:
        none on the click log, -0.3% on the rating log).
    seed
        Unused (the model is deterministic); kept for a uniform signature.

    Examples
    --------
    >>> model = ItemKNN()
    >>> model.learn(Interactions.from_columns(
    ...     ["ann", "ann", "bob", "bob", "bob", "cat"],
    ...     ["tea", "cake", "tea", "cake", "jam", "tea"]))
    >>> recs = model.recommend(["cat"], k=2)
    >>> recs.items, recs.reasons
    ([['cake', 'jam']], [['tea', 'tea']])
    >>> model.recommend(["stranger"], k=2).scores   # cold users score 0
    [[0.0, 0.0]]
    """

    name: ClassVar[str] = "itemknn"
    personalized: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = True
    shares_state: ClassVar[bool] = True
    sharing_is_exact: ClassVar[bool] = True
    _user_arrays: ClassVar[tuple[str, ...]] = ("_hist", "_hist_len")
    _user_item_refs: ClassVar[tuple[str, ...]] = ("_hist",)
    item_changes_tracked: ClassVar[bool] = True  # its item arrays change at the rows of learned items only
    _item_arrays: ClassVar[tuple[str, ...]] = ("_counts",)
    merges_item_deltas: ClassVar[bool] = True
    _nonnegative_item_arrays: ClassVar[bool] = True

    def __init__(
        self,
        window: int = 20,
        history_for_scoring: int = 20,
        decay: float = 0.8,
        alpha: float = 0.35,
        dense_max_items: int = DENSE_MAX_ITEMS,
        max_neighbours: int | None = 500,
        seed: int = 0,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if history_for_scoring < 1:
            raise ValueError(f"history_for_scoring must be >= 1, got {history_for_scoring}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        if alpha < 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if max_neighbours is not None and max_neighbours < 1:
            raise ValueError(f"max_neighbours must be >= 1 or None, got {max_neighbours}")
        self.window = window
        self.history_for_scoring = history_for_scoring
        self.decay = decay
        self.alpha = alpha
        self.dense_max_items = dense_max_items
        self.max_neighbours = max_neighbours
        self._recency = (decay ** np.arange(min(history_for_scoring, window))).astype(np.float32)
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self._cooc: DenseCooccurrence | SparseCooccurrence = cooccurrence_store(0, dense_max_items=self.dense_max_items)
        self._counts = np.zeros(0, dtype=np.int64)
        self._inv = np.zeros(0, dtype=np.float32)  # counts ** -alpha (0 where the count is 0)
        # per-user window of item indices, newest first, padded with -1
        self._hist = np.full((0, self.window), -1, dtype=np.int32)
        self._hist_len = np.zeros(0, dtype=np.int32)
        # capped neighbour lists of long rows: row -> (columns, counts, the row item's count when drawn up);
        # (None, None, count) for a row that was not past the cap at that count (read whole, live)
        self._neighbours: dict[int, tuple[np.ndarray | None, np.ndarray | None, int]] = {}

    def _grow(self, n_users: int, n_items: int) -> None:
        self._counts = self._grown(self._counts, n_items)
        self._inv = self._grown(self._inv, n_items)
        self._hist = self._grown(self._hist, n_users, fill=-1)
        self._hist_len = self._grown(self._hist_len, n_users)
        if n_items > self._cooc.n_items:
            if isinstance(self._cooc, DenseCooccurrence) and n_items > self.dense_max_items:
                self._cooc = self._cooc.to_sparse()
            self._cooc.grow(n_items)

    def _set_counts(self, items: np.ndarray) -> None:
        """Refresh the normalisation of ``items`` after their counts changed."""
        self._inv[items] = [_inv_count(c, self.alpha) for c in self._counts[items].tolist()]

    # -- learning ---------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        if len(u) == 1:
            self._learn_one(int(u[0]), int(i[0]))
            return
        users, slot = np.unique(u, return_inverse=True)
        lens = self._hist_len[users].tolist()
        windows = [row[:n] for row, n in zip(self._hist[users].tolist(), lens, strict=True)]
        size = self.window
        partners: list[int] = []  # window items of every counted event, flattened
        n_partners: list[int] = []
        counted: list[int] = []  # items of the counted events (not repeats within the window)
        for k, j in zip(slot.tolist(), i.tolist(), strict=True):
            win = windows[k]
            if j in win:
                if win[0] != j:
                    win.remove(j)
                    win.insert(0, j)
                continue
            counted.append(j)
            partners.extend(win)
            n_partners.append(len(win))
            win.insert(0, j)
            if len(win) > size:
                win.pop()
        self._store_windows(users, windows)
        if counted:
            touched, times = np.unique(np.asarray(counted, dtype=np.int64), return_counts=True)
            self._counts[touched] += times
            self._set_counts(touched)
        if partners:
            self._cooc.add_pairs(
                np.asarray(partners, dtype=np.int64),
                np.repeat(np.asarray(counted, dtype=np.int64), n_partners),
            )

    def _learn_one(self, user: int, j: int) -> None:
        """One event: the same update as :meth:`_learn` without the batch machinery."""
        n = int(self._hist_len[user])
        row = self._hist[user]
        window = row[:n].copy()
        at = np.flatnonzero(window == j)
        if len(at):
            if at[0]:
                row[1 : at[0] + 1] = window[: at[0]]
                row[0] = j
            return
        self._cooc.add_event(j, window)
        keep = min(n, self.window - 1)
        row[1 : keep + 1] = window[:keep]
        row[0] = j
        self._hist_len[user] = keep + 1
        count = self._counts[j] + 1
        self._counts[j] = count
        self._inv[j] = _inv_count(count, self.alpha)

    def _store_windows(self, users: np.ndarray, windows: list[list[int]]) -> None:
        lens = np.fromiter((len(w) for w in windows), dtype=np.int32, count=len(windows))
        block = np.full((len(users), self.window), -1, dtype=np.int32)
        block[np.arange(self.window) < lens[:, None]] = [j for w in windows for j in w]
        self._hist[users] = block
        self._hist_len[users] = lens

    # -- forgetting -------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Empty the users' windows; the co-occurrence and item counts are aggregates and stay."""
        self._hist[rows] = -1
        self._hist_len[rows] = 0

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Zero the items' counts, their rows and columns of ``C``, and drop them from every window."""
        n = self.n_items
        dead = np.zeros(n, dtype=bool)
        dead[rows] = True
        self._counts[rows] = 0
        self._inv[rows] = 0.0
        self._cooc.forget(rows)
        self._neighbours.clear()  # a forgotten item may be in any list
        hist = self._hist[: self.n_users]
        hit = (hist >= 0) & dead[np.maximum(hist, 0)]
        users = np.flatnonzero(hit.any(axis=1))
        if len(users):
            block, drop = hist[users], hit[users]
            block[drop] = -1
            # move the remaining items to the front, newest first as before (a stable sort on "is empty")
            order = np.argsort(block < 0, axis=1, kind="stable")
            self._hist[users] = np.take_along_axis(block, order, axis=1)
            self._hist_len[users] = (block >= 0).sum(axis=1)

    # -- scoring ----------------------------------------------------------------------

    def _history(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """The user's newest ``history_for_scoring`` items and their weights (recency x normalisation)."""
        depth = min(self.history_for_scoring, int(self._hist_len[user]))
        hist = self._hist[user, :depth]
        return hist, self._recency[:depth] * self._inv[hist]

    def _score(self, u: np.ndarray) -> np.ndarray:
        n = self.n_items
        scores = np.zeros((len(u), n), dtype=np.float32)
        inv = self._inv[:n]
        for r, user in enumerate(u.tolist()):  # one row sum per user: the same arithmetic alone or in a batch
            if user < 0 or self._hist_len[user] == 0:
                continue
            hist, weights = self._history(user)
            np.multiply(self._cooc.weighted_rows(hist, weights), inv, out=scores[r])
        return scores

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """The items reachable from each user's history and their scores (sparse store only)."""
        if isinstance(self._cooc, DenseCooccurrence):  # a small catalogue: one dense row is cheaper
            return None
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32))
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for user in u.tolist():
            if user < 0 or self._hist_len[user] == 0:
                out.append(empty)
                continue
            hist, weights = self._history(user)
            cols, sums = self._cooc.weighted_candidates(hist, weights, self._capped_rows(hist), ordered=False)
            out.append((cols, sums * self._inv[cols]))
        return out

    #: Growth of an item's count, as a share of its count plus a number of events, after which its capped
    #: neighbour list is drawn up anew (and a row read whole is looked at again).
    neighbours_refresh = 0.05
    neighbours_refresh_events = 8

    def _capped_rows(self, hist: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
        """The capped neighbour lists that stand in for the long rows of ``hist`` (sparse store only)."""
        cap = self.max_neighbours
        if cap is None or not isinstance(self._cooc, SparseCooccurrence):
            return None
        # a row may hold more than the cap once the item has been counted cap / (2 window) times (each counted
        # event adds at most a window of partners, and the item stays in at most a window of later events' windows):
        # decided from the counts, so the same state gives the same lists whether or not increments are folded in
        long_rows = hist[self._counts[hist] * (2 * self.window) > cap]
        if not len(long_rows):
            return None
        lists = self._neighbours
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for h in long_rows.tolist():
            count = int(self._counts[h])
            kept = lists.get(h)
            if kept is None or count > kept[2] * (1.0 + self.neighbours_refresh) + self.neighbours_refresh_events:
                cols, counts = self._cooc.row(h)
                if len(cols) > cap:  # the cap most similar, C[h, j] n_j^-alpha (h's own factor is common), and
                    # every item tied with the last: the same list however a worker numbers its items
                    similar = counts * self._inv[cols]
                    keep = similar >= np.partition(similar, len(similar) - cap)[len(similar) - cap]
                    kept = (cols[keep].astype(np.int32), counts[keep], count)  # 8 bytes per neighbour kept
                else:  # not past the cap yet: the row is read whole, live, until the count has grown again
                    kept = (None, None, count)
                lists[h] = kept
            if kept[0] is not None:
                out[h] = (kept[0], kept[1])
        return out

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        reasons: list[list[str | None]] = [[None] * n for n in lengths]
        ids = self.item_index.ids
        for r, user in enumerate(u.tolist()):
            if user < 0 or self._hist_len[user] == 0 or lengths[r] == 0:
                continue
            hist, weights = self._history(user)
            recs = idx[r, : lengths[r]]
            # contribution of history item h to recommended item j is weight_h * C[h, j], as it was scored
            # (a capped row through its short list)
            capped = self._capped_rows(hist)
            block = self._cooc.block(hist, recs, capped) if capped else self._cooc.block(hist, recs)
            contribution = block * weights[:, None]
            best = contribution.argmax(axis=0)
            positive = contribution[best, np.arange(len(recs))] > 0
            reasons[r] = [ids[h] if ok else None for h, ok in zip(hist[best].tolist(), positive.tolist(), strict=True)]
        return reasons

    # -- sharing across workers: counts are item arrays; co-occurrences travel as cells ---

    def _begin_sharing_extra(self) -> None:
        self._cooc.log.take()  # the log starts empty and records every cell from now on

    def _take_item_delta_extra(self, delta: Any) -> None:
        if not self._cooc.log.on:  # the first delta: everything learned so far
            self._cooc.log.take()
            matrix = self._cooc.csr()
            rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
            self._put_cells(delta, rows, matrix.indices.astype(np.int64), matrix.data)
        else:
            self._put_cells(delta, *self._cooc.log.take())

    def _export_items_extra(self, delta: Any, rows: np.ndarray) -> None:
        matrix = self._cooc.csr()
        cell_rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        self._put_cells(delta, cell_rows, matrix.indices.astype(np.int64), matrix.data)

    def _put_cells(self, delta: Any, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> None:
        self._put_cell_ids(delta, self.item_index.ids_of, rows, cols, counts)

    def _split_item_delta_extra(self, rest: Any, parts: int, out: dict[int, Any], frame: dict[str, Any]) -> None:
        """Co-occurrence cells go to the owner of their row's item (a row is what a list of neighbours reads)."""
        if "cells" not in rest.extra_arrays:
            return
        ids, cells, counts = rest.extra["cell_items"], rest.extra_arrays["cells"], rest.extra_arrays["cell_counts"]
        owner = item_parts(ids, parts)[cells[0]]
        for p in np.unique(owner).tolist():
            keep = np.flatnonzero(owner == p)
            piece = out.setdefault(p, type(rest)(rest.model, [], {}, {}, dict(frame)))
            used, inverse = np.unique(cells[:, keep], return_inverse=True)
            piece.extra["cell_items"] = [ids[n] for n in used.tolist()]
            piece.extra_arrays["cells"] = inverse.reshape(2, -1).astype(np.int32)
            piece.extra_arrays["cell_counts"] = counts[keep]

    def _merge_item_deltas_extra(self, deltas: list[Any], merged: Any) -> None:
        """Cells summed by (row item, column item); cells that sum to 0 (a piece taken back) dropped."""
        at: dict[str, int] = {}
        rows, cols, counts = [], [], []
        for delta in deltas:
            if "cells" not in delta.extra_arrays:
                continue
            local = np.fromiter((at.setdefault(i, len(at)) for i in delta.extra["cell_items"]), dtype=np.int64)
            cells = delta.extra_arrays["cells"]
            rows.append(local[cells[0]])
            cols.append(local[cells[1]])
            counts.append(delta.extra_arrays["cell_counts"].astype(np.float64))
        if not rows:
            return
        n = len(at)
        keys, inverse = np.unique(np.concatenate(rows) * n + np.concatenate(cols), return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=np.concatenate(counts), minlength=len(keys))
        keep = sums > 1e-6
        ids = list(at)
        rows_, cols_ = np.divmod(keys[keep], n)
        self._put_cell_ids(merged, lambda used: [ids[j] for j in used.tolist()], rows_, cols_, sums[keep])

    def net_item_deltas(self, merged: Any, held: Any) -> list[Any]:
        """The merge as it is, then the held pieces taken back: two applies of the cells they hold.

        Merging them first cost every worker a sort of every worker's cells
        (half of applying a merge, at 64 workers); taking a worker's own cells
        back costs what its own cells do.
        """
        if not held:
            return [merged]
        return [merged, self.negate_item_delta(self.merge_item_deltas(list(held)))]  # merges keep cells over 0

    def _join_item_deltas_extra(self, deltas: list[Any], joined: Any) -> None:
        """Cells laid end to end (different parts hold different cells); ids may repeat across the parts."""
        held = [d for d in deltas if "cells" in d.extra_arrays]
        if not held:
            return
        ids: list[str] = []
        cells, counts = [], []
        for delta in held:
            cells.append(delta.extra_arrays["cells"].astype(np.int64) + len(ids))
            counts.append(delta.extra_arrays["cell_counts"])
            ids.extend(delta.extra["cell_items"])
        joined.extra["cell_items"] = ids
        joined.extra_arrays["cells"] = np.concatenate(cells, axis=1)
        joined.extra_arrays["cell_counts"] = np.concatenate(counts)

    def _negate_item_delta_extra(self, delta: Any) -> None:
        if "cell_counts" in delta.extra_arrays:
            delta.extra_arrays["cell_counts"] = -delta.extra_arrays["cell_counts"]

    @staticmethod
    def _put_cell_ids(delta: Any, ids_of: Any, rows: np.ndarray, cols: np.ndarray, counts: np.ndarray) -> None:
        """Cells ``(rows, cols, counts)`` into ``delta``, rows named by ``ids_of(numbers)``."""
        if not len(rows):
            return
        used, inverse = np.unique(np.concatenate([rows, cols]), return_inverse=True)
        delta.extra["cell_items"] = ids_of(used)
        delta.extra_arrays["cells"] = inverse.reshape(2, -1).astype(np.int32)
        delta.extra_arrays["cell_counts"] = np.asarray(counts, dtype=np.float32)

    def _apply_item_delta_extra(self, delta: Any, rows: np.ndarray) -> None:
        if delta.extra.get("absolute"):
            self._cooc.clear()
            self._neighbours.clear()
        if "cells" not in delta.extra_arrays:
            return
        local = self._rows_for_items(delta.extra["cell_items"])
        cells = delta.extra_arrays["cells"]
        self._cooc.add_cells(local[cells[0]], local[cells[1]], delta.extra_arrays["cell_counts"])

    def _after_item_change(self, rows: np.ndarray) -> None:
        # only the delta's items have new counts: a pass over the whole catalogue per delta cost every worker
        # O(items) for each other worker's commit (a second per delta at a million items)
        self._set_counts(np.unique(rows[rows >= 0]))

    # -- inspection -------------------------------------------------------------------

    def similarity(self, a: Any, b: Any) -> float:
        """Similarity ``C[a, b] / (n_a n_b) ** alpha`` of two item ids (0 if either is unknown)."""
        ia, ib = self.item_index.get(str(a)), self.item_index.get(str(b))
        if ia < 0 or ib < 0:
            return 0.0
        count = self._cooc.block(np.array([ia]), np.array([ib]))[0, 0]
        return float(count * self._inv[ia] * self._inv[ib])

    def cooccurrence(self) -> sp.csr_array:
        """A copy of the co-occurrence counts ``C`` (items x items, indexed like ``item_index``)."""
        return self._cooc.csr()

    def cooccurrence_row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``row`` of ``C`` without copying ``C``: the columns with a count (ascending) and their counts.

        >>> from models import Interactions
        >>> model = ItemKNN()
        >>> model.learn(Interactions.from_columns(["ann", "ann", "bob", "bob"], ["tea", "cake", "tea", "jam"]))
        >>> cols, counts = model.cooccurrence_row(model.item_index.get("tea"))
        >>> [model.item_index.ids[c] for c in cols.tolist()], counts.tolist()
        (['cake', 'jam'], [1.0, 1.0])
        """
        return self._cooc.row(row)

    def item_counts(self) -> np.ndarray:
        """Count ``n_j`` of counted events of every item."""
        return self._counts[: self.n_items].copy()

    def history(self, user: Any) -> list[str]:
        """Ids of the user's window, newest first (empty for unknown users)."""
        idx = self.user_index.get(str(user))
        if idx < 0:
            return []
        return self.item_index.ids_of(self._hist[idx, : self._hist_len[idx]])

    # -- persistence ------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        lens = self._hist_len[: self.n_users]
        hist = self._hist[: self.n_users]
        cooc = self._cooc.csr()
        return {
            "cooc_data": cooc.data,
            "cooc_indices": cooc.indices,
            "cooc_indptr": cooc.indptr,
            "counts": self._counts[: self.n_items],
            "hist_sizes": lens,
            "hist_items": hist[np.arange(self.window) < lens[:, None]],
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        n = self.n_items
        matrix = sp.csr_array(
            (arrays["cooc_data"].astype(np.float32), arrays["cooc_indices"], arrays["cooc_indptr"]), shape=(n, n)
        )
        self._cooc = cooccurrence_store(matrix=matrix, dense_max_items=self.dense_max_items)
        self._neighbours = {}
        self._counts = self._grown(arrays["counts"].astype(np.int64), n)
        self._inv = np.zeros(len(self._counts), dtype=np.float32)
        self._set_counts(np.arange(n))
        lens = arrays["hist_sizes"].astype(np.int32)
        hist = np.full((len(lens), self.window), -1, dtype=np.int32)
        hist[np.arange(self.window) < lens[:, None]] = arrays["hist_items"]
        self._hist = self._grown(hist, self.n_users, fill=-1)
        self._hist_len = self._grown(lens, self.n_users)

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {},
            {"window": 3, "history_for_scoring": 2, "alpha": 0.0},
            {"dense_max_items": 1},
            {"dense_max_items": 1, "max_neighbours": 3},
        ]
