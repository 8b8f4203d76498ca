"""The offline twin of a live experiment: the same split (same hash, same weights) replayed by the backtest.

``streamrec backtest --experiment "name: variant=model weight, ..."`` replays
the log once with every model a variant serves (and, per interleaved
variant, :class:`InterleavedLists` of its two models), then scores each
variant on the events of the users :meth:`~streamrec.experiments.Experiment.assign`
puts in it, exactly as the live worker counts them. :func:`twin_counts`
writes the figures in the live counts' format, so that
:func:`streamrec.experiment_report.experiment_report` gives the offline
report in the same shape as ``streamrec experiment`` gives the live one.

Examples
--------
>>> from models import create
>>> from streamrec.backtest.prequential import Prequential
>>> from streamrec.events import Interaction
>>> from streamrec.experiments import Experiment
>>> exp = Experiment.parse("e: knn=itemknn 1, mix=itemknn/popularity 1")
>>> models = twin_models(exp, {"itemknn": create("itemknn"), "popularity": create("popularity")},
...                      lambda m: m)
>>> sorted(models)
['itemknn', 'mix', 'popularity']
>>> events = [Interaction(f"u{j % 9}", f"i{(j * 7) % 11}", float(j)) for j in range(300)]
>>> result = Prequential(models, ks=(10,), memory="off").run(events)
>>> counts = twin_counts(exp, result, models)
>>> sum(v for k, v in counts.items() if k.endswith("|scored")) == 300
True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from models import Interactions, OnlineRecommender, Recommendations
from streamrec.backtest.prequential import BacktestResult
from streamrec.experiments import Experiment, team_draft
from streamrec.served import ListAdapter

__all__ = ["InterleavedLists", "twin_counts", "twin_models"]


class InterleavedLists(ListAdapter):
    """Team-draft interleaving of two models' lists, crediting each event on a listed item to its team.

    ``include(user)`` says which users count (the variant's users); the wins are in :attr:`wins`.
    """

    name = "interleaved"

    def __init__(
        self, first: OnlineRecommender, second: OnlineRecommender, include: Callable[[str], bool], depth: int = 20
    ) -> None:
        self.first, self.second = first, second
        self.include = include
        self.depth = depth
        self.wins = [0, 0]
        self._last: dict[str, tuple[list[str], list[int]]] = {}
        self._calls = 0
        super().__init__(seed=0)

    def learn(self, batch: Interactions) -> None:
        for user, item in zip(batch.users.tolist(), batch.items.tolist(), strict=True):
            last = self._last.get(user)
            if last is not None and self.include(user) and item in last[0]:
                self.wins[last[1][last[0].index(item)]] += 1
        self.first.learn(batch)
        self.second.learn(batch)

    def add_items(self, items: Any, tags: Any = None, titles: Any = None) -> None:
        items = list(items)
        self.first.add_items(items, tags, titles)
        self.second.add_items(items, tags, titles)

    def recommend(
        self, users: Any, k: int = 10, *, exclude_seen: bool = True, exclude: Any = None, with_reasons: bool = True
    ) -> Recommendations:
        users = [str(u) for u in users]
        options = {"exclude_seen": exclude_seen, "exclude": exclude, "with_reasons": False}
        a = self.first.recommend(users, k, **options).items
        b = self.second.recommend(users, k, **options).items
        self._calls += 1
        lists = []
        for user, first, second in zip(users, a, b, strict=True):
            items, teams = team_draft(first, second, k, seed=zlib.crc32(f"{self._calls}:{user}".encode()))
            self._last[user] = (items[: self.depth], teams[: self.depth])
            lists.append(items)
        return Recommendations(users, lists, [[float(-j) for j in range(len(x))] for x in lists])

    def has_history(self, user: Any) -> bool:
        return self.first.has_history(user) or self.second.has_history(user)

    def get_params(self) -> dict[str, Any]:
        return {"first": self.first.name, "second": self.second.name}

    def clone(self) -> InterleavedLists:
        return InterleavedLists(self.first.clone(), self.second.clone(), self.include, self.depth)

    @property
    def n_items(self) -> int:  # type: ignore[override]
        return max(self.first.n_items, self.second.n_items)


def twin_models(
    experiment: Experiment,
    created: Mapping[str, OnlineRecommender],
    served: Callable[[OnlineRecommender], OnlineRecommender],
) -> dict[str, OnlineRecommender]:
    """The models to replay: each single-model variant's model, and one interleaving per interleaved variant.

    ``created`` maps model names to new models; ``served`` wraps one as the worker serves it (the fallback
    for users without history). An interleaved variant gets copies of its two models (``clone``).
    """
    out: dict[str, OnlineRecommender] = {}
    for variant in experiment.variants:
        for name in variant.models:
            if name not in created:
                raise ValueError(f"experiment {experiment.name!r}: model {name!r} is not among the models replayed")
            out.setdefault(name, served(created[name]))
    for variant in experiment.variants:
        if variant.interleaved:
            a, b = (served(created[m].clone()) for m in variant.models)
            out[variant.name] = InterleavedLists(a, b, lambda u, v=variant.name: experiment.assign(u).name == v)
    return out


def _count(counts: dict[str, float], prefix: str, ranks: np.ndarray, ks: Iterable[int]) -> None:
    counts[prefix + "scored"] = float(len(ranks))
    found = ranks[ranks >= 0]
    for k in ks:
        counts[f"{prefix}hit@{k}"] = float(np.count_nonzero(found < k))
    rr = 1.0 / (found + 1.0)
    counts[prefix + "rr"] = float(rr.sum())
    counts[prefix + "rr2"] = float((rr * rr).sum())


def twin_counts(
    experiment: Experiment, result: BacktestResult, models: Mapping[str, OnlineRecommender]
) -> dict[str, float]:
    """Each variant's figures on its users' events, in the live counts' format (``exp:<variant>|*|...``)."""
    users = result.scored_users
    if users is None:
        raise ValueError("the backtest result holds no scored users (run it with this version of Prequential)")
    distinct, inverse = np.unique(users, return_inverse=True)
    labels = np.array([experiment.assign(str(u)).name for u in distinct], dtype=object)[inverse]
    counts: dict[str, float] = {}
    for variant in experiment.variants:
        name = variant.name if variant.interleaved else variant.models[0]
        ranks = result.models[name].ranks
        if ranks is None:
            continue
        _count(counts, f"exp:{variant.name}|*|", ranks[labels == variant.name], result.config["ks"])
        model = models[name]
        if isinstance(model, InterleavedLists):
            for team, model_name in enumerate(variant.models):
                counts[f"exp:{variant.name}|-|win:{model_name}"] = float(model.wins[team])
    return counts


def variant_users(experiment: Experiment, result: BacktestResult) -> dict[str, int]:
    """Distinct users of the scored events in each variant."""
    users = result.scored_users if result.scored_users is not None else np.array([], dtype=object)
    out = {v.name: 0 for v in experiment.variants}
    for user in np.unique(users):
        out[experiment.assign(str(user)).name] += 1
    return out
