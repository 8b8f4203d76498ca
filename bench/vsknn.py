"""V-SKNN, the session-kNN reference of the click-log figures, replayed under the project's protocol.

The references a model must beat (popularity by counts, recency-weighted
item-kNN, V-SKNN) are computed under the same protocol as the models: per
event in event time, freshness 0, every event scored, seen items excluded,
the popularity list for users without history. This module is the third:
session-rec's ``VMContextKNN`` (Ludewig and Jannach, "Evaluation of
session-based recommendation algorithms", 2018) written from its published
definition, with session-rec's defaults, where each user's events so far
are the current session:

- the current session's items weighted by position, ``weighting="div"``:
  the ``p``-th of ``n`` items weighs ``p / n`` (the newest 1);
- candidate neighbours: the ``sample_size`` sessions most recently active
  among those sharing an item with the current one;
- similarity ``vec``: the sum of the weights of the shared items over ``n``;
  the ``k`` most similar are the neighbours;
- an item's score: the sum over the neighbours holding it of their
  similarity times ``1 / s`` (``weighting_score="div"``), where ``s`` is how
  many steps back in the current session the newest item the neighbour
  shares sits (1: the newest item).

It is a list adapter for :class:`~streamrec.backtest.prequential.Prequential`
(learned and asked one event at a time in pure Python), not a model of the
protocol: it does not share, save or serve, and it is not in the model
registry. Run it beside project models, in one replay, with the backtest's
options::

    python -m bench.vsknn ../shared/data/yoochoose-clicks-100k/train_full.tsv \
        ../shared/data/yoochoose-clicks-100k/test.tsv --models sknn --limit 50307

Examples
--------
>>> from models import Interactions
>>> ref = VSKNN(k=10, sample_size=10)
>>> ref.learn(Interactions.from_columns(["s1", "s1", "s2", "s2", "u"], ["a", "b", "a", "c", "a"],
...                                     timestamps=[1, 2, 3, 4, 5]))
>>> ref.recommend(["u"], k=3).items
[['c', 'b']]
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from typing import Any

import numpy as np

from models import Interactions, Recommendations
from streamrec.served import ListAdapter

__all__ = ["VSKNN", "main"]


class VSKNN(ListAdapter):
    """Session-rec's V-SKNN (``VMContextKNN``) over each user's events so far; see the module docstring.

    Parameters
    ----------
    k
        Neighbours that score the candidates.
    sample_size
        Most recently active sessions sharing an item with the current one that are compared.
    last_n
        Only the user's newest ``last_n`` events form the current session (``None``: all, session-rec's
        default); neighbours' sessions are always whole.
    """

    def __init__(self, k: int = 100, sample_size: int = 500, last_n: int | None = None, seed: int = 0) -> None:
        self.k = k
        self.sample_size = sample_size
        self.last_n = last_n
        self._sessions: dict[str, list[str]] = {}  # user -> items in event order (repeats kept)
        self._items_of: dict[str, dict[str, None]] = {}  # user -> their items, in first-seen order
        self._last: dict[str, float] = {}  # user -> (time, arrival) of their newest event, for "recent"
        self._holders: dict[str, set[str]] = {}  # item -> users holding it
        self._arrival = 0
        super().__init__(seed=seed)

    def get_params(self) -> dict[str, Any]:
        return {"k": self.k, "sample_size": self.sample_size, "last_n": self.last_n}

    def learn(self, batch: Interactions) -> None:
        for user, item, ts in zip(batch.users.tolist(), batch.items.tolist(), batch.timestamps.tolist(), strict=True):
            self._sessions.setdefault(user, []).append(item)
            self._items_of.setdefault(user, {})[item] = None
            self._holders.setdefault(item, set()).add(user)
            self._arrival += 1
            self._last[user] = ts + self._arrival * 1e-9  # ties in time: the later arrival is more recent

    def add_items(self, items: Any, tags: Any = None, titles: Any = None) -> None:
        pass  # items without events are never a neighbour's item

    def has_history(self, user: Any) -> bool:
        return str(user) in self._sessions

    def seen_items(self, user: Any) -> set[str]:
        return set(self._items_of.get(str(user), ()))

    def scores(self, user: str) -> dict[str, float]:
        """Every candidate's V-SKNN score for ``user`` (seen items included)."""
        session = self._sessions.get(user, [])
        if self.last_n is not None:
            session = session[-self.last_n :]
        n = len(session)
        if n == 0:
            return {}
        weight = {item: (p + 1) / n for p, item in enumerate(session)}  # "div"; a repeat keeps its newest
        candidates: set[str] = set()
        for item in weight:
            candidates |= self._holders.get(item, set())
        candidates.discard(user)
        last = self._last
        sample = heapq.nlargest(self.sample_size, candidates, key=last.__getitem__)
        similar = []
        for other in sample:
            held = self._items_of[other]
            sim = sum(w for item, w in weight.items() if item in held) / n
            if sim > 0:
                similar.append((sim, last[other], other))
        scores: dict[str, float] = {}
        for sim, _, other in heapq.nlargest(self.k, similar):
            held = self._items_of[other]
            step = 1
            for item in reversed(session):  # the newest shared item, counted back from the newest event
                if item in held:
                    break
                step += 1
            add = sim / step  # weighting_score "div"
            for item in held:  # in the neighbour's order: ties rank alike in every run
                scores[item] = scores.get(item, 0.0) + add
        return scores

    def recommend(
        self, users: Any, k: int = 10, *, exclude_seen: bool = True, exclude: Any = None, with_reasons: bool = True
    ) -> Recommendations:
        users = [str(u) for u in users]
        items, scores = [], []
        for n, user in enumerate(users):
            leave = set(self._items_of.get(user, ())) if exclude_seen else set()
            if exclude is not None:
                leave |= {str(x) for x in (exclude[n] if isinstance(exclude, list | tuple) else exclude)}
            ranked = heapq.nlargest(
                k, ((s, item) for item, s in self.scores(user).items() if item not in leave), key=lambda x: x[0]
            )
            items.append([item for _, item in ranked])
            scores.append([s for s, _ in ranked])
        return Recommendations(users, items, scores)

    def _score(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover - recommend is overridden
        raise NotImplementedError


def main(argv: list[str] | None = None) -> int:
    """Replay a log through V-SKNN and the named project models in one run, and print their figures."""
    from models.popularity import Popularity
    from streamrec.backtest import cli
    from streamrec.backtest.prequential import Prequential
    from streamrec.served import ServedLists

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_arguments(parser)
    parser.add_argument("--vsknn", default="{}", help='V-SKNN parameters as JSON, e.g. {"k": 200}')
    parser.set_defaults(models="popularity", memory="off")
    args = parser.parse_args(argv)
    log = cli.load_source(args)
    names = cli._model_names(args.models)
    created, failed = cli.create_models(names, args.seed, cli._params(args))
    if failed:
        raise SystemExit(f"vsknn: cannot create {failed}")
    top_n = max(args.k)
    replayed = {name: ServedLists(m, Popularity(), top_n=top_n) if m.personalized else m for name, m in created.items()}
    replayed["vsknn"] = ServedLists(VSKNN(**json.loads(args.vsknn)), Popularity(), top_n=top_n)
    result = Prequential(replayed, **cli._options(args)).run(log)
    out = {name: {"params": r.params, **r.overall, **r.timing} for name, r in result.models.items()}
    print(json.dumps({"log": log.source, "events": len(log), "vsknn": json.loads(args.vsknn), "models": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
