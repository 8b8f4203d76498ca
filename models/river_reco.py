"""River's matrix factorisation recommenders behind the streamrec protocol.

:class:`RiverBiasedMF` and :class:`RiverFunkMF` wrap :class:`river.reco.BiasedMF`
and :class:`river.reco.FunkMF`. Learning is River's own ``learn_one``, one event
at a time, so the models learn exactly as River does. Scoring does not call
``predict_one`` item by item: the fitted weights are mirrored into NumPy arrays
aligned with the model's id indices, and a whole catalogue is scored with one
matrix product. Only the rows of users and items touched since the last scoring
call are copied from River's dicts into the mirror.

River keys its dicts by the dense user and item indices of this model (ints),
so saving is a matter of writing the dicts as arrays in index order.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
from river import optim, reco

from models.base import Interactions, OnlineRecommender

__all__ = ["RiverBiasedMF", "RiverFunkMF"]


class _RiverMF(OnlineRecommender):
    """Shared machinery of the River matrix factorisation wrappers.

    Subclasses build the River model in :meth:`_make_river` and say whether it
    has biases and a global mean (:attr:`_has_bias`).
    """

    uses_ratings: ClassVar[bool] = True
    batch_equals_sequential: ClassVar[bool] = True
    _has_bias: ClassVar[bool] = False

    n_factors: int
    init_std: float

    @abstractmethod
    def _make_river(self) -> reco.base.Ranker:
        """A fresh, untrained River model with this model's hyperparameters."""

    @abstractmethod
    def _optimizers(self) -> list[optim.base.Optimizer]:
        """River's optimizers, in a fixed order (their step counts are saved)."""

    @abstractmethod
    def _initializer(self) -> optim.initializers.Normal:
        """River's latent initialiser (its random state is saved)."""

    # -- state -----------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        self.river = self._make_river()
        k = self.n_factors
        # mirror of River's weights, row r = our user/item index r
        self._pu = np.zeros((0, k), dtype=np.float64)
        self._qi = np.zeros((0, k), dtype=np.float64)
        self._bu = np.zeros(0, dtype=np.float64)
        self._bi = np.zeros(0, dtype=np.float64)
        # whether River holds the row (users/items can be indexed without a rating)
        self._u_known = np.zeros(0, dtype=bool)
        self._i_known = np.zeros(0, dtype=bool)
        self._dirty_users: set[int] = set()
        self._dirty_items: set[int] = set()

    def _grow(self, n_users: int, n_items: int) -> None:
        self._pu = self._grown(self._pu, n_users)
        self._bu = self._grown(self._bu, n_users)
        self._qi = self._grown(self._qi, n_items)
        self._bi = self._grown(self._bi, n_items)
        self._u_known = self._grown(self._u_known, n_users, fill=False)
        self._i_known = self._grown(self._i_known, n_items, fill=False)

    # River's dicts, uniformly for both models
    def _user_latents(self) -> dict[int, np.ndarray]:
        return self.river.u_latents

    def _item_latents(self) -> dict[int, np.ndarray]:
        return self.river.i_latents

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        learn_one = self.river.learn_one
        for uu, ii, y in zip(u.tolist(), i.tolist(), batch.ratings.astype(np.float64).tolist(), strict=True):
            learn_one(uu, ii, y)
        self._dirty_users.update(u.tolist())
        self._dirty_items.update(i.tolist())

    def _sync(self) -> None:
        """Copy the rows River changed since the last call into the NumPy mirror."""
        for dirty, latents, biases, mat, vec, known in (
            (self._dirty_users, self._user_latents(), self._river_biases("u"), self._pu, self._bu, self._u_known),
            (self._dirty_items, self._item_latents(), self._river_biases("i"), self._qi, self._bi, self._i_known),
        ):
            rows = [r for r in dirty if r in latents]
            if rows:
                known[rows] = True
                mat[rows] = np.stack([latents[r] for r in rows])
                if biases is not None:
                    vec[rows] = [biases[r] for r in rows]
            dirty.clear()

    def _river_biases(self, side: str) -> dict[int, float] | None:
        if not self._has_bias:
            return None
        return self.river.u_biases if side == "u" else self.river.i_biases

    def _global_mean(self) -> float:
        return float(self.river.global_mean.get()) if self._has_bias else 0.0

    def _user_rows(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latent rows and biases of user indices ``u``.

        A user River has no row for (unknown, or only unrated events) is the
        average known user: mean latent vector, zero bias.
        """
        known = u >= 0
        known[known] = self._u_known[u[known]]
        pu = np.empty((len(u), self.n_factors), dtype=np.float64)
        bu = np.zeros(len(u), dtype=np.float64)
        pu[known] = self._pu[u[known]]
        bu[known] = self._bu[u[known]]
        if not known.all():
            rows = self._u_known[: self.n_users]
            pu[~known] = self._pu[: self.n_users][rows].mean(axis=0) if rows.any() else 0.0
        return pu, bu

    # -- forgetting ------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Drop the users from River's dicts and our mirror (item weights and the global mean stay)."""
        users = (self._user_latents(), self._river_biases("u"), self._pu, self._bu, self._u_known, self._dirty_users)
        _drop_rows(rows.tolist(), *users)

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        items = (self._item_latents(), self._river_biases("i"), self._qi, self._bi, self._i_known, self._dirty_items)
        _drop_rows(rows.tolist(), *items)

    # -- scoring ---------------------------------------------------------------------

    def _score(self, u: np.ndarray) -> np.ndarray:
        self._sync()
        pu, bu = self._user_rows(u)
        n = self.n_items
        scores = pu @ self._qi[:n].T
        scores += self._bi[:n]
        scores += (bu + self._global_mean())[:, None]
        return scores

    def predict(self, users: Iterable[Any], items: Iterable[Any]) -> np.ndarray:
        """Predicted ratings of the ``(users[n], items[n])`` pairs, vectorised.

        Known pairs get exactly River's ``predict_one``. An unknown user is the
        average known user (mean latent vector, zero bias); an unknown item has
        zero bias and a zero latent vector. Unlike River, predicting never
        creates random latent vectors, so it does not change the model.
        """
        u = self.user_index.lookup([str(x) for x in users])
        i = self.item_index.lookup([str(x) for x in items])
        if len(u) != len(i):
            raise ValueError(f"users and items differ in length: {len(u)} != {len(i)}")
        self._sync()
        pu, bu = self._user_rows(u)
        known = i >= 0
        qi = np.zeros((len(i), self.n_factors), dtype=np.float64)
        bi = np.zeros(len(i), dtype=np.float64)
        qi[known] = self._qi[i[known]]
        bi[known] = self._bi[i[known]]
        return self._global_mean() + bu + bi + np.einsum("nk,nk->n", pu, qi)

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        self._sync()
        rng_state = self._initializer()._rng.get_state()
        state = {
            "u_latents": self._pu[: self.n_users],
            "i_latents": self._qi[: self.n_items],
            "u_known": self._u_known[: self.n_users],
            "i_known": self._i_known[: self.n_items],
            "optimizer_steps": np.array([o.n_iterations for o in self._optimizers()], dtype=np.int64),
            "rng_keys": np.asarray(rng_state[1], dtype=np.uint32),
            "rng_scalars": np.array([rng_state[2], rng_state[3], rng_state[4]], dtype=np.float64),
        }
        if self._has_bias:
            state["u_biases"] = self._bu[: self.n_users]
            state["i_biases"] = self._bi[: self.n_items]
            state["global_mean"] = np.array([self.river.global_mean.n, self.river.global_mean.get()], dtype=np.float64)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self._init_river_dicts()
        nu, ni = self.n_users, self.n_items
        self._pu[:nu] = arrays["u_latents"]
        self._qi[:ni] = arrays["i_latents"]
        self._u_known[:nu] = arrays["u_known"]
        self._i_known[:ni] = arrays["i_known"]
        if self._has_bias:
            self._bu[:nu] = arrays["u_biases"]
            self._bi[:ni] = arrays["i_biases"]
            n, mean = arrays["global_mean"].tolist()
            self.river.global_mean.n = n
            self.river.global_mean._mean = mean
        for known, latents, biases, mat, vec in (
            (arrays["u_known"], self._user_latents(), self._river_biases("u"), self._pu, self._bu),
            (arrays["i_known"], self._item_latents(), self._river_biases("i"), self._qi, self._bi),
        ):
            for r in np.flatnonzero(known).tolist():
                latents[r] = mat[r].copy()
                if biases is not None:
                    biases[r] = float(vec[r])
        for opt, steps in zip(self._optimizers(), arrays["optimizer_steps"].tolist(), strict=True):
            opt.n_iterations = int(steps)
        pos, has_gauss, cached = arrays["rng_scalars"].tolist()
        self._initializer()._rng.set_state(
            ("MT19937", arrays["rng_keys"].astype(np.uint32), int(pos), int(has_gauss), float(cached))
        )
        self._dirty_users.clear()
        self._dirty_items.clear()

    def _init_river_dicts(self) -> None:
        """Empty River's weight dicts (kept as objects: they hold the initialisers)."""
        self._user_latents().clear()
        self._item_latents().clear()
        for side in ("u", "i"):
            biases = self._river_biases(side)
            if biases is not None:
                biases.clear()


def _drop_rows(
    rows: list[int],
    latents: dict[int, np.ndarray],
    biases: dict[int, float] | None,
    mat: np.ndarray,
    vec: np.ndarray,
    known: np.ndarray,
    dirty: set[int],
) -> None:
    """Remove ``rows`` from River's dicts (a reused row gets River's fresh draw) and zero their mirror."""
    for r in rows:
        latents.pop(r, None)
        if biases is not None:
            biases.pop(r, None)
    dirty.difference_update(rows)
    mat[rows] = 0.0
    vec[rows] = 0.0
    known[rows] = False


class RiverBiasedMF(_RiverMF):
    """River's biased matrix factorisation, learned per event, scored in bulk.

    ``rating = mean + b_u + b_i + <p_u, q_i>``, learned with SGD on the squared
    error of each rating (:class:`river.reco.BiasedMF`). Events without a
    rating are ignored. Recommendations rank items by predicted rating; an
    unknown user is scored as the average known user.

    Parameters
    ----------
    n_factors
        Number of latent factors.
    lr
        SGD learning rate of the latent factors (``river.optim.SGD``).
    bias_lr
        SGD learning rate of the biases.
    l2
        L2 penalty of the latent factors.
    l2_bias
        L2 penalty of the biases.
    init_std
        Standard deviation of the normal initialisation of latent factors.
    seed
        Seed of River's latent initialiser.

    Examples
    --------
    >>> model = RiverBiasedMF(n_factors=4, seed=1)
    >>> model.learn(Interactions.from_columns(
    ...     ["ann", "ann", "bob", "bob"], ["alien", "heat", "alien", "up"], ratings=[5, 1, 4, 2]))
    >>> model.predict(["ann", "bob", "new-user"], ["alien", "up", "alien"]).round(3).tolist()
    [2.944, 2.923, 3.059]
    >>> round(model.river.predict_one(0, 0), 3)  # River keys users and items by our indices
    2.944
    >>> model.recommend(["ann", "bob", "new-user"], k=3).items
    [['up'], ['heat'], ['alien', 'up', 'heat']]
    """

    name: ClassVar[str] = "river_biased_mf"
    _has_bias: ClassVar[bool] = True

    def __init__(
        self,
        n_factors: int = 10,
        lr: float = 0.05,
        bias_lr: float = 0.025,
        l2: float = 0.0,
        l2_bias: float = 0.0,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.lr = lr
        self.bias_lr = bias_lr
        self.l2 = l2
        self.l2_bias = l2_bias
        self.init_std = init_std
        super().__init__(seed=seed)

    def _make_river(self) -> reco.BiasedMF:
        return reco.BiasedMF(
            n_factors=self.n_factors,
            bias_optimizer=optim.SGD(self.bias_lr),
            latent_optimizer=optim.SGD(self.lr),
            l2_bias=self.l2_bias,
            l2_latent=self.l2,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=self.init_std, seed=self.seed),
            seed=self.seed,
        )

    def _optimizers(self) -> list[optim.base.Optimizer]:
        r = self.river
        return [r.u_bias_optimizer, r.i_bias_optimizer, r.u_latent_optimizer, r.i_latent_optimizer]

    def _initializer(self) -> optim.initializers.Normal:
        return self.river.latent_initializer

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"n_factors": 4, "lr": 0.05, "seed": 3}]


class RiverFunkMF(_RiverMF):
    """River's Funk matrix factorisation (no biases), learned per event, scored in bulk.

    ``rating = <p_u, q_i>``, learned with SGD on the squared error of each rating
    (:class:`river.reco.FunkMF`). Events without a rating are ignored.

    Parameters
    ----------
    n_factors
        Number of latent factors.
    lr
        SGD learning rate (``river.optim.SGD``).
    l2
        L2 penalty of the latent factors.
    init_std
        Standard deviation of the normal initialisation of latent factors.
    seed
        Seed of River's latent initialiser.

    Examples
    --------
    >>> model = RiverFunkMF(n_factors=4, seed=1)
    >>> model.learn(Interactions.from_columns(
    ...     ["ann", "ann", "bob", "bob"], ["alien", "heat", "alien", "up"], ratings=[5, 1, 4, 2]))
    >>> model.predict(["ann", "bob"], ["alien", "up"]).round(3).tolist()
    [0.119, 0.021]
    >>> model.recommend(["ann", "new-user"], k=3).items
    [['up'], ['alien', 'heat', 'up']]
    """

    name: ClassVar[str] = "river_funk_mf"

    def __init__(
        self,
        n_factors: int = 10,
        lr: float = 0.05,
        l2: float = 0.0,
        init_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.lr = lr
        self.l2 = l2
        self.init_std = init_std
        super().__init__(seed=seed)

    def _make_river(self) -> reco.FunkMF:
        return reco.FunkMF(
            n_factors=self.n_factors,
            optimizer=optim.SGD(self.lr),
            l2=self.l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=self.init_std, seed=self.seed),
            seed=self.seed,
        )

    def _optimizers(self) -> list[optim.base.Optimizer]:
        return [self.river.u_optimizer, self.river.i_optimizer]

    def _initializer(self) -> optim.initializers.Normal:
        return self.river.initializer

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"n_factors": 4, "lr": 0.05, "seed": 3}]
