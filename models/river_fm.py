"""A River factorisation machine over user, item, item tags and event context.

:class:`RiverFM` learns with :class:`river.facto.FMRegressor`, one event at a
time, on sparse features: the user id, the item id, the item's content tags
(genres, categories; set through ``add_items(ids, tags=...)``) and the event's
context (categorical fields of ``Interactions.contexts`` such as the device,
and the hour of day of the event timestamp). Scoring a whole catalogue never
calls ``predict_one`` item by item: the FM's weights are mirrored into NumPy
arrays and the prediction is split into a part fixed for the user and their
context and a part that varies across items, joined by one matrix product.

Learning applies ``FMRegressor.learn_one``'s update to River's own weights,
vectorised over the event's features: River's ``learn_one`` loops over the
features and the factors in Python (about 150 µs an update on MovieLens, where
an event is one positive and its negatives); the same arithmetic on a small
matrix costs a fraction of it. Tests check the result against River's
``learn_one`` on the same stream (equal up to float rounding), and the River
object stays a working ``FMRegressor`` (``predict_one``, ``debug_one``,
``learn_one``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from river import facto, optim

from models.base import ContextT, Interactions, OnlineRecommender
from models.ids import IdIndex
from models.negatives import NegativeSampler

__all__ = ["RiverFM"]

# River feature keys are ints in three disjoint namespaces: 3*u (user u),
# 3*i + 1 (item i) and 3*n + 2 (named feature n: a tag, a context value, an hour).
_USER, _ITEM, _NAMED = 0, 1, 2
_NEGATIVE_TRIES = 3  # draws before giving up on a negative that the user has not seen


def _key(namespace: int, index: int) -> int:
    return 3 * index + namespace


class RiverFM(OnlineRecommender):
    """A factorisation machine on user, item, item tags and context (River's ``FMRegressor``).

    The prediction for a feature vector ``x`` is ``w0 + sum_j w_j x_j +
    sum_{j<l} <v_j, v_l> x_j x_l`` over the one-hot user and item, the item's
    tags (each ``1 / n_tags``, so an item's tags weigh as much as its id), the
    context fields in ``context_keys`` and the hour of day (one-hot, UTC).

    Targets
        Every event is a positive. An event without a rating has target 1; a
        rated event has a target that grows linearly from ``low_rating_target``
        (lowest rating of ``rating_range``) to 1 (highest), so any interaction
        stays above an unobserved item, and liked items above disliked ones.
        Trained on positives only, the FM would learn to predict 1 for
        everything; so each event also teaches ``n_negatives`` sampled items
        with target 0, in the event's context. Negatives are drawn
        (:class:`models.negatives.NegativeSampler`: uniformly, or partly by
        recent popularity) from the items indexed up to the newest item that
        has appeared in an event, redrawn (up to 3 times) when the user has
        interacted with them. Learning is per event, so a batch learns exactly what its events
        learn one by one.

    Quality (measured; see ``docs/tuning/mf.md``)
        Below popularity on the rating log: per event on the whole of
        MovieLens 100K, HR@10 0.0633 against popularity's 0.0771 (held-out
        40%: 0.0617 against 0.0759), and on the first 60% of the YOOCHOOSE
        sample (0.0556 against 0.0580); on the whole click log it is just
        above (0.0595 against 0.0581). No setting tried beat popularity on
        both development parts (popular negatives, ``lr`` 0.05,
        ``l2_latent`` 0.01: at most 0.0652 / 0.0559). Plain SGD on the
        squared error with one negative per event learns the item weights
        too slowly to rank above the counts. Keep it out of default model
        lists; it is here for its features (tags, context, hour), not its
        ranking.

    Scoring
        ``score = w0 + [user part] + [item part] + <s_user, s_item>`` where
        ``s`` is the sum of a part's latent vectors and each part's own pairwise
        term comes from ``((sum v x)^2 - sum (v x)^2) / 2``. :meth:`recommend`
        uses each user's most recent context and the hour of the newest event
        learned; :meth:`score_items` takes an explicit context. Features the FM
        has never learned weigh zero (River would draw a random latent vector).

    Parameters
    ----------
    n_factors
        Number of latent factors.
    lr
        SGD learning rate of the weights, the latent factors and the intercept.
    l2_weight
        L2 penalty of the linear weights.
    l2_latent
        L2 penalty of the latent factors.
    init_std
        Standard deviation of the normal initialisation of latent factors.
    n_negatives
        Sampled negative items per event (target 0).
    context_keys
        Fields of the per-event context used as categorical features.
    use_hour
        Add the hour of day of the event timestamp (UTC) as a feature.
    rating_range
        Lowest and highest rating, mapped to ``low_rating_target`` and 1.
    low_rating_target
        Target of the lowest rating (an unobserved negative is 0).
    neg_popularity
        Share of the negatives drawn in proportion to recent popularity (the rest uniformly).
    seed
        Seed of the latent initialiser and of negative sampling.

    Examples
    --------
    >>> model = RiverFM(n_factors=4, seed=0)
    >>> model.add_items(["alien", "heat", "up"], tags=[("scifi",), ("crime",), ("family",)])
    >>> events = Interactions.from_columns(
    ...     ["ann", "bob", "ann", "bob"], ["alien", "heat", "up", "up"],
    ...     timestamps=[0, 3600, 7200, 10800], contexts=[{"device": "tv"}] * 4)
    >>> model.learn(events)
    >>> model.recommend(["ann", "bob", "new-user"], k=3).items
    [['heat'], ['alien'], ['up', 'heat', 'alien']]
    >>> model.score_items(["ann"], contexts=[{"device": "phone"}], timestamps=[0.0]).shape
    (1, 3)
    """

    name: ClassVar[str] = "river_fm"
    batch_equals_sequential: ClassVar[bool] = True

    def __init__(
        self,
        n_factors: int = 10,
        lr: float = 0.01,
        l2_weight: float = 0.0,
        l2_latent: float = 1e-4,
        init_std: float = 0.05,
        n_negatives: int = 1,
        context_keys: Sequence[str] = ("device",),
        use_hour: bool = True,
        rating_range: Sequence[float] = (1.0, 5.0),
        low_rating_target: float = 0.25,
        neg_popularity: float = 0.0,
        seed: int = 0,
    ) -> None:
        if n_negatives < 0:
            raise ValueError(f"n_negatives must be >= 0, got {n_negatives}")
        lo, hi = (float(r) for r in rating_range)
        if not hi > lo:
            raise ValueError(f"rating_range must be (lowest, highest) with lowest < highest, got {rating_range}")
        self.n_factors = n_factors
        self.lr = lr
        self.l2_weight = l2_weight
        self.l2_latent = l2_latent
        self.init_std = init_std
        self.n_negatives = n_negatives
        self.context_keys = tuple(str(k) for k in context_keys)
        self.use_hour = use_hour
        self.rating_range = (lo, hi)
        self.low_rating_target = low_rating_target
        self.neg_popularity = neg_popularity
        super().__init__(seed=seed)

    # -- state -----------------------------------------------------------------------

    def _init_state(self) -> None:
        super()._init_state()
        k = self.n_factors
        self.river = facto.FMRegressor(
            n_factors=k,
            weight_optimizer=optim.SGD(self.lr),
            latent_optimizer=optim.SGD(self.lr),
            l2_weight=self.l2_weight,
            l2_latent=self.l2_latent,
            intercept=0.0,
            intercept_lr=self.lr,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=self.init_std, seed=self.seed),
            seed=self.seed,
        )
        self._named = IdIndex()  # tags, context values, hours
        # mirror of River's weights per namespace: linear weight, latent vector, present in River
        self._w = [np.zeros(0, dtype=np.float64) for _ in range(3)]
        self._v = [np.zeros((0, k), dtype=np.float64) for _ in range(3)]
        self._known = [np.zeros(0, dtype=bool) for _ in range(3)]
        self._dirty: set[int] = set()
        self._item_tags: list[tuple[int, ...]] = []  # named indices of each item's tags
        self._user_ctx = np.full((0, len(self.context_keys)), -1, dtype=np.int64)  # last context per user
        self._tag_matrix: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
        self._neg_pool = 0
        self._negatives = NegativeSampler(self.neg_popularity, seed=self.seed)

    def _grow_namespace(self, ns: int, n: int) -> None:
        self._w[ns] = self._grown(self._w[ns], n)
        self._v[ns] = self._grown(self._v[ns], n)
        self._known[ns] = self._grown(self._known[ns], n, fill=False)

    def _grow(self, n_users: int, n_items: int) -> None:
        self._grow_namespace(_USER, n_users)
        self._grow_namespace(_ITEM, n_items)
        self._user_ctx = self._grown(self._user_ctx, n_users, fill=-1)
        if len(self._item_tags) < n_items:
            self._item_tags.extend([()] * (n_items - len(self._item_tags)))
            self._tag_matrix = None

    def _named_feature(self, name: str) -> int:
        n = self._named.add(name)
        if n >= len(self._w[_NAMED]):
            self._grow_namespace(_NAMED, n + 1)
        return n

    def _set_item_tags(self, items: np.ndarray, tags: list[tuple[str, ...]]) -> None:
        positions = self.item_index.lookup(items.tolist())
        for pos, item_tags in zip(positions.tolist(), tags, strict=True):
            unique = dict.fromkeys(str(t) for t in item_tags)
            self._item_tags[pos] = tuple(self._named_feature(f"tag={t}") for t in unique)
        self._tag_matrix = None

    # -- features --------------------------------------------------------------------

    def _context_features(self, context: ContextT, *, add: bool) -> list[int]:
        """Named indices of the context fields present in ``context`` (-1: none / unknown)."""
        out = [-1] * len(self.context_keys)
        if context:
            for c, key in enumerate(self.context_keys):
                value = context.get(key)
                if value is not None:
                    name = f"ctx:{key}={value}"
                    out[c] = self._named_feature(name) if add else self._named.get(name)
        return out

    def _hour_feature(self, timestamp: float, *, add: bool) -> int:
        if not self.use_hour or not math.isfinite(timestamp):
            return -1
        name = f"hour={int(timestamp // 3600) % 24}"
        return self._named_feature(name) if add else self._named.get(name)

    def _features(self, u: int, i: int, named: Sequence[int]) -> dict[int, float]:
        """River's sparse input: user (none if ``u < 0``), item, the item's tags, then context/hour."""
        x = {_key(_USER, u): 1.0} if u >= 0 else {}
        x[_key(_ITEM, i)] = 1.0
        tags = self._item_tags[i]
        if tags:
            weight = 1.0 / len(tags)
            for t in tags:
                x[_key(_NAMED, t)] = weight
        for n in named:
            if n >= 0:
                x[_key(_NAMED, n)] = 1.0
        return x

    def _fm_learn_one(self, x: dict[int, float], y: float, w: float) -> None:
        """``FMRegressor.learn_one(x, y, w)`` (squared loss, SGD, no sample normalisation), vectorised over ``x``.

        New features are created in River's order (its defaultdicts, in the
        order of ``x``), so River's latent initialiser draws the same vectors.
        """
        fm = self.river
        keys = list(x)
        latents, weights = fm.latents, fm.weights
        v = np.array([latents[k] for k in keys])  # (n_features, n_factors); creates missing latents in order
        wt = np.array([weights[k] for k in keys])
        xv = np.fromiter(x.values(), dtype=np.float64, count=len(keys))
        vx = v * xv[:, None]
        s = vx.sum(axis=0)  # River's precomputed sum
        y_pred = fm.intercept + float(wt @ xv) + 0.5 * (float(s @ s) - float(np.einsum("ij,ij->", vx, vx)))
        g = 2.0 * (y_pred - y)  # the squared loss's gradient
        g = min(max(g, -fm.clip_gradient), fm.clip_gradient) * w
        wopt, lopt = fm.weight_optimizer, fm.latent_optimizer
        fm.intercept -= fm.intercept_lr.get(wopt.n_iterations) * g
        new_w = wt - wopt.learning_rate * (g * xv + fm.l1_weight * np.sign(wt) + fm.l2_weight * wt)
        wopt.n_iterations += 1
        grad_v = g * (xv[:, None] * s - v * (xv * xv)[:, None]) + fm.l1_latent * np.sign(v) + fm.l2_latent * v
        new_v = v - lopt.learning_rate * grad_v
        lopt.n_iterations += len(keys)
        for r, k in enumerate(keys):
            weights[k] = float(new_w[r])
            latents[k] = new_v[r]

    def _targets(self, ratings: np.ndarray) -> np.ndarray:
        lo, hi = self.rating_range
        scaled = np.clip((ratings.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
        low = self.low_rating_target
        return np.where(np.isnan(ratings), 1.0, low + (1.0 - low) * scaled)

    # -- learning --------------------------------------------------------------------

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:
        learn_one = self._fm_learn_one
        dirty = self._dirty
        seen = self._seen
        item_ids = self.item_index.ids  # None at free rows, which are no negatives
        draw = self._negatives.draw
        contexts: Sequence[ContextT] = batch.contexts or (None,) * len(batch)
        pending: dict[int, set[int]] = {}  # items of earlier events in this batch (not yet in _seen)
        for k, (uu, ii, y, w, ts, ctx) in enumerate(
            zip(
                u.tolist(),
                i.tolist(),
                self._targets(batch.ratings).tolist(),
                batch.weights.astype(np.float64).tolist(),
                batch.timestamps.tolist(),
                contexts,
                strict=True,
            )
        ):
            ctx_named = self._context_features(ctx, add=True)
            for c, n in enumerate(ctx_named):
                if n >= 0:
                    self._user_ctx[uu, c] = n
            named = [*ctx_named, self._hour_feature(ts, add=True)]
            x = self._features(uu, ii, named)
            learn_one(x, y, w)
            dirty.update(x)
            self._neg_pool = max(self._neg_pool, ii + 1)
            mine = pending.setdefault(uu, set())
            for _ in range(self.n_negatives):
                for j in draw((_NEGATIVE_TRIES,), self._neg_pool).tolist():
                    if j != ii and j not in seen[uu] and j not in mine and item_ids[j] is not None:
                        x = self._features(uu, j, named)
                        learn_one(x, 0.0, w)
                        dirty.update(x)
                        break
            mine.add(ii)
            self._negatives.record(i[k : k + 1])

    def _sync(self) -> None:
        """Copy the weights River changed since the last call into the NumPy mirror."""
        if not self._dirty:
            return
        weights, latents = self.river.weights, self.river.latents
        by_ns: list[list[int]] = [[], [], []]
        for key in self._dirty:
            if key in latents:
                by_ns[key % 3].append(key)
        for ns, keys in enumerate(by_ns):
            if keys:
                rows = [key // 3 for key in keys]
                self._w[ns][rows] = [weights.get(key, 0.0) for key in keys]
                self._v[ns][rows] = np.stack([latents[key] for key in keys])
                self._known[ns][rows] = True
        self._dirty.clear()

    # -- forgetting ------------------------------------------------------------------

    def _forget_rows(self, rows: np.ndarray) -> None:
        """Drop the users' weights (River and mirror) and their last context.

        The item, tag, context and hour weights and the intercept are
        aggregates and stay.
        """
        self._drop_features(_USER, rows)
        self._user_ctx[rows] = -1

    def _forget_item_rows(self, rows: np.ndarray) -> None:
        """Drop the items' weights and tags (a new item given the row starts untagged)."""
        self._drop_features(_ITEM, rows)
        self._negatives.forget_items(rows)
        for r in rows.tolist():
            self._item_tags[r] = ()
        self._tag_matrix = None

    def _drop_features(self, namespace: int, rows: np.ndarray) -> None:
        weights, latents = self.river.weights, self.river.latents
        for r in rows.tolist():
            key = _key(namespace, r)
            weights.pop(key, None)
            latents.pop(key, None)
            self._dirty.discard(key)
        self._w[namespace][rows] = 0.0
        self._v[namespace][rows] = 0.0
        self._known[namespace][rows] = False

    # -- scoring ---------------------------------------------------------------------

    def _tags(self) -> tuple[sp.csr_matrix, sp.csr_matrix] | None:
        """Sparse ``(n_items, n_named)`` matrices of the items' tag values and their squares (cached; ``None``: no tags)."""
        n_items, n_named = self.n_items, len(self._named)
        if self._tag_matrix is None or self._tag_matrix[0].shape != (n_items, n_named):
            sizes = np.fromiter((len(t) for t in self._item_tags[:n_items]), dtype=np.int64, count=n_items)
            cols = np.fromiter((c for t in self._item_tags[:n_items] for c in t), dtype=np.int64, count=sizes.sum())
            vals = np.repeat(1.0 / np.maximum(sizes, 1), sizes)
            indptr = np.concatenate([[0], np.cumsum(sizes)])
            tags = sp.csr_matrix((vals, cols, indptr), shape=(n_items, n_named))
            self._tag_matrix = (tags, tags.multiply(tags).tocsr())
        return self._tag_matrix if self._tag_matrix[0].nnz else None

    def _scores(self, u: np.ndarray, named: np.ndarray) -> np.ndarray:
        """Scores of every item for user indices ``u`` (-1: none) with named features ``named`` per row.

        Computed in ``float64`` and rounded to ``float32``, so a user's row does
        not depend on the other users scored with it (see :mod:`models.scoring`).
        """
        self._sync()
        n, n_named = self.n_items, len(self._named)
        w_named, v_named = self._w[_NAMED][:n_named], self._v[_NAMED][:n_named]
        sq_named = np.einsum("nk,nk->n", v_named, v_named)
        # item part: item id and tags
        v_item = self._v[_ITEM][:n]
        lin_items = self._w[_ITEM][:n].copy()
        s_items = v_item
        sq_items = np.einsum("nk,nk->n", v_item, v_item)
        tags = self._tags()
        if tags is not None:
            lin_items += tags[0] @ w_named
            s_items = v_item + tags[0] @ v_named
            sq_items += tags[1] @ sq_named
        pair_items = 0.5 * (np.einsum("nk,nk->n", s_items, s_items) - sq_items)
        # user part: user id, context, hour (one-hot, so x^2 = x)
        table = len(self._w[_USER])  # empty until a user is learned (items may come first)
        known = (u >= 0) & (u < table)
        rows = np.where(known, u, 0)
        if table:
            v_user = np.where(known[:, None], self._v[_USER][rows], 0.0)
            w_user = np.where(known, self._w[_USER][rows], 0.0)
        else:
            v_user = np.zeros((len(u), self._v[_USER].shape[1]))
            w_user = np.zeros(len(u))
        lin_user, s_user = w_user, v_user
        sq_user = np.einsum("nk,nk->n", v_user, v_user)
        present = named >= 0
        if n_named and present.any():
            cols = np.where(present, named, 0)
            lin_user = lin_user + np.where(present, w_named[cols], 0.0).sum(1)
            s_user = s_user + np.where(present[:, :, None], v_named[cols], 0.0).sum(1)
            sq_user = sq_user + np.where(present, sq_named[cols], 0.0).sum(1)
        pair_user = 0.5 * (np.einsum("nk,nk->n", s_user, s_user) - sq_user)
        scores = s_user @ s_items.T
        scores += lin_items + pair_items
        scores += (self.river.intercept + lin_user + pair_user)[:, None]
        return scores.astype(np.float32)

    def _score(self, u: np.ndarray) -> np.ndarray:
        return self._scores(u, self._default_context(u))

    def _default_context(self, u: np.ndarray) -> np.ndarray:
        """Named features of each user's most recent context, then the hour of the newest event."""
        known = u >= 0
        ctx = np.full((len(u), len(self.context_keys)), -1, dtype=np.int64)
        ctx[known] = self._user_ctx[u[known]]
        hour = np.full((len(u), 1), self._hour_feature(self.last_timestamp, add=False), dtype=np.int64)
        return np.hstack([ctx, hour])

    def score_items(
        self,
        users: Iterable[Any],
        contexts: Sequence[ContextT] | None = None,
        timestamps: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Scores of every catalogue item (columns in item index order) for each user.

        Parameters
        ----------
        users
            User ids; unknown users have no user feature (context and items only).
        contexts
            One context per user (``None``: the user's most recent context).
        timestamps
            One time per user for the hour feature (default: the newest event learned).
        """
        u = self.user_index.lookup([str(x) for x in users])
        named = self._default_context(u)
        if contexts is not None:
            if len(contexts) != len(u):
                raise ValueError(f"got {len(contexts)} contexts for {len(u)} users")
            for row, context in enumerate(contexts):
                if context is not None:
                    named[row, :-1] = self._context_features(context, add=False)
        if timestamps is not None:
            if len(timestamps) != len(u):
                raise ValueError(f"got {len(timestamps)} timestamps for {len(u)} users")
            named[:, -1] = [self._hour_feature(float(t), add=False) for t in timestamps]
        return self._scores(u, named)

    def river_features(
        self, user: Any, item: Any, context: ContextT = None, timestamp: float | None = None
    ) -> dict[int, float]:
        """River's input ``x`` for one pair, as scored by :meth:`score_items`.

        Pass it to ``model.river.predict_one(x)`` or ``model.river.debug_one(x)``
        (both create random latent vectors for features River has not learned).
        """
        u, i = self.user_index.get(str(user)), self.item_index.get(str(item))
        if i < 0:
            raise KeyError(f"unknown item {item!r}")
        named = self._default_context(np.array([u]))[0].tolist()
        if context is not None:
            named[:-1] = self._context_features(context, add=False)
        if timestamp is not None:
            named[-1] = self._hour_feature(timestamp, add=False)
        return self._features(u, i, named)

    # -- save / load -----------------------------------------------------------------

    def _state(self) -> dict[str, np.ndarray]:
        self._sync()
        sizes = np.array([len(t) for t in self._item_tags[: self.n_items]], dtype=np.int64)
        flat = np.array([c for t in self._item_tags[: self.n_items] for c in t], dtype=np.int64)
        rng_state = self.river.latent_initializer._rng.get_state()
        state: dict[str, np.ndarray] = {
            "item_tag_sizes": sizes,
            "item_tags": flat,
            "user_context": self._user_ctx[: self.n_users],
            "intercept": np.array([self.river.intercept], dtype=np.float64),
            "optimizer_steps": np.array(
                [self.river.weight_optimizer.n_iterations, self.river.latent_optimizer.n_iterations], dtype=np.int64
            ),
            "rng_keys": np.asarray(rng_state[1], dtype=np.uint32),
            "rng_scalars": np.array([rng_state[2], rng_state[3], rng_state[4]], dtype=np.float64),
            "negatives_recent": self._negatives.state()[0]["recent"],
        }
        counts = (self.n_users, self.n_items, len(self._named))
        for ns, prefix in enumerate(("user", "item", "named")):
            state[f"{prefix}_w"] = self._w[ns][: counts[ns]]
            state[f"{prefix}_v"] = self._v[ns][: counts[ns]]
            state[f"{prefix}_known"] = self._known[ns][: counts[ns]]
        return state

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        weights, latents = self.river.weights, self.river.latents
        weights.clear()
        latents.clear()
        self._grow_namespace(_NAMED, len(arrays["named_w"]))
        for ns, prefix in enumerate(("user", "item", "named")):
            w, v, known = arrays[f"{prefix}_w"], arrays[f"{prefix}_v"], arrays[f"{prefix}_known"]
            self._w[ns][: len(w)] = w
            self._v[ns][: len(v)] = v
            self._known[ns][: len(known)] = known
            for row in np.flatnonzero(known).tolist():
                key = _key(ns, row)
                weights[key] = float(w[row])
                latents[key] = v[row].copy()
        sizes = arrays["item_tag_sizes"]
        bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        flat = arrays["item_tags"].tolist()
        self._item_tags[: len(sizes)] = [tuple(flat[a:b]) for a, b in itertools.pairwise(bounds)]
        self._tag_matrix = None
        self._user_ctx[: self.n_users] = arrays["user_context"]
        self.river.intercept = float(arrays["intercept"][0])
        steps = arrays["optimizer_steps"].tolist()
        self.river.weight_optimizer.n_iterations, self.river.latent_optimizer.n_iterations = steps
        pos, has_gauss, cached = arrays["rng_scalars"].tolist()
        self.river.latent_initializer._rng.set_state(
            ("MT19937", arrays["rng_keys"].astype(np.uint32), int(pos), int(has_gauss), float(cached))
        )
        self._dirty.clear()
        self._recent_negatives = arrays["negatives_recent"]

    def _extra_meta(self) -> dict[str, Any]:
        return {
            "named_features": self._named.ids,
            "negative_pool": self._neg_pool,
            "negatives": self._negatives.state()[1],
        }

    def _load_extra_meta(self, extra: dict[str, Any]) -> None:
        self._named = IdIndex(extra.get("named_features", []))
        self._neg_pool = int(extra.get("negative_pool", 0))
        self._negatives.set_state({"recent": self._recent_negatives}, extra.get("negatives", {}))

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"n_factors": 4, "lr": 0.05, "seed": 1}]
