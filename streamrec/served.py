"""What the live system serves, as a model: a model's lists, else the global fallback.

The worker writes a list for every user with history; an application reads the
``{prefix}:fallback`` list (popularity, adaptively decayed) for anyone else.
:class:`ServedLists` recommends exactly that, so the offline backtest and the
live replay score the same lists.

Examples
--------
>>> from models import Interactions, create
>>> served = ServedLists(create("itemknn"))
>>> served.learn(Interactions.from_columns(["u1", "u2", "u2"], ["a", "a", "b"]))
>>> served.recommend(["u1", "newcomer"], k=2).items
[['b'], ['a', 'b']]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models import Interactions, OnlineRecommender, Recommendations
from models.adaptive_popularity import AdaptivePopularity

__all__ = ["ListAdapter", "ServedLists"]


class ListAdapter(OnlineRecommender):
    """Base of the evaluation adapters that serve other models' lists: learning and scoring are theirs.

    Subclasses override ``learn``, ``add_items`` and ``recommend``; the
    per-row hooks of :class:`~models.base.OnlineRecommender` are never reached.
    """

    def _grow(self, n_users: int, n_items: int) -> None:  # pragma: no cover - learn is delegated
        pass

    def _learn(self, u: np.ndarray, i: np.ndarray, batch: Interactions) -> None:  # pragma: no cover
        pass

    def _score(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} is an evaluation adapter; save the models it wraps")

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:  # pragma: no cover
        raise NotImplementedError


class ServedLists(ListAdapter):
    """A model plus the fallback list, recommending what the live system serves.

    Users with history get ``model``'s list; the others get the fallback's
    list (a model that ranks every user alike; by default the worker's default,
    :class:`~models.adaptive_popularity.AdaptivePopularity`), as they would
    read ``{prefix}:fallback`` from Redis. Used to run the
    offline backtest with the live system's semantics.

    With ``cached=True`` a user's list is the one computed right after the
    batch holding the user's latest event, exactly as the worker writes it to
    Redis (a returning user reads a list as old as their last visit). Without
    it, lists come from the model's current state.
    """

    name = "served"

    def __init__(
        self,
        model: OnlineRecommender,
        fallback: OnlineRecommender | None = None,
        seed: int = 0,
        cached: bool = False,
        top_n: int = 20,
        exclude_seen: bool = True,
    ) -> None:
        if fallback is not None and fallback.personalized:
            raise ValueError(f"the fallback must rank every user alike (popularity), not {fallback.name}")
        self.model = model
        self.fallback = fallback if fallback is not None else AdaptivePopularity()
        self.cached = cached
        self.top_n = top_n
        self.exclude_seen = exclude_seen  # the cached lists' setting (the worker's STREAMREC_REPEATS=off)
        self._lists: dict[str, list[str]] = {}
        super().__init__(seed=seed)

    def learn(self, batch: Interactions) -> None:
        self.model.learn(batch)
        self.fallback.learn(batch)
        if self.cached:  # what the worker does after each batch: lists for the users it touched
            touched = list(dict.fromkeys(batch.users.tolist()))
            self._lists.update(self.model.recommend(touched, self.top_n, exclude_seen=self.exclude_seen).as_dict())

    def add_items(self, items: Any, tags: Any = None, titles: Any = None) -> None:
        items = list(items)
        self.model.add_items(items, tags, titles)
        self.fallback.add_items(items, tags)

    def recommend(
        self, users: Any, k: int = 10, *, exclude_seen: bool = True, exclude: Any = None, with_reasons: bool = True
    ) -> Recommendations:
        users = [str(u) for u in users]
        if len(users) == 1 and not self.cached and self.model.has_history(users[0]):  # the per-event path
            return self.model.recommend(users, k, exclude_seen=exclude_seen, exclude=exclude, with_reasons=with_reasons)
        if self.cached:
            out = {u: self._lists[u][:k] for u in users if u in self._lists}
        else:
            warm = [u for u in users if self.model.has_history(u)]
            out = (
                self.model.recommend(
                    warm, k, exclude_seen=exclude_seen, exclude=exclude, with_reasons=with_reasons
                ).as_dict()
                if warm
                else {}
            )
        cold = [u for u in users if u not in out]
        if cold:
            top = self.fallback.recommend(["*"], k, exclude_seen=False)
            for u in cold:
                out[u] = top.items[0]
        return Recommendations(users, [out[u] for u in users], [[0.0] * len(out[u]) for u in users])

    def has_history(self, user: Any) -> bool:
        return self.model.has_history(user)

    @property  # type: ignore[override]
    def uses_ratings(self) -> bool:
        return self.model.uses_ratings

    def get_params(self) -> dict[str, Any]:
        return {"model": self.model.name, **self.model.get_params(), "fallback": self.fallback.name}

    def clone(self) -> ServedLists:
        return ServedLists(
            self.model.clone(),
            self.fallback.clone(),
            cached=self.cached,
            top_n=self.top_n,
            exclude_seen=self.exclude_seen,
        )

    def save(self, path: Any) -> Any:
        """Save the wrapped model (the fallback is the worker's own fallback model)."""
        return self.model.save(path)

    def predict(self, users: Any, items: Any) -> np.ndarray:
        predict = getattr(self.model, "predict", None)
        if predict is None:
            raise AttributeError(f"{self.model.name} does not predict ratings")
        return predict(users, items)

    @property
    def n_items(self) -> int:  # type: ignore[override]
        return self.model.n_items

    @property
    def item_index(self):  # type: ignore[no-untyped-def,override]
        return self.model.item_index

    @item_index.setter
    def item_index(self, value: Any) -> None:  # the base constructor assigns one; the model's is used
        pass
