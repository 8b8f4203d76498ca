"""From a micro-batch of decoded events to fresh top-N lists: no Kafka, no Redis.

The stream app decodes Kafka messages and hands the good ones to
:meth:`RecommendationPipeline.process`; it gets back the lists to write. The
live replay and the tests call the same object.

Examples
--------
>>> from streamrec.events import Interaction
>>> pipe = RecommendationPipeline.from_names(["popularity", "itemknn"], default_model="itemknn", top_n=3)
>>> out = pipe.process([Interaction("u1", "a", 1.0), Interaction("u1", "b", 2.0), Interaction("u2", "a", 3.0)])
>>> sorted(out.users), out.lists["itemknn"].as_dict()["u2"]
(['u1', 'u2'], ['b'])
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import models
from models import OnlineRecommender, Recommendations
from models.popularity import Popularity
from streamrec.events import Event, ForgetUser, Interaction, ItemUpdate, Rating, to_interactions
from streamrec.store import RecList

__all__ = ["BatchOutput", "RecommendationPipeline"]

FALLBACK_MODEL = "popularity"
EXTRA_FALLBACK = "_fallback"  # name of the fallback model when popularity is not configured


@dataclass
class BatchOutput:
    """What one processed batch produced."""

    users: list[str]
    lists: dict[str, Recommendations]
    fallback: Recommendations | None
    event_ts: dict[str, float] = field(default_factory=dict)
    ingest_ts: dict[str, float] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    n_events: int = 0
    learn_seconds: float = 0.0
    recommend_seconds: float = 0.0

    def rec_lists(self, default_model: str, computed_at: float | None = None) -> list[tuple[RecList, bool]]:
        """The lists as Redis documents, paired with whether they are the default model's."""
        now = time.time() if computed_at is None else computed_at
        out: list[tuple[RecList, bool]] = []
        for model_name, recs in self.lists.items():
            reasons = recs.reasons
            for n, user in enumerate(recs.users):
                doc = RecList(
                    user_id=user,
                    model=model_name,
                    items=recs.items[n],
                    scores=recs.scores[n],
                    computed_at=now,
                    event_ts=self.event_ts.get(user),
                    ingest_ts=self.ingest_ts.get(user),
                    reasons=reasons[n] if reasons is not None else None,
                )
                out.append((doc, model_name == default_model))
        return out

    def fallback_list(self, computed_at: float | None = None) -> RecList | None:
        if self.fallback is None:
            return None
        return RecList(
            user_id="",
            model=FALLBACK_MODEL,
            items=self.fallback.items[0],
            scores=self.fallback.scores[0],
            computed_at=time.time() if computed_at is None else computed_at,
        )


class RecommendationPipeline:
    """Feeds micro-batches to every configured model and recomputes touched users' lists.

    Parameters
    ----------
    models
        Model name -> model. A popularity model is added for the fallback list
        when none is configured.
    default_model
        The model whose lists the plain per-user key serves.
    top_n
        Length of each list.
    """

    def __init__(
        self,
        models: Mapping[str, OnlineRecommender],
        default_model: str,
        top_n: int = 20,
        fallback: Popularity | None = None,
    ) -> None:
        if default_model not in models:
            raise ValueError(f"default model {default_model!r} is not among the models {sorted(models)}")
        self.models = dict(models)
        self.default_model = default_model
        self.top_n = top_n
        configured = self.models.get(FALLBACK_MODEL)
        self._fallback_is_extra = not isinstance(configured, Popularity)
        if not self._fallback_is_extra:
            self.fallback_model: Popularity = configured  # type: ignore[assignment]
        else:
            self.fallback_model = fallback if fallback is not None else Popularity()

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        default_model: str,
        top_n: int = 20,
        params: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> RecommendationPipeline:
        """Create the named models with their default (or given) hyperparameters."""
        params = params or {}
        return cls({n: models.create(n, **dict(params.get(n, {}))) for n in names}, default_model, top_n)

    def all_models(self) -> dict[str, OnlineRecommender]:
        """Every model that learns, including an extra fallback model."""
        out = dict(self.models)
        if self._fallback_is_extra:
            out[EXTRA_FALLBACK] = self.fallback_model
        return out

    @classmethod
    def from_saved(
        cls, saved: Mapping[str, OnlineRecommender], default_model: str, top_n: int = 20
    ) -> RecommendationPipeline:
        """Rebuild a pipeline from :meth:`all_models` as saved in a checkpoint."""
        saved = dict(saved)
        fallback = saved.pop(EXTRA_FALLBACK, None)
        if fallback is not None and not isinstance(fallback, Popularity):
            raise TypeError(f"the saved fallback model is a {type(fallback).__name__}, not Popularity")
        return cls(saved, default_model, top_n, fallback)

    def process(self, events: Sequence[Event], ingest_ts: Sequence[float | None] | None = None) -> BatchOutput:
        """Learn from ``events`` (arrival order) and recommend for every user they touched.

        ``ingest_ts`` gives, per event, when it reached Kafka; the newest per
        user is carried into that user's list document. A :class:`ForgetUser`
        event removes the user from every model at its place in the order:
        events before it are forgotten, events after it start afresh.
        """
        t0 = time.perf_counter()
        event_ts: dict[str, float] = {}
        newest_ingest: dict[str, float] = {}
        forgotten: list[str] = []
        start = 0
        for j, event in enumerate([*events, None]):
            if event is not None and not isinstance(event, ForgetUser):
                continue
            self._learn_segment(events, range(start, j), ingest_ts, event_ts, newest_ingest)
            if event is not None:
                self.forget_user(event.user_id)
                event_ts.pop(event.user_id, None)
                newest_ingest.pop(event.user_id, None)
                forgotten.append(event.user_id)
            start = j + 1
        users = list(event_ts)
        t1 = time.perf_counter()
        lists = {name: model.recommend(users, k=self.top_n) for name, model in self.models.items()} if users else {}
        fallback = self.fallback_model.recommend(["*"], k=self.top_n, exclude_seen=False)
        t2 = time.perf_counter()
        return BatchOutput(
            users=users,
            lists=lists,
            fallback=fallback,
            event_ts=event_ts,
            ingest_ts=newest_ingest,
            forgotten=[u for u in dict.fromkeys(forgotten) if u not in event_ts],
            n_events=len(events),
            learn_seconds=t1 - t0,
            recommend_seconds=t2 - t1,
        )

    def _learn_segment(
        self,
        events: Sequence[Event],
        positions: range,
        ingest_ts: Sequence[float | None] | None,
        event_ts: dict[str, float],
        newest_ingest: dict[str, float],
    ) -> None:
        item_updates = [events[j] for j in positions if isinstance(events[j], ItemUpdate)]
        if item_updates:
            self.add_catalogue(item_updates)  # type: ignore[arg-type]
        acts = [j for j in positions if isinstance(events[j], Interaction | Rating)]
        if not acts:
            return
        batch = to_interactions(events[j] for j in acts)  # type: ignore[misc]
        for model in self.all_models().values():
            model.learn(batch)
        for j in acts:
            e = events[j]
            u = e.user_id  # type: ignore[union-attr]
            if e.timestamp > event_ts.get(u, float("-inf")):
                event_ts[u] = e.timestamp
            if ingest_ts is not None and ingest_ts[j] is not None:
                newest_ingest[u] = max(newest_ingest.get(u, 0.0), float(ingest_ts[j]))  # type: ignore[arg-type]

    def add_catalogue(self, updates: Sequence[ItemUpdate]) -> None:
        """Add catalogue entries (ids, tags, titles) to every model."""
        ids = [e.item_id for e in updates]
        tags = [e.tags for e in updates]
        titles = [e.title for e in updates]
        for model in self.all_models().values():
            model.add_items(ids, tags=tags, titles=titles)

    def forget_user(self, user_id: str) -> None:
        """Remove ``user_id`` from every model (privacy requests)."""
        for model in self.all_models().values():
            model.forget_user(user_id)
