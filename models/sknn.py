"""Session-aware nearest neighbours (V-SKNN / STAN family), updated event by event."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, OnlineRecommender
from models.sharing import ItemDelta, item_parts

__all__ = ["SessionKNN"]

#: An index entry packs (user row, position) into one int64, the user in the high bits, so
#: that sorting entries groups them by user and orders each user's entries by position.
_POS_BITS = 32
_POS_MASK = (1 << _POS_BITS) - 1
#: Users of a recommend call whose neighbourhoods _score keeps for _reasons (the per-event path has one).
_KEEP_FOR_REASONS = 8
#: What :meth:`SessionKNN._neighbourhood` returns.
_Found = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _top_ranked(sim: np.ndarray, active: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` largest ``sim`` (``k < len(sim)``), ties to the largest ``active``."""
    part = np.argpartition(-sim, k - 1)[:k]
    t = sim[part].min()
    tied = np.flatnonzero(sim == t)
    if len(tied) > np.count_nonzero(sim[part] == t):  # a tie at the k-th place: the most recent win
        above = np.flatnonzero(sim > t)
        tied = tied[np.argsort(-active[tied], kind="stable")[: k - len(above)]]
        part = np.concatenate([above, tied])
    return np.sort(part)


class SessionKNN(OnlineRecommender):
    """Session-based k-nearest-neighbours over the users' recent streams, with STAN's weights.

    Every user's stream is a *session*: their last ``window`` distinct items in
    arrival order (a repeat moves the item to the newest position; clicking
    the item just clicked again changes nothing). An inverted index keeps, for
    every item, up to ``index_size`` (user, position) entries of windows that
    hold it: the users who most recently took it into their window (an entry
    leaves when the item leaves the user's window). A user ``u`` is scored in
    three steps, after Garg et al.'s STAN (SIGIR 2019) and Ludewig & Jannach's
    V-SKNN as implemented in session-rec (``algorithms/knn/stan.py``,
    ``vsknn.py``, ``vstan.py``):

    1. **Current session**: ``u``'s newest ``session_length`` items
       ``s_1..s_n`` (newest last), weighted by position,
       ``w(s_i) = exp((i - n) / (lambda_spw * n))``: STAN's
       ``session_pos_weight``, with its decay scaled by the session's length,
       so that one default fits click sessions of a few items and rating
       histories that fill ``session_length`` (on the development logs the click
       sessions wanted a decay of 1 to 2 positions, the rating histories 5).
    2. **Neighbours**: the other users found in the index entries of those
       items; of them the ``sample_size`` whose newest event is most recent
       (session-rec's ``sampling='recent'``). Each scores the position-weighted cosine
       ``sim(u, v) = sum of w(s) over shared items / (||w|| * sqrt(|v|))``
       (session-rec's ``cosine`` with ``pos_map``; ``|v|`` is the number of
       items in ``v``'s window) and the ``k`` most similar are kept, ties to
       the most recently active.
    3. **Candidates**: around *every* shared item ``s`` of a kept neighbour
       ``v``, at position ``p_s`` of ``v``'s window, the item at position ``p``
       gets ``sim(u, v) * w(s) * exp(-|p - p_s| / lambda_inh)``: STAN's
       ``item_pos_weight``, with ``w(s)`` in the role of VSTAN's ``ipw``;
       positions up to ``span`` away on either side are visited (the weight
       beyond is small). STAN anchors a neighbour at its one newest shared
       item instead; anchoring at each shared item scored better on both
       development logs (``docs/tuning/sknn.md``).

    The state grows event by event: one event writes its item into the user's
    window and one index entry. Scoring a user gathers at most
    ``session_length * index_size`` index entries and, per entry of a kept
    neighbour, ``2 * span + 1`` window positions, with NumPy; the per-event
    path (learn one event, recommend one user) stays well under a
    millisecond. Memory is an ``int32`` ring per user row (the power of two
    at or above ``window + 2 * span`` slots) and ``index_size`` ``int64``
    per item row (bound the rows with
    :meth:`~models.base.OnlineRecommender.set_capacity`). Batches are learned
    event by event in arrival order, so a batch gives the state its events
    give one by one. Event weights, ratings and timestamps are not used: a
    session is bounded by its ``window`` of items, not by a time gap, so no
    time scale has to fit both a click log and a rating log.

    Forgetting a user (or evicting them under a user cap) erases their window
    and every index entry that points to them, so they are no one's neighbour
    any more. Unlike aggregate models (item-kNN, factor models) this changes
    the lists of the users they were a neighbour of: to what those lists
    would be had the forgotten user's events never been learned, as long as
    no index ring overflowed meanwhile (an overflowed ring lost older entries
    that a stream without the user would still hold).

    Sharing across workers (users partitioned by id): a user's seen items
    are their owner's alone (:meth:`~models.base.OnlineRecommender.export_users`
    moves them, with the user's window, to a new owner); the sessions are
    neighbours' state that every worker needs, so each worker keeps a
    replica of *every* user's window and of the inverted index over them,
    bounded by the same ``window``, ``index_size`` and capacity caps. An
    item delta carries the ``(user, item, position)`` appends its workers'
    users made since the last delta (a few bytes per event) and the users
    forgotten or evicted by their owner; every other worker replays them,
    in order, into its replica (an append a replica holds already is
    skipped, so a delta applied twice or a session restored from the
    changelog first is harmless). Handing users off
    (:meth:`drop_users`) keeps their sessions in the replica. With item
    state owned by item (:meth:`~models.base.OnlineRecommender.split_item_delta`),
    a user's appends go to the part of the user, so that a merge keeps them in
    order; a worker's own appends need no taking back (it skips them). Split learning
    is exact (what one model gives) as long as no index ring overflows and no
    neighbour sample is cut, as the replicas then hold the same entries; past
    those caps, which entries a ring keeps and which neighbours count as the
    most recent depend on the order in which a worker saw the others'
    events, and the lists are close but not identical (``sharing_is_exact``
    is ``False``).

    Users never seen, or whose session shares no item with anyone, score 0
    for every item (the stream app serves them popularity). Recommendations
    come with reasons: the session item around which the recommended item
    gained the most weight ("because you interacted with X").

    Parameters
    ----------
    k
        Neighbours whose items are scored.
    sample_size
        Most recently active candidate neighbours whose similarity is computed.
    session_length
        Newest items of the user that form the current session (at most
        ``window`` are used).
    window
        Distinct recent items kept per user: what a neighbour offers, and the
        bound of the current session.
    index_size
        Entries kept per item in the inverted index.
    lambda_spw
        Decay of the weight of older items of the current session, as a
        fraction of its length: the oldest of ``n`` items weighs about
        ``exp(-1 / lambda_spw)`` of the newest.
    lambda_inh
        Decay (in positions) of a neighbour's items away from a shared item.
    span
        Positions visited on each side of a neighbour's shared item.
    dense_max_items
        Largest catalogue scored by one dense row per user; a larger one is
        scored from the items the neighbours offer only (the same lists,
        without a pass over the catalogue).
    seed
        Unused (the model is deterministic); kept for a uniform signature.

    Examples
    --------
    >>> model = SessionKNN()
    >>> model.learn(Interactions.from_columns(
    ...     ["ann", "ann", "ann", "bob", "bob", "cat", "cat"],
    ...     ["tea", "cake", "jam", "tea", "cake", "tea", "ham"]))
    >>> recs = model.recommend(["bob"], k=3)
    >>> recs.items, recs.reasons
    ([['jam', 'ham']], [['cake', 'tea']])
    >>> model.forget_user("ann")   # ann leaves the index: no one else had jam
    True
    >>> model.recommend(["bob"], k=1).items
    [['ham']]
    """

    name: ClassVar[str] = "sknn"
    personalized: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = True
    #: Forgetting a user changes the lists of the users it was a neighbour of (see the class notes).
    forget_changes_other_users: ClassVar[bool] = True
    shares_state: ClassVar[bool] = True
    #: Exact only while no index ring overflows and no neighbour sample is cut (see the class notes).
    sharing_is_exact: ClassVar[bool] = False
    #: Sessions are cut by user, not item: a replica replays a user's appends in order (see the class notes).
    merges_item_deltas: ClassVar[bool] = True

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 500,
        session_length: int = 10,
        window: int = 100,
        index_size: int = 100,
        lambda_spw: float = 0.5,
        lambda_inh: float = 10.0,
        span: int = 10,
        dense_max_items: int = 4096,
        seed: int = 0,
    ) -> None:
        for label, value in (
            ("k", k),
            ("sample_size", sample_size),
            ("session_length", session_length),
            ("window", window),
            ("index_size", index_size),
            ("span", span),
        ):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        for label, value in (("lambda_spw", lambda_spw), ("lambda_inh", lambda_inh)):
            if not value > 0:
                raise ValueError(f"{label} must be > 0, got {value!r}")
        self.k = k
        self.sample_size = sample_size
        self.session_length = session_length
        self.window = window
        self.index_size = index_size
        self.lambda_spw = lambda_spw
        self.lambda_inh = lambda_inh
        self.span = span
        self.dense_max_items = dense_max_items
        # session position weights for every session length n (row n, first n columns)
        n = np.arange(1, session_length + 1)[:, None]
        self._spw = np.tril(np.exp((np.arange(1, session_length + 1)[None, :] - n) / (lambda_spw * n)))
        reach = min(span, window - 1)
        # ring slots per user: a power of two with room for the window and ``reach`` empty slots
        # on either side, so that positions next to the window read an empty slot (no bounds test)
        self._ring = 1 << int(window + 2 * reach - 1).bit_length()
        self._offsets = np.arange(-reach, reach + 1)
        self._offset_weight = np.exp(-np.abs(self._offsets) / lambda_inh)
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        # per user: ring of item rows by position (slot = position & (ring - 1)), -1 when empty;
        # only the newest ``window`` positions hold items
        self._seq = np.full((0, self._ring), -1, dtype=np.int32)
        self._n_pos = np.zeros(0, dtype=np.int64)  # positions used so far (the next position)
        self._n_live = np.zeros(0, dtype=np.int32)  # items in the window
        # per item: ring of entries (user << 32 | position), -1 when empty, and its head
        self._inv = np.full((0, self.index_size), -1, dtype=np.int64)
        self._inv_head = np.zeros(0, dtype=np.int64)
        # per user: the clock at their newest event (-1: none), which ranks neighbours by recency;
        # the clock counts the events learned here and the sessions' appends replayed from others
        self._recency = np.zeros(0, dtype=np.int64)
        self._clock = 0
        self._recent: dict[int, _Found] = {}  # the last _score's neighbourhoods, for _reasons
        # when sharing: what learning here changed in the sessions since the last delta, in order:
        # (user, item, position) appends and (user, "", -1) removals; None until sharing starts
        self._log: list[tuple[str, str, int]] | None = None

    def _grow(self, n_users: int, n_items: int) -> None:
        self._seq = self._grown(self._seq, n_users, fill=-1)
        self._n_pos = self._grown(self._n_pos, n_users)
        self._n_live = self._grown(self._n_live, n_users)
        self._inv = self._grown(self._inv, n_items, fill=-1)
        self._inv_head = self._grown(self._inv_head, n_items)
        self._recency = self._grown(self._recency, n_users, fill=-1)

    # -- learning ---------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        log, recency = self._log, self._recency
        for j, (user, item) in enumerate(zip(u.tolist(), i.tolist(), strict=True)):
            recency[user] = self._clock
            self._clock += 1
            pos = self._learn_one(user, item)
            if log is not None and pos >= 0:
                log.append((str(batch.users[j]), str(batch.items[j]), pos))

    def _learn_one(self, user: int, item: int) -> int:
        """Write ``item`` at the user's next position; return it (``-1``: a re-click, nothing changed)."""
        mask = self._ring - 1
        n = int(self._n_pos[user])
        row = self._seq[user]
        if n and row[(n - 1) & mask] == item:  # the item just clicked again: nothing new
            return -1
        ring = self._inv[item]
        code = (user << _POS_BITS) | n
        at = -1
        old = np.flatnonzero(row == item)
        if len(old):  # a repeat: the item moves to the newest position, its entry with it
            row[old[0]] = -1
            self._n_live[user] -= 1
            mine = np.flatnonzero((ring >> _POS_BITS) == user)
            at = int(mine[0]) if len(mine) else -1
        if n >= self.window:
            leaving = (n - self.window) & mask
            dropped = int(row[leaving])
            if dropped >= 0:  # the oldest item leaves the window, and the index
                row[leaving] = -1
                self._n_live[user] -= 1
                entries = self._inv[dropped]
                entries[(entries >> _POS_BITS) == user] = -1
        row[n & mask] = item
        self._n_live[user] += 1
        self._n_pos[user] = n + 1
        if at < 0:  # a new entry overwrites the oldest one
            at = int(self._inv_head[item])
            self._inv_head[item] = (at + 1) % self.index_size
        ring[at] = code
        return n

    # -- forgetting -------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Empty the users' windows and drop every index entry that points to them.

        When sharing, the removal of a user owned here (forgotten or evicted) goes to
        the log, so that every other worker drops the user's session too.
        """
        if self._log is not None:
            seen = self._seen
            for user, key in zip(rows.tolist(), self.user_index.ids_of(rows), strict=True):
                if key is not None and user < len(seen) and seen[user]:
                    self._log.append((key, "", -1))
        self._recency[rows] = -1
        for user in rows.tolist():
            items = self._seq[user]
            items = items[items >= 0]
            if len(items):
                block = self._inv[items]
                block[(block >> _POS_BITS) == user] = -1
                self._inv[items] = block
        self._seq[rows] = -1
        self._n_pos[rows] = 0
        self._n_live[rows] = 0

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Empty the items' index rings and drop the items from every window."""
        self._inv[rows] = -1
        self._inv_head[rows] = 0
        dead = np.zeros(self.n_items, dtype=bool)
        dead[rows] = True
        seq = self._seq[: self.n_users]
        hit = (seq >= 0) & dead[np.maximum(seq, 0)]
        users = np.flatnonzero(hit.any(axis=1))
        if len(users):
            block, drop = seq[users], hit[users]
            self._n_live[users] -= drop.sum(axis=1).astype(np.int32)
            block[drop] = -1
            self._seq[users] = block

    # -- scoring ----------------------------------------------------------------------

    def _window(self, user: int) -> np.ndarray:
        """Item rows of the user's window, oldest first."""
        n = int(self._n_pos[user])
        items = self._seq[user, np.arange(max(0, n - self.window), n) & (self._ring - 1)]
        return items[items >= 0]

    def _neighbourhood(self, user: int) -> _Found | None:
        """What the user's neighbours did around the items they share with the user's session.

        Returns ``(items, weights, shared, session)``: per shared entry of a
        kept neighbour (rows) and offset from its position (columns), the item
        there (``-1`` outside the neighbour's window) and its weight; per
        entry, the index in ``session`` (the user's session items, oldest
        first) of the item it shares. ``None`` without neighbours.
        """
        if user < 0 or self._n_live[user] == 0:
            return None
        session = self._window(user)[-self.session_length :]
        weight = self._spw[len(session) - 1, : len(session)]
        codes = self._inv[session].ravel()
        owner = codes >> _POS_BITS
        keep = np.flatnonzero((codes >= 0) & (owner != user))
        if not len(keep):
            return None
        keep = keep[np.argsort(codes[keep])]  # grouped by neighbour
        codes = codes[keep]
        entry_weight = weight[keep // self.index_size]
        owner = codes >> _POS_BITS
        first = np.empty(len(codes), dtype=bool)
        first[0] = True
        np.not_equal(owner[1:], owner[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        neighbours = owner[starts]
        active = self._recency[neighbours]
        chosen = np.arange(len(neighbours))
        if len(chosen) > self.sample_size:  # the most recently active (no ties: one event per arrival number)
            chosen = np.sort(np.argpartition(active, len(chosen) - self.sample_size)[-self.sample_size :])
        overlap = np.add.reduceat(entry_weight, starts)[chosen]
        sim = overlap / (np.sqrt(np.dot(weight, weight)) * np.sqrt(self._n_live[neighbours[chosen]]))
        if len(chosen) > self.k:  # the most similar, ties to the most recently active
            best = _top_ranked(sim, active[chosen], self.k)
            chosen, sim = chosen[best], sim[best]
        sim_of = np.zeros(len(starts))
        sim_of[chosen] = sim
        entry_sim = sim_of[np.cumsum(first) - 1]
        kept = np.flatnonzero(entry_sim)
        users = owner[kept]
        # positions outside the neighbour's window read empty slots (see _ring)
        slots = ((codes[kept] & _POS_MASK)[:, None] + self._offsets[None, :]) & (self._ring - 1)
        items = self._seq.ravel()[slots + (users * self._ring)[:, None]]
        weights = (entry_sim[kept] * entry_weight[kept])[:, None] * self._offset_weight[None, :]
        return items, weights, keep[kept] // self.index_size, session

    def _score(self, u: np.ndarray) -> np.ndarray:
        n = self.n_items
        scores = np.zeros((len(u), n), dtype=np.float32)
        self._recent = {}
        for r, user in enumerate(u.tolist()):  # one user at a time: the same arithmetic alone or in a batch
            found = self._neighbourhood(user)
            if found is None:
                continue
            if r < _KEEP_FOR_REASONS:
                self._recent[user] = found
            items, weights, _, _ = found
            # shifted by one: empty positions (-1) fall in bin 0, which is dropped
            scores[r] = np.bincount((items + 1).ravel(), weights=weights.ravel(), minlength=n + 1)[1 : n + 1]
        return scores

    def _score_sparse(self, u: np.ndarray, want: list[int]) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """The items the user's neighbours offer and their scores: :meth:`_score` without a pass over the items."""
        if self.n_items <= self.dense_max_items:  # a small catalogue: one dense row is as cheap
            return None
        self._recent = {}
        out: list[tuple[np.ndarray, np.ndarray]] = []
        for r, user in enumerate(u.tolist()):
            found = self._neighbourhood(user)
            if found is None:
                out.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)))
                continue
            if r < _KEEP_FOR_REASONS:
                self._recent[user] = found
            items, weights, _, _ = found
            flat = items.ravel()
            valid = flat >= 0
            # the same sums as _score's bincount: each item's terms added in the same order
            cols, inverse = np.unique(flat[valid], return_inverse=True)
            sums = np.bincount(inverse, weights=weights.ravel()[valid], minlength=len(cols)).astype(np.float32)
            out.append((cols.astype(np.int64), sums))
        return out

    def _reasons(self, u: np.ndarray, idx: np.ndarray, lengths: list[int]) -> list[list[str | None]] | None:
        reasons: list[list[str | None]] = [[None] * n for n in lengths]
        ids = self.item_index.ids
        for r, user in enumerate(u.tolist()):
            if lengths[r] == 0:
                continue
            # recommend() calls _reasons right after _score: reuse its neighbourhoods
            found = self._recent.get(user) or self._neighbourhood(user)
            if found is None:
                continue
            items, weights, shared, session = found
            recs = idx[r, : lengths[r]]
            order = np.argsort(recs)
            flat = items.ravel()
            at = np.minimum(np.searchsorted(recs[order], flat), len(recs) - 1)
            hit = np.flatnonzero(recs[order][at] == flat)
            # weight each session item gave each recommended item
            key = shared[hit // items.shape[1]] * len(recs) + order[at[hit]]
            given = np.bincount(key, weights.ravel()[hit], minlength=len(session) * len(recs))
            given = given.reshape(len(session), len(recs))
            best = given.argmax(axis=0)
            positive = given[best, np.arange(len(recs))] > 0
            reasons[r] = [
                ids[h] if ok else None for h, ok in zip(session[best].tolist(), positive.tolist(), strict=True)
            ]
        return reasons

    # -- sharing across workers: a replicated store of every user's session ----------

    def forget_user(self, user: Any) -> bool:
        """Forget ``user`` as :meth:`OnlineRecommender.forget_user` does.

        When sharing, the next :meth:`take_item_delta` carries the removal, so
        that every other worker drops the user's session from its replica
        (whether or not the user was learned here).
        """
        key = str(user)
        owned = self.has_history(key)
        known = super().forget_user(key)
        if known and not owned and self._log is not None:  # an owned user's removal is logged by _forget_rows
            self._log.append((key, "", -1))
        return known

    def drop_users(self, users: Any) -> int:
        """Hand ``users`` off to another worker: their seen items go, their sessions stay.

        Every worker keeps every user's session (the neighbours' side of the
        model), so the sessions of users handed off stay in this worker's
        replica, updated by their new owner's deltas; what only the owner
        keeps (the seen items) is erased. Other users' lists do not change.
        """
        rows = self.user_index.lookup([str(u) for u in users])
        rows = np.unique(rows[rows >= 0])
        self._grow_base_state()
        for r in rows.tolist():
            self._seen[r] = set()
            self._seen_arrays.pop(r, None)
        return len(rows)

    def _begin_sharing_extra(self) -> None:
        self._log = []

    def _take_item_delta_extra(self, delta: ItemDelta) -> None:
        if self._log is None:  # the first delta without begin_sharing: every session so far
            self._log = []
            users, items, pos = self._live_slots(np.flatnonzero(self.user_index.live_mask()))
            order = np.lexsort((pos, users))
            appends = list(
                zip(
                    self.user_index.ids_of(users[order]),
                    self.item_index.ids_of(items[order]),
                    pos[order].tolist(),
                    strict=True,
                )
            )
            removed: list[str] = []
        else:
            log, self._log = self._log, []
            last_removal = {user: n for n, (user, _, p) in enumerate(log) if p < 0}
            removed = list(last_removal)
            appends = [e for n, e in enumerate(log) if e[2] >= 0 and last_removal.get(e[0], -1) < n]
        _put_log(delta, removed, appends)

    # -- item state owned by item: session appends go to the part of their user, in order

    def _split_item_delta_extra(
        self, rest: ItemDelta, parts: int, out: dict[int, ItemDelta], frame: dict[str, Any]
    ) -> None:
        """Send each user's appends and removal to the part of the user (a replica replays a user's appends in order)."""
        removed, appends = _log_of(rest)
        _drop_log(rest)
        super()._split_item_delta_extra(rest, parts, out, frame)
        if not removed and not appends:
            return
        users = sorted({*removed, *(u for u, _, _ in appends)})
        part_of = dict(zip(users, item_parts(users, parts).tolist(), strict=True))
        for p in sorted(set(part_of.values())):
            piece = out.setdefault(p, ItemDelta(rest.model, [], {}, {}, dict(frame)))
            _put_log(piece, [u for u in removed if part_of[u] == p], [e for e in appends if part_of[e[0]] == p])

    def _merge_item_deltas_extra(self, deltas: list[ItemDelta], merged: ItemDelta) -> None:
        """Lay the deltas' appends end to end; a later removal of a user drops the user's earlier appends."""
        removed: dict[str, None] = {}
        appends: list[tuple[str, str, int]] = []
        for delta in deltas:
            gone, added = _log_of(delta)
            if gone:
                dropped = set(gone)
                appends = [e for e in appends if e[0] not in dropped]
                removed.update(dict.fromkeys(gone))
            appends += added
        _put_log(merged, list(removed), appends)

    def _negate_item_delta_extra(self, delta: ItemDelta) -> None:
        """Nothing to take back: a replica skips the appends it holds, and keeps the users it owns."""
        _drop_log(delta)

    def _apply_item_delta_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        if delta.extra.get("absolute"):
            self._import_store(delta, rows)
            return
        for key in delta.extra.get("sknn_removed", []):
            row = self.user_index.get(key)
            if row >= 0 and not self._seen[row]:  # not owned here (so not logged again): drop the replica
                self._drop_user_rows(np.array([row], dtype=np.int64))
        if "sknn_appends" not in delta.extra_arrays:
            return
        users, items = delta.extra["sknn_users"], delta.extra["sknn_items"]
        self._make_room(users, items)
        user_rows = self.user_index.add_many(users)
        item_rows = self._rows_for_items(items)
        self._user_active[user_rows] = self.n_learned
        table = delta.extra_arrays["sknn_appends"]
        for u, i, p in zip(user_rows[table[0]].tolist(), item_rows[table[1]].tolist(), table[2].tolist(), strict=True):
            self._replay(u, i, p)

    def _replay(self, user: int, item: int, pos: int) -> None:
        """Write ``item`` at position ``pos`` of the user's session (another worker's append).

        Appends the replica holds already (a delta applied twice, or a session
        restored from the changelog before its owner's last delta arrived) are
        skipped; a gap (appends this replica missed) empties the positions skipped.
        """
        n = int(self._n_pos[user])
        if pos < n:
            return
        if pos > n:
            mask, row = self._ring - 1, self._seq[user]
            for q in range(max(0, n - self.window), min(n, pos - self.window)):
                dropped = int(row[q & mask])
                if dropped >= 0:
                    row[q & mask] = -1
                    self._n_live[user] -= 1
                    entries = self._inv[dropped]
                    entries[(entries >> _POS_BITS) == user] = -1
            self._n_pos[user] = pos
        self._recency[user] = self._clock
        self._clock += 1
        self._learn_one(user, item)

    def _live_slots(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(user, item, position)`` of every item in the windows of user rows ``users``."""
        users = users[self._n_pos[users] > 0] if len(users) else users.astype(np.int64)
        seq = self._seq[users]
        r, slot = np.nonzero(seq >= 0)
        last = self._n_pos[users][r] - 1
        pos = last - ((last - slot) & (self._ring - 1))
        return users[r], seq[r, slot].astype(np.int64), pos

    def _export_items_extra(self, delta: ItemDelta, rows: np.ndarray) -> None:
        live = np.flatnonzero(self.user_index.live_mask() & (self._n_pos[: self.n_users] > 0))
        user_ref = np.full(self.n_users, -1, dtype=np.int64)
        user_ref[live] = np.arange(len(live))
        item_ref = np.full(self.n_items, -1, dtype=np.int64)
        item_ref[rows] = np.arange(len(rows))
        users, items, pos = self._live_slots(live)
        codes = self._inv[rows]
        owner = np.where(codes >= 0, user_ref[np.maximum(codes, 0) >> _POS_BITS], -1)
        delta.extra["sknn_store_users"] = self.user_index.ids_of(live)
        delta.extra["sknn_clock"] = self._clock
        delta.extra_arrays["sknn_store_next"] = self._n_pos[live].copy()
        delta.extra_arrays["sknn_store_recency"] = self._recency[live].copy()
        delta.extra_arrays["sknn_store_slots"] = np.stack([user_ref[users], item_ref[items], pos])
        delta.extra_arrays["sknn_store_index"] = np.where(owner >= 0, (owner << _POS_BITS) | (codes & _POS_MASK), -1)
        delta.extra_arrays["sknn_store_head"] = self._inv_head[rows].copy()

    def _import_store(self, delta: ItemDelta, rows: np.ndarray) -> None:
        """Replace the replicated store with a snapshot (:meth:`export_items`) of another worker's."""
        users: list[str] = delta.extra.get("sknn_store_users", [])
        mine = {}  # sessions of users owned here that the snapshot lacks: kept
        inside = set(users)
        for row, key in enumerate(self.user_index.ids):
            if key is not None and key not in inside and self._seen[row] and self._n_pos[row] > 0:
                mine[key] = self._session_of(row)
        self._seq[:] = -1
        self._n_pos[:] = 0
        self._n_live[:] = 0
        self._inv[:] = -1
        self._inv_head[:] = 0
        self._recency[:] = -1
        if users:
            self._make_room(users, ())
            user_rows = self.user_index.add_many(users)
            self._grow_base_state()
            self._grow(self.n_users, self.n_items)
            self._user_active[user_rows] = self.n_learned
            arrays = delta.extra_arrays
            self._n_pos[user_rows] = arrays["sknn_store_next"]
            self._recency[user_rows] = arrays["sknn_store_recency"]
            u, i, p = arrays["sknn_store_slots"]
            self._seq[user_rows[u], p & (self._ring - 1)] = rows[i]
            np.add.at(self._n_live, user_rows[u], 1)
            codes = arrays["sknn_store_index"]
            local = user_rows[np.maximum(codes, 0) >> _POS_BITS]
            self._inv[rows] = np.where(codes >= 0, (local << _POS_BITS) | (codes & _POS_MASK), -1)
            self._inv_head[rows] = arrays["sknn_store_head"]
        self._clock = max(self._clock, int(delta.extra.get("sknn_clock", 0)))
        for key, (window, n) in mine.items():
            row = self.user_index.get(key)
            if row >= 0:  # not evicted to make room for the snapshot
                self._set_session(row, window, n)

    def _session_of(self, row: int) -> tuple[np.ndarray, int]:
        """Item rows at the positions of the user's window (``-1``: empty) and the next position."""
        n = int(self._n_pos[row])
        return self._seq[row, np.arange(max(0, n - self.window), n) & (self._ring - 1)].copy(), n

    def _set_session(self, row: int, window: np.ndarray, n: int) -> None:
        """Make the user's session ``window`` (item rows of positions ``n - len(window)`` to ``n - 1``)."""
        current, _ = self._session_of(row)
        for item in current[current >= 0].tolist():
            entries = self._inv[item]
            entries[(entries >> _POS_BITS) == row] = -1
        self._seq[row] = -1
        start = n - len(window)
        for pos, item in enumerate(window.tolist(), start):
            if item < 0:
                continue
            self._seq[row, pos & (self._ring - 1)] = item
            at = int(self._inv_head[item])
            self._inv_head[item] = (at + 1) % self.index_size
            self._inv[item, at] = (row << _POS_BITS) | pos
        self._n_pos[row] = n
        self._n_live[row] = int(np.count_nonzero(window >= 0))
        self._recency[row] = self._clock
        self._clock += 1

    def _export_user_extra(self, rows: np.ndarray) -> dict[str, Any]:
        windows, nexts = [], []
        for row in rows.tolist():
            window, n = self._session_of(row)
            windows.append([self.item_index.ids[i] if i >= 0 else None for i in window.tolist()])
            nexts.append(n)
        return {"sknn_window": windows, "sknn_next": nexts}

    def _import_user_extra(self, rows: np.ndarray, extra: dict[str, Any]) -> None:
        windows, nexts = extra.get("sknn_window"), extra.get("sknn_next")
        if windows is None or nexts is None:
            return
        for row, ids, n in zip(rows.tolist(), windows, nexts, strict=True):
            known = [i for i in ids if i is not None]
            local = iter(self._rows_for_items(known).tolist() if known else [])
            window = np.array([next(local) if i is not None else -1 for i in ids], dtype=np.int64)
            current, mine = self._session_of(row)
            if mine == int(n) and np.array_equal(current, window):
                continue  # the replica holds this session already: nothing moves
            self._set_session(row, window, int(n))

    # -- inspection -------------------------------------------------------------------

    def session(self, user: Any) -> list[str]:
        """Ids of the user's window, oldest first (empty for unknown users)."""
        row = self.user_index.get(str(user))
        if row < 0:
            return []
        return [str(i) for i in self.item_index.ids_of(self._window(row))]

    # -- persistence ------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        seq = self._seq[: self.n_users]
        inv = self._inv[: self.n_items]
        return {  # only the filled slots: windows and rings are mostly empty
            "seq_slots": np.flatnonzero(seq.ravel() >= 0),
            "seq_items": seq[seq >= 0],
            "n_pos": self._n_pos[: self.n_users],
            "inv_slots": np.flatnonzero(inv.ravel() >= 0),
            "inv_codes": inv[inv >= 0],
            "inv_head": self._inv_head[: self.n_items],
            "recency": self._recency[: self.n_users],
            "clock": np.array([self._clock], dtype=np.int64),
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        seq = np.full((self.n_users, self._ring), -1, dtype=np.int32)
        seq.ravel()[arrays["seq_slots"]] = arrays["seq_items"]
        self._seq = self._grown(seq, self.n_users, fill=-1)
        self._n_pos = self._grown(arrays["n_pos"].astype(np.int64), self.n_users)
        self._n_live = (self._seq >= 0).sum(axis=1).astype(np.int32)
        inv = np.full((self.n_items, self.index_size), -1, dtype=np.int64)
        inv.ravel()[arrays["inv_slots"]] = arrays["inv_codes"]
        self._inv = self._grown(inv, self.n_items, fill=-1)
        self._inv_head = self._grown(arrays["inv_head"].astype(np.int64), self.n_items)
        # files written before the clock: arrival numbers rank neighbours the same way
        recency = arrays.get("recency", self._user_active[: self.n_users])
        self._recency = self._grown(np.array(recency, dtype=np.int64), self.n_users, fill=-1)
        self._clock = int(arrays["clock"][0]) if "clock" in arrays else int(self.n_learned)

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        # the second: windows, rings and neighbour lists that overflow all the time
        return [
            {},
            {"k": 5, "sample_size": 8, "session_length": 3, "window": 5, "index_size": 4, "span": 2},
            {"dense_max_items": 0},
        ]


def _log_of(delta: ItemDelta) -> tuple[list[str], list[tuple[str, str, int]]]:
    """The users a session delta removes, and its ``(user, item, position)`` appends in order."""
    removed = list(delta.extra.get("sknn_removed", []))
    if "sknn_appends" not in delta.extra_arrays:
        return removed, []
    users, items = delta.extra["sknn_users"], delta.extra["sknn_items"]
    u, i, p = np.asarray(delta.extra_arrays["sknn_appends"]).tolist()
    return removed, [(users[a], items[b], c) for a, b, c in zip(u, i, p, strict=True)]


def _drop_log(delta: ItemDelta) -> None:
    """Take the session removals and appends out of ``delta``."""
    for key in ("sknn_removed", "sknn_users", "sknn_items"):
        delta.extra.pop(key, None)
    delta.extra_arrays.pop("sknn_appends", None)


def _put_log(delta: ItemDelta, removed: list[str], appends: list[tuple[str, str, int]]) -> None:
    """Write removals and appends into ``delta`` (users and items listed once, appends as a table of references)."""
    if removed:
        delta.extra["sknn_removed"] = removed
    if appends:
        user_refs: dict[str, int] = {}
        item_refs: dict[str, int] = {}
        table = np.array(
            [
                (user_refs.setdefault(u, len(user_refs)), item_refs.setdefault(i, len(item_refs)), p)
                for u, i, p in appends
            ],
            dtype=np.int64,
        ).T
        delta.extra["sknn_users"] = list(user_refs)
        delta.extra["sknn_items"] = list(item_refs)
        delta.extra_arrays["sknn_appends"] = table
