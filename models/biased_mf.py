"""Biased matrix factorisation of explicit ratings, learned online by mini-batch SGD."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from models.base import Interactions, OnlineRecommender
from models.isgd import RowInitializer, scatter_add_capped
from models.scoring import dot_scores

__all__ = ["BiasedMF"]


class BiasedMF(OnlineRecommender):
    """Rating prediction ``r = mu + b_u + b_i + p_u . q_i`` updated by SGD per micro-batch.

    ``mu`` is the running mean of every rating learned. For a batch, the
    errors ``e = r - r_hat`` are computed from the pre-batch parameters (with
    ``mu`` already including the batch); then, as in :class:`models.isgd.ISGD`,
    the user steps ``lr * (e * [q_i, 1] - [reg * p_u, bias_reg * b_u])`` are
    summed per user (``np.add.at``) and applied, and the item steps, from the
    updated user vectors and the same errors, are summed per item and applied.
    A row's summed step is divided by ``max(1, sum(lr * (|partner|^2 + 1)))``
    so that users with many ratings in one batch do not overshoot. This is
    mini-batch SGD: a batch does not equal its events learned one by one.

    Only events with a rating are learned (``uses_ratings``). :meth:`predict`
    returns rating predictions clipped to the range of ratings seen, for RMSE
    and MAE; :meth:`recommend` ranks by the unclipped prediction. Unknown
    users get ``mu + b_i`` (the item baseline); unknown items ``mu + b_u``.

    Parameters
    ----------
    n_factors
        Dimension of the latent vectors.
    lr
        Learning rate of the latent vectors and biases.
    reg
        L2 regularisation of the latent vectors.
    bias_reg
        L2 regularisation of the biases.
    init_std
        Standard deviation of the initial latent vectors (biases start at 0).
    seed
        Seed of the initial latent vectors (row ``k`` depends only on ``seed``
        and ``k``, see :class:`models.isgd.RowInitializer`).

    Examples
    --------
    >>> model = BiasedMF(seed=0)
    >>> stream = Interactions.from_columns(
    ...     ["ann", "bob", "ann", "bob", "cid"] * 40, ["tea", "tea", "jam", "jam", "jam"] * 40,
    ...     ratings=[5, 4, 2, 1, 2] * 40)
    >>> for start in range(0, len(stream), 20):
    ...     model.learn(stream.select(np.arange(start, start + 20)))
    >>> [round(float(r)) for r in model.predict(["ann", "bob", "cid", "nobody"], ["tea", "jam", "tea", "tea"])]
    [5, 1, 4, 4]
    >>> model.recommend(["cid"], k=1).items
    [['tea']]
    """

    name: ClassVar[str] = "biased_mf"
    personalized: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = False
    uses_ratings: ClassVar[bool] = True

    def __init__(
        self,
        n_factors: int = 10,
        lr: float = 0.05,
        reg: float = 0.05,
        bias_reg: float = 0.01,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if reg < 0 or bias_reg < 0:
            raise ValueError(f"reg and bias_reg must be >= 0, got {reg} and {bias_reg}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        self.n_factors = n_factors
        self.lr = lr
        self.reg = reg
        self.bias_reg = bias_reg
        self.init_std = init_std
        super().__init__(seed=seed)

    # -- state ------------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self._p_init = RowInitializer(self.seed, 0, self.n_factors, self.init_std)
        self._q_init = RowInitializer(self.seed, 1, self.n_factors, self.init_std)
        # latent vector and bias side by side: row = [p_u..., b_u] (and [q_i..., b_i])
        self._pb = np.zeros((0, self.n_factors + 1), dtype=np.float32)
        self._qb = np.zeros((0, self.n_factors + 1), dtype=np.float32)
        self._p_ready = 0
        self._q_ready = 0
        self._rating_sum = 0.0
        self._rating_count = 0
        self._rating_min = float("inf")
        self._rating_max = float("-inf")

    def _grow(self, n_users: int, n_items: int) -> None:
        self._pb = self._grown(self._pb, n_users)
        self._qb = self._grown(self._qb, n_items)
        if n_users > self._p_ready:
            self._pb[self._p_ready : n_users, :-1] = self._p_init.rows(self._p_ready, n_users)
            self._pb[self._p_ready : n_users, -1] = 0.0
            self._p_ready = n_users
        if n_items > self._q_ready:
            self._qb[self._q_ready : n_items, :-1] = self._q_init.rows(self._q_ready, n_items)
            self._qb[self._q_ready : n_items, -1] = 0.0
            self._q_ready = n_items

    @property
    def global_mean(self) -> float:
        """Running mean ``mu`` of the ratings learned (0 before any)."""
        return self._rating_sum / self._rating_count if self._rating_count else 0.0

    # -- learning ---------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        ratings = batch.ratings.astype(np.float32)
        self._rating_sum += float(ratings.sum(dtype=np.float64))
        self._rating_count += len(ratings)
        self._rating_min = min(self._rating_min, float(ratings.min()))
        self._rating_max = max(self._rating_max, float(ratings.max()))
        f = self.n_factors
        lr = np.float32(self.lr)
        decay = np.ones(f + 1, dtype=np.float32) * np.float32(self.reg)
        decay[f] = self.bias_reg
        pb, qb = self._pb[u], self._qb[i]
        err = ratings - self._predict_rows(pb, qb)
        # user rows [p_u, b_u] move along [q_i, 1]; item rows [q_i, b_i] along [p_u, 1]
        q_side = qb.copy()
        q_side[:, f] = 1.0
        scatter_add_capped(
            self._pb, u, lr * (err[:, None] * q_side - decay * pb), lr * np.einsum("ij,ij->i", q_side, q_side)
        )
        p_side = self._pb[u]
        p_side[:, f] = 1.0
        scatter_add_capped(
            self._qb, i, lr * (err[:, None] * p_side - decay * qb), lr * np.einsum("ij,ij->i", p_side, p_side)
        )

    def _predict_rows(self, pb: np.ndarray, qb: np.ndarray) -> np.ndarray:
        f = self.n_factors
        dot = np.einsum("ij,ij->i", pb[:, :f], qb[:, :f])
        return np.float32(self.global_mean) + pb[:, f] + qb[:, f] + dot

    # -- forgetting -------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Reset the users' vectors to a new row's initial draw and their biases to 0.

        The item rows and the rating mean and range are aggregates and stay.
        """
        self._pb[rows, :-1] = self._p_init.rows_at(rows)
        self._pb[rows, -1] = 0.0

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        self._qb[rows, :-1] = self._q_init.rows_at(rows)
        self._qb[rows, -1] = 0.0

    # -- prediction -------------------------------------------------------------------

    def predict(self, users: Any, items: Any) -> np.ndarray:
        """Predicted ratings of paired user and item ids, clipped to the range seen.

        Unknown users and items contribute no bias and no latent vector.

        Examples
        --------
        >>> BiasedMF().predict(["u"], ["i"]).tolist()   # nothing learned yet: mu = 0
        [0.0]
        """
        u = self.user_index.lookup([str(x) for x in users])
        i = self.item_index.lookup([str(x) for x in items])
        if len(u) != len(i):
            raise ValueError(f"users and items differ in length: {len(u)} != {len(i)}")
        out = self._predict_rows(_gather(self._pb, u), _gather(self._qb, i))
        if self._rating_count:
            np.clip(out, self._rating_min, self._rating_max, out=out)
        return out

    def _score(self, u: np.ndarray) -> np.ndarray:
        f = self.n_factors
        pb = _gather(self._pb, u)
        qb = self._qb[: self.n_items]
        # user bias and global mean are the same for every item of a row: added after the product, as before
        return dot_scores(pb[:, :f], qb[:, :f], qb[:, f]) + pb[:, f : f + 1] + np.float32(self.global_mean)

    # -- persistence ------------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        return {"user_rows": self._pb[: self.n_users], "item_rows": self._qb[: self.n_items]}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._pb = self._grown(arrays["user_rows"].astype(np.float32), self.n_users)
        self._qb = self._grown(arrays["item_rows"].astype(np.float32), self.n_items)
        self._p_ready, self._q_ready = self.n_users, self.n_items

    def _extra_meta(self) -> dict[str, Any]:
        return {
            "rating_sum": self._rating_sum,
            "rating_count": self._rating_count,
            "rating_min": self._rating_min if self._rating_count else None,
            "rating_max": self._rating_max if self._rating_count else None,
        }

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._rating_sum = float(extra.get("rating_sum", 0.0))
        self._rating_count = int(extra.get("rating_count", 0))
        lo, hi = extra.get("rating_min"), extra.get("rating_max")
        self._rating_min = float("inf") if lo is None else float(lo)
        self._rating_max = float("-inf") if hi is None else float(hi)

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{}]

    # -- factors ----------------------------------------------------------------------

    def factors(self) -> tuple[np.ndarray, np.ndarray]:
        """User and item factors ``(P, Q)`` whose inner products are the model's scores.

        ``float32``, ``n_users`` and ``n_items`` rows (free rows included),
        ``n_factors + 2`` columns with the biases folded in: ``P[u] = [p_u, 1,
        b_u + mu]`` and ``Q[i] = [q_i, b_i, 1]``, so ``P[u] @ Q[i]`` is the
        unclipped prediction :meth:`recommend` ranks by (for an ANN index, see
        :class:`models.ann.ANNRecommender`). New arrays (a copy).

        Examples
        --------
        >>> model = BiasedMF(n_factors=3)
        >>> model.learn(Interactions.from_columns(["ann", "bob"], ["tea", "jam"], ratings=[5, 1]))
        >>> p, q = model.factors()
        >>> p.shape, q.shape, bool(np.allclose(p @ q.T, model._score(np.arange(2))))
        ((2, 5), (2, 5), True)
        """
        f, nu, ni = self.n_factors, self.n_users, self.n_items
        p = np.empty((nu, f + 2), dtype=np.float32)
        p[:, :f] = self._pb[:nu, :f]
        p[:, f] = 1.0
        p[:, f + 1] = self._pb[:nu, f] + np.float32(self.global_mean)
        q = np.empty((ni, f + 2), dtype=np.float32)
        q[:, : f + 1] = self._qb[:ni]
        q[:, f + 1] = 1.0
        return p, q


def _gather(table: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Rows ``table[idx]``, zeros where ``idx`` is ``-1``."""
    out = np.zeros((len(idx), table.shape[1]), dtype=table.dtype)
    known = idx >= 0
    out[known] = table[idx[known]]
    return out
