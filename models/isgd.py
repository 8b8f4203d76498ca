"""Incremental matrix factorisation for positive-only feedback (ISGD) with sampled negatives."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, OnlineRecommender
from models.negatives import NegativeSampler
from models.rowsgd import adagrad_norm_step, sum_rows
from models.scoring import dot_scores, rows_or_mean

__all__ = ["ISGD", "RowInitializer", "scatter_add_capped"]


class ISGD(OnlineRecommender):
    """Matrix factorisation learned online from positive-only events, with negative feedback.

    Vinagre, Jorge & Gama (2014), *Fast incremental matrix factorization for
    recommendation with positive-only feedback* (UMAP): every observed pair
    ``(u, i)`` is a target of 1 for the score ``p_u . q_i``, one SGD step on
    the squared error per event. Alone that ranks below popularity: with
    nothing to contrast, every score is pulled towards 1 (per event on the
    first 60% of MovieLens 100K, HR@10 0.058 against popularity's 0.078; on
    the YOOCHOOSE click sample 0.034 against 0.058). So, as in Vinagre, Jorge
    & Gama (2015), *Collaborative filtering with recency-based negative
    feedback* (SAC), each event also teaches ``n_negatives`` sampled items
    (:class:`models.negatives.NegativeSampler`) the target 0, together weighing
    as much as the positive; and the score has an item bias,
    ``score(u, i) = b_i + p_u . q_i``, which carries popularity. For an event
    of weight ``w`` the loss is

    .. code-block:: text

        w/2 (1 - score(u, i))^2 + w/(2m) sum_j score(u, j)^2
          + reg/2 (|p_u|^2 + |q_i|^2 + b_i^2) + reg/(2m) sum_j (|q_j|^2 + b_j^2)

    Step sizes: the latent rows take Adagrad steps per row
    (:func:`models.rowsgd.adagrad_norm_step`): a new user moves at once (the
    first step has length ``lr`` per coordinate) and a row's steps shrink as
    its gradients add up; the item biases take plain SGD steps of ``bias_lr``
    so that they keep following a popularity that drifts. These two changes
    gave most of the gain over the paper's fixed step; a slow bias step
    (``bias_lr`` 0.02) and a strong ``reg`` (0.2) gave the rest: per event on
    the first 60% of MovieLens 100K and of the YOOCHOOSE sample, HR@10 0.127
    and 0.110 against popularity's 0.078 and 0.058 (with ``bias_lr = lr``
    and ``reg`` 0.01: 0.082 and 0.051; see ``docs/tuning/mf.md``).

    By default a micro-batch is one vectorised step: the errors of all its
    events come from the pre-batch values, gradients are summed per row, and
    each touched row takes one step (Adagrad bounds a latent row's step; an
    item bias's summed step is divided by ``max(1, bias_lr * its events'
    weight)`` so that a popular item in a large batch does not overshoot).
    With ``sequential=True`` the events are learned one at a time, so the
    result does not depend on how the stream is cut into batches. A batch of
    one event is the same step either way.

    New users and items get vectors drawn from ``N(0, init_std)`` on first
    sight; the vector of the ``k``-th user (item) depends only on ``seed`` and
    ``k`` (see :class:`RowInitializer`). Users never seen score with the mean
    user vector, a popularity-like ranking (the stream app falls back to
    popularity for them anyway).

    Parameters
    ----------
    n_factors
        Dimension of the latent vectors.
    lr
        Adagrad learning rate of the latent vectors.
    reg
        L2 regularisation ``lambda``.
    bias_lr
        SGD learning rate of the item biases (``None``: ``lr``).
    init_std
        Standard deviation of the initial latent vectors.
    n_negatives
        Items sampled as negatives per event (0: the paper's positive-only ISGD, with Adagrad steps).
    neg_popularity
        Share of the negatives drawn in proportion to recent popularity (the rest uniformly).
    sequential
        Learn each batch event by event instead of one vectorised step.
    seed
        Seed of the initial latent vectors and of the negatives.

    Examples
    --------
    >>> model = ISGD(seed=1)
    >>> stream = Interactions.from_columns(
    ...     ["ann", "bob", "bob", "cid", "cid", "dan"] * 50, ["tea", "tea", "cake", "jam", "ham", "ham"] * 50)
    >>> for start in range(0, len(stream), 30):
    ...     model.learn(stream.select(np.arange(start, start + 30)))
    >>> model.recommend(["ann", "dan"], k=1).items
    [['cake'], ['jam']]
    >>> bool(model.predict(["ann"], ["cake"])[0] > model.predict(["ann"], ["ham"])[0])
    True
    """

    name: ClassVar[str] = "isgd"
    personalized: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = False
    learns_negatives: ClassVar[bool] = True

    def __init__(
        self,
        n_factors: int = 32,
        lr: float = 0.2,
        reg: float = 0.2,
        bias_lr: float | None = 0.02,
        init_std: float = 0.1,
        n_negatives: int = 8,
        neg_popularity: float = 0.0,
        sequential: bool = False,
        seed: int = 0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if bias_lr is not None and bias_lr < 0:
            raise ValueError(f"bias_lr must be >= 0 or None, got {bias_lr}")
        if reg < 0:
            raise ValueError(f"reg must be >= 0, got {reg}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        self.n_factors = n_factors
        self.lr = lr
        self.reg = reg
        self.bias_lr = bias_lr
        self.init_std = init_std
        self.n_negatives = n_negatives
        self.neg_popularity = neg_popularity
        self.sequential = sequential
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self._p_init = RowInitializer(self.seed, 0, self.n_factors, self.init_std)
        self._q_init = RowInitializer(self.seed, 1, self.n_factors, self.init_std)
        self._negatives = NegativeSampler(self.neg_popularity, seed=self.seed)
        self._p = np.zeros((0, self.n_factors), dtype=np.float32)
        self._q = np.zeros((0, self.n_factors), dtype=np.float32)
        self._b = np.zeros(0, dtype=np.float32)  # item biases
        self._p_acc = np.zeros(0, dtype=np.float32)  # Adagrad sums, one per row
        self._q_acc = np.zeros(0, dtype=np.float32)
        self._p_ready = 0  # rows initialised so far (capacity beyond is spare)
        self._q_ready = 0
        self._neg_pool = 0  # negatives come from item rows below the newest item row of an event so far

    def _grow(self, n_users: int, n_items: int) -> None:
        if n_users > self._p_ready:
            self._p = self._grown(self._p, n_users)
            self._p_acc = self._grown(self._p_acc, n_users)
            self._p[self._p_ready : n_users] = self._p_init.rows(self._p_ready, n_users)
            self._p_ready = n_users
        if n_items > self._q_ready:
            self._q = self._grown(self._q, n_items)
            self._q_acc = self._grown(self._q_acc, n_items)
            self._b = self._grown(self._b, n_items)
            self._q[self._q_ready : n_items] = self._q_init.rows(self._q_ready, n_items)
            self._q_ready = n_items

    # -- learning ---------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        w = batch.weights.astype(np.float32)
        if self.sequential and len(u) > 1:
            for j in range(len(u)):
                self._step(u[j : j + 1], i[j : j + 1], w[j : j + 1])
                self._negatives.record(i[j : j + 1])
        else:
            self._step(u, i, w)
            self._negatives.record(i)

    def _step(self, u: np.ndarray, i: np.ndarray, w: np.ndarray) -> None:
        """One step on the events ``(u, i)`` of weights ``w``, every error from the values before it."""
        p, q, b = self._p, self._q, self._b
        reg, m = np.float32(self.reg), self.n_negatives
        bias_lr = np.float32(self.lr if self.bias_lr is None else self.bias_lr)
        pu, qi = p[u], q[i]
        e_i = w * (np.float32(1.0) - b[i] - np.einsum("ij,ij->i", pu, qi))  # weighted errors of the positives
        grad_pu = reg * pu - e_i[:, None] * qi
        grad_q = [reg * qi - e_i[:, None] * pu]
        grad_b = [reg * b[i] - e_i]
        weight = [w]
        items = [i]
        if m:
            # negatives: item rows up to the newest row of an event so far (learning one by one sees no later item)
            pool = self._neg_pool = max(self._neg_pool, int(i.max()) + 1)
            live = np.flatnonzero(self.item_index.live_mask()[:pool]) if self.item_index.n_free else None
            neg = self._negatives.draw((len(u), m), pool, live)
            qj, wm = q[neg], w[:, None] / np.float32(m)
            e_j = -wm * (b[neg] + np.matmul(qj, pu[:, :, None])[:, :, 0])  # target 0, weight w/m each
            grad_pu -= np.matmul(e_j[:, None, :], qj)[:, 0, :]
            grad_q.append((reg / m * qj - e_j[:, :, None] * pu[:, None, :]).reshape(-1, self.n_factors))
            grad_b.append((reg / m * b[neg] - e_j).reshape(-1))
            weight.append(np.repeat(wm, m, axis=1).reshape(-1))
            items.append(neg.reshape(-1))
        users, g_p = sum_rows(u, grad_pu)
        adagrad_norm_step(p, self._p_acc, users, g_p, self.lr)
        every = np.concatenate(items) if m else i
        rows, g_q = sum_rows(every, np.concatenate(grad_q) if m else grad_q[0])
        adagrad_norm_step(q, self._q_acc, rows, g_q, self.lr)
        _, g_b = sum_rows(every, np.concatenate(grad_b) if m else grad_b[0])
        if len(every) > 1:  # a bias seen many times in one batch: cap its summed step
            _, load = sum_rows(every, np.concatenate(weight) if m else weight[0])
            g_b /= np.maximum(np.float32(1.0), bias_lr * load)
        b[rows] -= bias_lr * g_b

    def _learn_negatives(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        """Explicit negatives: the target 0 for ``score(u, i)``, weighted like a positive event of the same weight."""
        p, q, b = self._p, self._q, self._b
        reg = np.float32(self.reg)
        bias_lr = np.float32(self.lr if self.bias_lr is None else self.bias_lr)
        w = batch.weights.astype(np.float32)
        pu, qi = p[u], q[i]
        e = -w * (b[i] + np.einsum("ij,ij->i", pu, qi))  # weighted errors towards 0
        users, g_p = sum_rows(u, reg * pu - e[:, None] * qi)
        adagrad_norm_step(p, self._p_acc, users, g_p, self.lr)
        rows, g_q = sum_rows(i, reg * qi - e[:, None] * pu)
        adagrad_norm_step(q, self._q_acc, rows, g_q, self.lr)
        _, g_b = sum_rows(i, reg * b[i] - e)
        b[rows] -= bias_lr * g_b

    # -- forgetting -------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Reset the users' vectors to a new row's initial draw (item vectors are aggregates and stay)."""
        self._p[rows] = self._p_init.rows_at(rows)
        self._p_acc[rows] = 0.0

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        self._q[rows] = self._q_init.rows_at(rows)
        self._q_acc[rows] = 0.0
        self._b[rows] = 0.0
        self._negatives.forget_items(rows)

    # -- scoring ----------------------------------------------------------------------

    def _user_vectors(self, u: np.ndarray) -> np.ndarray:
        """User vectors; unknown users (``-1``) get the mean vector of the live users."""
        live = self.user_index.live_mask() if self.user_index.n_free else None
        return rows_or_mean(self._p[: self.n_users], u, live)

    def _score(self, u: np.ndarray) -> np.ndarray:
        n = self.n_items
        return dot_scores(self._user_vectors(u), self._q[:n], self._b[:n])

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Scores ``b_i + p_u . q_i`` of paired user and item ids (unknown users: the mean vector; unknown items: 0)."""
        u = self.user_index.lookup([str(x) for x in users])
        i = self.item_index.lookup([str(x) for x in items])
        if len(u) != len(i):
            raise ValueError(f"users and items differ in length: {len(u)} != {len(i)}")
        known = i >= 0
        q = np.zeros((len(i), self.n_factors), dtype=np.float32)
        q[known] = self._q[i[known]]
        bias = np.zeros(len(i), dtype=np.float32)
        bias[known] = self._b[i[known]]
        return bias + np.einsum("ij,ij->i", self._user_vectors(u), q)

    # -- persistence ------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        nu, ni = self.n_users, self.n_items
        return {
            "p": self._p[:nu],
            "q": self._q[:ni],
            "item_bias": self._b[:ni],
            "p_adagrad": self._p_acc[:nu],
            "q_adagrad": self._q_acc[:ni],
            "negatives_recent": self._negatives.state()[0]["recent"],
        }

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._p = self._grown(arrays["p"].astype(np.float32), self.n_users)
        self._q = self._grown(arrays["q"].astype(np.float32), self.n_items)
        self._b = self._grown(arrays["item_bias"].astype(np.float32), self.n_items)
        self._p_acc = self._grown(arrays["p_adagrad"].astype(np.float32), self.n_users)
        self._q_acc = self._grown(arrays["q_adagrad"].astype(np.float32), self.n_items)
        self._p_ready, self._q_ready = self.n_users, self.n_items
        self._recent_negatives = arrays["negatives_recent"]

    def _extra_meta(self) -> dict[str, Any]:
        return {"negatives": self._negatives.state()[1], "negative_pool": self._neg_pool}

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._negatives.set_state({"recent": self._recent_negatives}, extra.get("negatives", {}))
        self._neg_pool = int(extra.get("negative_pool", 0))

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{}, {"sequential": True, "n_factors": 4, "n_negatives": 2}]

    # -- factors ----------------------------------------------------------------------

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factors ``(P, Q)`` whose inner products are the model's scores.

        ``float32``, ``n_users`` and ``n_items`` rows (free rows included),
        ``n_factors + 1`` columns with the item bias folded in: ``P[u] = [p_u,
        1]`` and ``Q[i] = [q_i, b_i]``, so ``P[u] @ Q[i]`` is the score
        :meth:`recommend` ranks item ``i`` by for user ``u`` (for an ANN index,
        see :class:`models.ann.ANNRecommender`). New arrays (a copy).

        Examples
        --------
        >>> model = ISGD(n_factors=3)
        >>> model.learn(Interactions.from_columns(["ann", "bob"], ["tea", "jam"]))
        >>> p, q = model.factors()
        >>> p.shape, q.shape, bool(np.allclose(p @ q.T, model._score(np.arange(2))))
        ((2, 4), (2, 4), True)
        """
        nu, ni = self.n_users, self.n_items
        p = np.ones((nu, self.n_factors + 1), dtype=np.float32)
        p[:, :-1] = self._p[:nu]
        q = np.empty((ni, self.n_factors + 1), dtype=np.float32)
        q[:, :-1] = self._q[:ni]
        q[:, -1] = self._b[:ni]
        return p, q


def scatter_add_capped(target: np.ndarray, rows: np.ndarray, steps: np.ndarray, curvature: np.ndarray) -> None:
    """Add the per-event ``steps`` to ``target[rows]``, summed per row and shrunk where they would overshoot.

    ``curvature[n]`` is ``lr * |partner|^2`` of event ``n``: one SGD step
    moves the event's error by about that fraction, so the summed step of a
    row whose summed curvature exceeds 1 is divided by it (a row seen a few
    times per batch is left untouched).

    Examples
    --------
    >>> target = np.zeros((2, 1), dtype=np.float32)
    >>> scatter_add_capped(target, np.array([0, 0, 1]), np.ones((3, 1), np.float32), np.array([0.75, 0.75, 0.75]))
    >>> target.ravel().tolist()   # row 0: (1 + 1) / 1.5
    [1.3333333730697632, 1.0]
    """
    unique, slot = np.unique(rows, return_inverse=True)
    total = np.zeros((len(unique), target.shape[1]), dtype=target.dtype)
    np.add.at(total, slot, steps)
    load = np.bincount(slot, weights=curvature, minlength=len(unique))
    total /= np.maximum(load, 1.0).astype(target.dtype)[:, None]
    target[unique] += total


class RowInitializer:
    """Initial rows of a growing latent matrix: row ``k`` depends only on ``(seed, stream, k)``.

    Rows come in blocks of ``block`` rows, each drawn from
    ``np.random.default_rng([seed, stream, block_number])``, so a model draws
    the same vector for its ``k``-th user whether it learned the stream in one
    batch or event by event, and a loaded model needs no generator state.

    Examples
    --------
    >>> init = RowInitializer(seed=0, stream=0, n_cols=2, std=0.1)
    >>> np.array_equal(init.rows(0, 5)[3:], init.rows(3, 5))
    True
    """

    def __init__(self, seed: int, stream: int, n_cols: int, std: float, block: int = 1024) -> None:
        self.seed, self.stream, self.n_cols, self.std, self.block = seed, stream, n_cols, std, block
        self._cached: tuple[int, np.ndarray] | None = None

    def _block(self, number: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != number:
            rng = np.random.default_rng([self.seed, self.stream, number])
            self._cached = (number, rng.normal(0.0, self.std, size=(self.block, self.n_cols)).astype(np.float32))
        return self._cached[1]

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Initial rows ``start`` to ``stop - 1`` (``float32``)."""
        out = np.empty((max(stop - start, 0), self.n_cols), dtype=np.float32)
        for number in range(start // self.block, (stop - 1) // self.block + 1 if stop > start else 0):
            lo, hi = max(start, number * self.block), min(stop, (number + 1) * self.block)
            out[lo - start : hi - start] = self._block(number)[lo - number * self.block : hi - number * self.block]
        return out

    def rows_at(self, positions: np.ndarray) -> np.ndarray:
        """Initial rows at ``positions`` (any order), as :meth:`rows` gives them.

        Examples
        --------
        >>> init = RowInitializer(seed=0, stream=0, n_cols=2, std=0.1, block=4)
        >>> np.array_equal(init.rows_at(np.array([9, 2])), init.rows(0, 10)[[9, 2]])
        True
        """
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.n_cols), dtype=np.float32)
        blocks = positions // self.block
        for number in np.unique(blocks).tolist():
            pick = blocks == number
            out[pick] = self._block(number)[positions[pick] - number * self.block]
        return out
