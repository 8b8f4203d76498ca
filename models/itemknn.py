"""Incremental item-to-item collaborative filtering on a sparse co-occurrence matrix."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from models.base import Interactions, OnlineRecommender

__all__ = ["ItemKNN"]


def csr_keys(matrix: sp.csr_array) -> np.ndarray:
    """``row * n_cols + col`` of every stored entry: sorted, since the matrix is canonical CSR."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows * np.int64(matrix.shape[1]) + matrix.indices


def _csr_lookup(matrix: sp.csr_array, rows: np.ndarray, cols: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Entries ``matrix[rows[n], cols[n]]`` of a canonical CSR matrix (0 where absent).

    One ``searchsorted`` over the sorted flat keys (:func:`csr_keys`, which a
    caller may cache between lookups), vectorised over all lookups.
    """
    out = np.zeros(len(rows), dtype=matrix.dtype)
    if matrix.nnz == 0 or len(rows) == 0:
        return out
    keys = csr_keys(matrix) if keys is None else keys
    wanted = rows.astype(np.int64) * np.int64(matrix.shape[1]) + cols
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    found = keys[pos] == wanted
    out[found] = matrix.data[pos[found]]
    return out


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

    ``C`` is a ``scipy.sparse`` CSR matrix; a batch's co-occurrence pairs are
    collected into one COO buffer and added to it once per learned batch, and a
    batch of users is scored with one sparse product. Events are processed in
    arrival order for the windows, so a batch gives the same counts as its
    events learned one by one. Event weights and ratings are not used.

    Users never seen, or with an empty window, score 0 for every item (the
    stream app falls back to popularity for them). Recommendations come with
    reasons: for each recommended item, the history item that contributed most
    to its score ("because you interacted with X").

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

    def __init__(
        self,
        window: int = 50,
        history_for_scoring: int = 20,
        decay: float = 0.9,
        alpha: float = 0.5,
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
        self.window = window
        self.history_for_scoring = history_for_scoring
        self.decay = decay
        self.alpha = alpha
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self._cooc = sp.csr_array((0, 0), dtype=np.float32)
        self._keys: np.ndarray = np.zeros(0, dtype=np.int64)  # csr_keys(self._keys_of), cached
        self._keys_of: sp.csr_array | None = None
        self._counts = np.zeros(0, dtype=np.int64)
        # per-user window of item indices, newest first, padded with -1
        self._hist = np.full((0, self.window), -1, dtype=np.int32)
        self._hist_len = np.zeros(0, dtype=np.int32)

    def _grow(self, n_users: int, n_items: int) -> None:
        self._counts = self._grown(self._counts, n_items)
        self._hist = self._grown(self._hist, n_users, fill=-1)
        self._hist_len = self._grown(self._hist_len, n_users)
        if self._cooc.shape[0] < n_items:
            self._cooc.resize((n_items, n_items))

    # -- learning ---------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
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
            self._counts[: self.n_items] += np.bincount(counted, minlength=self.n_items)
        if partners:
            self._add_pairs(
                np.asarray(partners, dtype=np.int32),
                np.repeat(np.asarray(counted, dtype=np.int32), n_partners),
            )

    def _store_windows(self, users: np.ndarray, windows: list[list[int]]) -> None:
        lens = np.fromiter((len(w) for w in windows), dtype=np.int32, count=len(windows))
        block = np.full((len(users), self.window), -1, dtype=np.int32)
        block[np.arange(self.window) < lens[:, None]] = [j for w in windows for j in w]
        self._hist[users] = block
        self._hist_len[users] = lens

    def _add_pairs(self, h: np.ndarray, j: np.ndarray) -> None:
        """Add one to ``C[h, j]`` and ``C[j, h]`` for every pair (the pending COO buffer)."""
        n = self.n_items
        h64, j64 = h.astype(np.int64), j.astype(np.int64)
        # sorted linear keys give the canonical CSR (sorted, summed duplicates) directly
        keys = np.concatenate([h64 * n + j64, j64 * n + h64])
        keys.sort()
        first = np.empty(len(keys), dtype=bool)
        first[0] = True
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        unique = keys[starts]
        counts = np.diff(np.append(starts, len(keys))).astype(np.float32)
        index_dtype = np.int32 if self._cooc.nnz + len(unique) < 2**31 and n < 2**31 else np.int64
        indptr = np.searchsorted(unique, np.arange(n + 1, dtype=np.int64) * n).astype(index_dtype)
        delta = sp.csr_array((counts, (unique % n).astype(index_dtype), indptr), shape=(n, n))
        delta.has_canonical_format = True
        self._cooc = self._cooc + delta  # canonical + canonical: a linear merge, canonical result

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
        cooc = self._cooc
        if cooc.nnz:
            entry_rows = np.repeat(np.arange(n), np.diff(cooc.indptr))
            keep = ~(dead[entry_rows] | dead[cooc.indices])
            if not keep.all():
                indptr = np.concatenate([[0], np.cumsum(np.bincount(entry_rows[keep], minlength=n))])
                cooc = sp.csr_array(
                    (cooc.data[keep], cooc.indices[keep], indptr.astype(cooc.indptr.dtype)), shape=(n, n)
                )
                cooc.has_canonical_format = True  # a subset of a canonical matrix, in order
                self._cooc = cooc
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

    def _inv_norm(self) -> np.ndarray:
        counts = self._counts[: self.n_items].astype(np.float64)
        out = np.zeros(self.n_items, dtype=np.float64)
        np.power(counts, -self.alpha, out=out, where=counts > 0)
        return out.astype(np.float32)

    def _history_weights(self, u: np.ndarray, inv_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """History items ``(len(u), L)`` (-1 padded), their weights and the rows that have any."""
        depth = min(self.history_for_scoring, self.window)
        known = u >= 0
        hist = np.full((len(u), depth), -1, dtype=np.int32)
        hist[known] = self._hist[u[known], :depth]
        valid = hist >= 0
        recency = (self.decay ** np.arange(depth)).astype(np.float32)
        weights = np.where(valid, recency * inv_norm[np.maximum(hist, 0)], np.float32(0.0))
        return hist, weights, valid.any(axis=1)

    def _score(self, u: np.ndarray) -> np.ndarray:
        n = self.n_items
        inv_norm = self._inv_norm()
        hist, weights, has_history = self._history_weights(u, inv_norm)
        scores = np.zeros((len(u), n), dtype=np.float32)
        if not has_history.any():
            return scores
        hist, weights = hist[has_history], weights[has_history]
        valid = hist >= 0
        indptr = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
        users_by_items = sp.csr_array((weights[valid], hist[valid], indptr), shape=(len(hist), n))
        product = users_by_items @ self._cooc
        scores[has_history] = product.toarray() * inv_norm
        return scores

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        reasons: list[list[str | None]] = [[None] * n for n in lengths]
        if idx.size == 0 or self.n_items == 0:
            return reasons
        hist, weights, has_history = self._history_weights(u, self._inv_norm())
        rows = np.flatnonzero(has_history)
        if len(rows) == 0:
            return reasons
        hist, weights, recs = hist[rows], weights[rows], idx[rows]
        # contribution of history item h to recommended item j is weight_h * C[h, j]
        h_grid = np.broadcast_to(np.maximum(hist, 0)[:, :, None], (*hist.shape, recs.shape[1]))
        j_grid = np.broadcast_to(recs[:, None, :], h_grid.shape)
        if self._keys_of is not self._cooc:  # the matrix changed since the keys were made
            self._keys, self._keys_of = csr_keys(self._cooc), self._cooc
        cooc = _csr_lookup(self._cooc, h_grid.ravel(), j_grid.ravel(), self._keys).reshape(h_grid.shape)
        contribution = cooc * weights[:, :, None]
        best = contribution.argmax(axis=1)
        best_item = np.take_along_axis(hist, best, axis=1)
        positive = np.take_along_axis(contribution, best[:, None, :], axis=1)[:, 0, :] > 0
        ids = self.item_index.ids
        for r, items, ok in zip(rows.tolist(), best_item.tolist(), positive.tolist(), strict=True):
            reasons[r] = [ids[h] if good else None for h, good in zip(items[: lengths[r]], ok, strict=False)]
        return reasons

    # -- inspection -------------------------------------------------------------------

    def similarity(self, a: Any, b: Any) -> float:
        """Similarity ``C[a, b] / (n_a n_b) ** alpha`` of two item ids (0 if either is unknown)."""
        ia, ib = self.item_index.get(str(a)), self.item_index.get(str(b))
        if ia < 0 or ib < 0:
            return 0.0
        inv_norm = self._inv_norm()
        count = _csr_lookup(self._cooc, np.array([ia]), np.array([ib]))[0]
        return float(count * inv_norm[ia] * inv_norm[ib])

    def cooccurrence(self) -> sp.csr_array:
        """A copy of the co-occurrence counts ``C`` (items x items, indexed like ``item_index``)."""
        return self._cooc.copy()

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
        return {
            "cooc_data": self._cooc.data,
            "cooc_indices": self._cooc.indices,
            "cooc_indptr": self._cooc.indptr,
            "counts": self._counts[: self.n_items],
            "hist_sizes": lens,
            "hist_items": hist[np.arange(self.window) < lens[:, None]],
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        n = self.n_items
        self._cooc = sp.csr_array(
            (arrays["cooc_data"].astype(np.float32), arrays["cooc_indices"], arrays["cooc_indptr"]), shape=(n, n)
        )
        self._counts = self._grown(arrays["counts"].astype(np.int64), n)
        lens = arrays["hist_sizes"].astype(np.int32)
        hist = np.full((len(lens), self.window), -1, dtype=np.int32)
        hist[np.arange(self.window) < lens[:, None]] = arrays["hist_items"]
        self._hist = self._grown(hist, self.n_users, fill=-1)
        self._hist_len = self._grown(lens, self.n_users)

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"window": 3, "history_for_scoring": 2, "alpha": 0.0}]
