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
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import models
from models import OnlineRecommender, Recommendations
from models.adaptive_popularity import AdaptivePopularity
from models.popularity import Popularity
from streamrec.events import Event, ForgetUser, Interaction, ItemUpdate, Rating, to_interactions
from streamrec.experiments import Experiment, team_draft
from streamrec.exposures import ExposureJoin
from streamrec.live_quality import LiveQuality
from streamrec.serving.availability import CatalogueControl, UserExclusions
from streamrec.serving.similar import gives_similar_items, similar_items
from streamrec.settings import repeats_mode
from streamrec.store import RecList

__all__ = ["BatchOutput", "RecommendationPipeline"]


def _without(recs: Recommendations, unavailable: set[str], k: int) -> Recommendations:
    """``recs`` without the ``unavailable`` items, each list cut to ``k``."""
    if not unavailable:
        if all(len(items) <= k for items in recs.items):
            return recs
        keep_all = [list(range(min(k, len(items)))) for items in recs.items]
    else:
        keep_all = [[j for j, item in enumerate(items) if item not in unavailable][:k] for items in recs.items]
    reasons = recs.reasons
    return Recommendations(
        recs.users,
        [[items[j] for j in keep] for items, keep in zip(recs.items, keep_all, strict=True)],
        [[scores[j] for j in keep] for scores, keep in zip(recs.scores, keep_all, strict=True)],
        None if reasons is None else [[r[j] for j in keep] for r, keep in zip(reasons, keep_all, strict=True)],
    )


def _feedback(event: Event) -> bool:
    """Whether ``event`` is negative feedback (``not_interested``)."""
    return isinstance(event, Interaction) and event.is_feedback


def _seed(user: str, batch: int) -> int:
    """The coin of an interleaved list: a new one at every batch, the same on every replay of the same batches."""
    return zlib.crc32(f"{batch}:{user}".encode())


#: The model whose list users without history get, unless ``STREAMREC_FALLBACK`` names another:
#: popularity under the decay (none, an hour, a day, a week, a month) that has hit most lately. On the
#: cold events of both development logs it beats plain counts and the 7-day decay (README, Models).
DEFAULT_FALLBACK = "adaptive_popularity"
#: Models that can serve the fallback list (they rank every user alike).
FALLBACK_MODELS = ("adaptive_popularity", "popularity")
FALLBACK_MODEL = "popularity"  # the fallback before the adaptive one (STREAMREC_FALLBACK=popularity)
EXTRA_FALLBACK = "_fallback"  # name of the fallback model when the configured models do not hold it


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
    #: Per model: (seconds in ``learn``, seconds in ``recommend``) for this batch.
    model_seconds: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: Tags of every item in the lists, when the lists were made (written beside each item)
    item_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Category -> its popularity list, when they were due (:meth:`RecommendationPipeline.category_lists`)
    categories: dict[str, Recommendations] | None = None
    #: Item -> (similar items, similarities) of the items touched since the last time, when they were due
    similar: dict[str, tuple[list[str], list[float]]] | None = None
    #: The model the similar items come from
    similar_model: str | None = None
    #: Live quality of the lists served before this batch, scored with its events (:mod:`streamrec.live_quality`)
    quality: dict[str, float] = field(default_factory=dict)
    #: With an experiment: user -> (variant, the list its plain key serves: a model's, or the variant's own)
    served_as: dict[str, tuple[str, str]] = field(default_factory=dict)

    def _tags(self, items: Sequence[str]) -> list[list[str]]:
        get = self.item_tags.get
        return [list(get(item, ())) for item in items]

    def rec_lists(self, default_model: str, computed_at: float | None = None) -> list[tuple[RecList, bool]]:
        """The lists as Redis documents, paired with whether they are the default model's."""
        now = time.time() if computed_at is None else computed_at
        out: list[tuple[RecList, bool]] = []
        served_as = self.served_as
        for model_name, recs in self.lists.items():
            reasons = recs.reasons
            for n, user in enumerate(recs.users):
                variant, plain = served_as.get(user, (None, default_model))
                doc = RecList(
                    user_id=user,
                    model=model_name,
                    items=recs.items[n],
                    scores=recs.scores[n],
                    computed_at=now,
                    event_ts=self.event_ts.get(user),
                    ingest_ts=self.ingest_ts.get(user),
                    reasons=reasons[n] if reasons is not None else None,
                    tags=self._tags(recs.items[n]),
                    variant=variant if model_name == plain else None,
                )
                out.append((doc, model_name == plain))
        return out

    def similar_docs(self, computed_at: float | None = None) -> dict[str, RecList]:
        """The similar-items lists as documents (empty when they were not due in this batch)."""
        now = time.time() if computed_at is None else computed_at
        return {
            item: RecList(item, self.similar_model or "", items, scores, computed_at=now, tags=self._tags(items))
            for item, (items, scores) in (self.similar or {}).items()
        }

    def category_docs(self, computed_at: float | None = None) -> dict[str, RecList]:
        """The category lists as documents (empty when they were not due in this batch)."""
        now = time.time() if computed_at is None else computed_at
        return {
            tag: RecList(
                "", FALLBACK_MODEL, recs.items[0], recs.scores[0], computed_at=now, tags=self._tags(recs.items[0])
            )
            for tag, recs in (self.categories or {}).items()
        }

    def fallback_list(self, computed_at: float | None = None) -> RecList | None:
        if self.fallback is None:
            return None
        return RecList(
            user_id="",
            model=FALLBACK_MODEL,
            items=self.fallback.items[0],
            scores=self.fallback.scores[0],
            computed_at=time.time() if computed_at is None else computed_at,
            tags=self._tags(self.fallback.items[0]),
        )


class RecommendationPipeline:
    """Feeds micro-batches to every configured model and recomputes touched users' lists.

    Parameters
    ----------
    models
        Model name -> model.
    fallback
        The model of the fallback list (users without history): a name in
        :data:`FALLBACK_MODELS` (the configured model of that name serves it,
        else one is added) or a model that ranks every user alike.
    repeats
        Whether a user's lists may hold items they interacted with before
        (repeat consumption: on click logs a third of the events re-click a
        seen item): ``"off"`` (the default: seen items are left out, as
        everywhere else), ``"on"``, or ``"unbought"``: seen items may come
        back unless the user bought them (a ``purchase`` event; a shop's
        "recently viewed"). Bought items are kept with the user's other
        exclusions (:attr:`user_exclusions`), so they move with the user.
        ``True`` / ``False`` mean ``"on"`` / ``"off"``.
    default_model
        The model whose lists the plain per-user key serves.
    top_n
        Length of each list (the worker keeps lists deeper than a page: ``STREAMREC_LIST_DEPTH``).

    Items the catalogue made unavailable (:attr:`control`) are left out of new
    lists: each model is asked for ``top_n`` plus as many more as there are
    unavailable items (at most ``top_n`` more), and those are dropped.
    """

    def __init__(
        self,
        models: Mapping[str, OnlineRecommender],
        default_model: str,
        top_n: int = 20,
        fallback: OnlineRecommender | str = DEFAULT_FALLBACK,
        live: LiveQuality | None = None,
        experiment: Experiment | None = None,
        exposures: ExposureJoin | None = None,
        repeats: bool | str = "off",
    ) -> None:
        if default_model not in models:
            raise ValueError(f"default model {default_model!r} is not among the models {sorted(models)}")
        self.models = dict(models)
        self.default_model = default_model
        self.top_n = top_n
        self.repeats = repeats_mode(repeats)
        self._learn_time: dict[str, float] = {}
        self._batches = 0
        self.use(live, experiment, exposures)
        #: availability and tags of the catalogue's items (followed from catalogue updates)
        self.control = CatalogueControl()
        #: items never to put in a user's lists (their "not interested" and excluded items)
        self.user_exclusions = UserExclusions()
        self._category_rows: tuple[int, int, dict[str, np.ndarray]] | None = None  # (tags version, n items, rows)
        #: the model whose neighbours are the similar items (the first that gives them), and the items to refresh
        self.similar_model = next((n for n, m in self.models.items() if gives_similar_items(m)), None)
        self._similar_touched: dict[str, None] = {}
        if isinstance(fallback, str):
            if fallback not in FALLBACK_MODELS:
                raise ValueError(f"the fallback must be one of {', '.join(FALLBACK_MODELS)}, not {fallback!r}")
            configured = self.models.get(fallback)
            fallback = configured if configured is not None else models.create(fallback)
        if fallback.personalized:
            raise ValueError(f"the fallback model must rank every user alike (popularity), not {fallback.name}")
        self._fallback_is_extra = not any(m is fallback for m in self.models.values())
        #: the model whose list users without history get (``browse_scores()`` orders the category lists)
        self.fallback_model: Popularity | AdaptivePopularity = fallback  # type: ignore[assignment]

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        default_model: str,
        top_n: int = 20,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        fallback: str = DEFAULT_FALLBACK,
        repeats: bool | str = "off",
    ) -> RecommendationPipeline:
        """Create the named models with their default (or given) hyperparameters, and the fallback's."""
        params = params or {}
        created = {n: models.create(n, **dict(params.get(n, {}))) for n in names}
        fallback_model = created.get(fallback) or models.create(fallback, **dict(params.get(fallback, {})))
        return cls(created, default_model, top_n, fallback_model, repeats=repeats)

    def use(
        self,
        live: LiveQuality | None = None,
        experiment: Experiment | None = None,
        exposures: ExposureJoin | None = None,
    ) -> None:
        """Turn on live evaluation, an experiment and the exposure join (also after a pipeline is restored).

        ``live`` scores every event against the lists served before it, per model; ``experiment`` splits
        users between variants (their plain key serves their variant's list); ``exposures`` joins what
        applications showed with the users' later events. ``None`` turns each off.
        """
        if experiment is not None:
            missing = [m for m in experiment.models if m not in self.models]
            if missing:
                raise ValueError(f"experiment {experiment.name!r} uses models that are not configured: {missing}")
        self.live: LiveQuality | None = live
        self.experiment: Experiment | None = experiment
        self.exposures: ExposureJoin | None = exposures

    def all_models(self) -> dict[str, OnlineRecommender]:
        """Every model that learns, including an extra fallback model."""
        out = dict(self.models)
        if self._fallback_is_extra:
            out[EXTRA_FALLBACK] = self.fallback_model
        return out

    @classmethod
    def from_saved(
        cls,
        saved: Mapping[str, OnlineRecommender],
        default_model: str,
        top_n: int = 20,
        repeats: bool | str = "off",
    ) -> RecommendationPipeline:
        """Rebuild a pipeline from :meth:`all_models` as saved in a checkpoint."""
        saved = dict(saved)
        fallback = saved.pop(EXTRA_FALLBACK, None)
        if fallback is None:  # a configured model served it (checkpoints before the adaptive fallback: popularity)
            name = next((n for n in FALLBACK_MODELS if n in saved), DEFAULT_FALLBACK)
            return cls(saved, default_model, top_n, name, repeats=repeats)
        if fallback.personalized:
            raise TypeError(
                f"the saved fallback model is a {type(fallback).__name__}, which does not rank everyone alike"
            )
        return cls(saved, default_model, top_n, fallback, repeats=repeats)

    def process(
        self,
        events: Sequence[Event],
        ingest_ts: Sequence[float | None] | None = None,
        with_categories: bool = False,
        now: float | None = None,
        with_similar: bool = False,
    ) -> BatchOutput:
        """Learn from ``events`` (arrival order) and recommend for every user they touched.

        ``ingest_ts`` gives, per event, when it reached Kafka; the newest per
        user is carried into that user's list document. A :class:`ForgetUser`
        event removes the user from every model at its place in the order:
        events before it are forgotten, events after it start afresh.
        """
        t0 = time.perf_counter()
        quality = {}
        if self.live is not None:  # before anything is learned: the lists as they were served
            quality = self.live.score(events, self.models[self.default_model].has_history)
        if self.exposures is not None:
            default = self.models[self.default_model]
            experiment = self.experiment
            quality.update(
                self.exposures.observe(
                    events,
                    default.has_history,
                    default.item_index.__contains__,
                    (lambda u: experiment.assign(u).name) if experiment is not None else None,
                )
            )
        self._learn_time = dict.fromkeys(self.all_models(), 0.0)
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
        now = time.time() if now is None else now
        unavailable = self.control.unavailable(now)
        k = self.top_n + min(len(unavailable), self.top_n)  # room for the unavailable items dropped below
        of = self.user_exclusions.of
        exclude = {u: items for u in users if (items := of(u))}
        lists = {}
        spent: dict[str, tuple[float, float]] = {}
        for name, model in self.models.items():
            started = time.perf_counter()
            if users:
                recs = model.recommend(users, k=k, exclude_seen=self.repeats == "off", exclude=exclude or None)
                lists[name] = _without(recs, unavailable, self.top_n)
            spent[name] = (self._learn_time.get(name, 0.0), time.perf_counter() - started)
        fallback = _without(self.fallback_model.recommend(["*"], k=k, exclude_seen=False), unavailable, self.top_n)
        categories = self.category_lists(now, unavailable) if with_categories else None
        similar = self.similar_lists(unavailable) if with_similar else None
        served_as: dict[str, tuple[str, str]] = {}
        if self.experiment is not None and users:
            served_as = self._serve_variants(users, lists)
        item_tags = self._tags_of([*lists.values(), fallback, *(categories or {}).values()], similar)
        if self.live is not None:
            self.live.served(lists, fallback.items[0])
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
            model_seconds=spent,
            item_tags=item_tags,
            categories=categories,
            similar=similar,
            similar_model=self.similar_model,
            quality=quality,
            served_as=served_as,
        )

    def _serve_variants(self, users: Sequence[str], lists: dict[str, Recommendations]) -> dict[str, tuple[str, str]]:
        """Assign ``users`` to the experiment's variants; add each interleaved variant's lists to ``lists``."""
        assert self.experiment is not None
        served_as: dict[str, tuple[str, str]] = {}
        interleaved: dict[str, list[str]] = {}
        self._batches += 1
        for user in users:
            variant = self.experiment.assign(user)
            if variant.interleaved:
                interleaved.setdefault(variant.name, []).append(user)
                served_as[user] = (variant.name, variant.name)
            else:
                served_as[user] = (variant.name, variant.models[0])
        teams: dict[str, dict[str, list[int]]] = {}
        for name, members in interleaved.items():
            a, b = next(v for v in self.experiment.variants if v.name == name).models
            first, second = lists[a].as_dict(), lists[b].as_dict()
            rows = [
                team_draft(first.get(u, []), second.get(u, []), self.top_n, seed=_seed(u, self._batches))
                for u in members
            ]
            lists[name] = Recommendations(
                members, [items for items, _ in rows], [[float(-j) for j in range(len(items))] for items, _ in rows]
            )
            teams[name] = {u: t for u, (_, t) in zip(members, rows, strict=True)}
        if self.live is not None and teams:
            self.live.teams_served(teams)
        return served_as

    def _tags_of(
        self, recs: Sequence[Recommendations], similar: Mapping[str, tuple[list[str], list[float]]] | None = None
    ) -> dict[str, tuple[str, ...]]:
        """The tags of every item in ``recs`` and ``similar`` (written beside each item)."""
        out: dict[str, tuple[str, ...]] = {}
        tags = self.control.tags
        lists = [items for r in recs for items in r.items] + [items for items, _ in (similar or {}).values()]
        for items in lists:
            for item in items:
                if item not in out:
                    out[item] = tags(item)
        return out

    def global_lists(self, now: float | None = None) -> BatchOutput:
        """The fallback and the category lists alone, with no events (after an item is made available again).

        Examples
        --------
        >>> from streamrec.events import Interaction
        >>> pipe = RecommendationPipeline.from_names(["popularity"], "popularity", top_n=2)
        >>> _ = pipe.process([Interaction("u", "a", 1.0), Interaction("v", "b", 2.0)])
        >>> pipe.global_lists().fallback.items   # the newer event weighs more (time decay)
        [['b', 'a']]
        """
        now = time.time() if now is None else now
        unavailable = self.control.unavailable(now)
        k = self.top_n + min(len(unavailable), self.top_n)
        fallback = _without(self.fallback_model.recommend(["*"], k=k, exclude_seen=False), unavailable, self.top_n)
        categories = self.category_lists(now, unavailable)
        return BatchOutput(
            users=[],
            lists={},
            fallback=fallback,
            item_tags=self._tags_of([fallback, *categories.values()]),
            categories=categories,
        )

    #: Most similar-items lists refreshed in one batch (the rest wait for the next one).
    SIMILAR_PER_BATCH = 2000

    def similar_lists(self, unavailable: set[str] | None = None) -> dict[str, tuple[list[str], list[float]]]:
        """The similar items of the items touched since the last call (at most :attr:`SIMILAR_PER_BATCH`)."""
        if self.similar_model is None or not self._similar_touched:
            return {}
        touched = list(self._similar_touched)[: self.SIMILAR_PER_BATCH]
        for item in touched:
            del self._similar_touched[item]
        return similar_items(self.models[self.similar_model], touched, self.top_n, unavailable)

    def category_lists(
        self, now: float | None = None, unavailable: set[str] | None = None
    ) -> dict[str, Recommendations]:
        """Per category (tag), its available items by the fallback model's ``browse_scores()``, ``top_n`` deep.

        One list per category, never per user and category; the rows of each
        category are rebuilt only when some item's tags changed.
        """
        model = self.fallback_model
        if unavailable is None:
            unavailable = self.control.unavailable(time.time() if now is None else now)
        n = model.n_items
        cached = self._category_rows
        if cached is None or cached[0] != self.control.tags_version or cached[1] != n:
            rows: dict[str, np.ndarray] = {}
            for tag, items in self.control.items_by_tag().items():
                found = model.item_index.lookup(items)
                rows[tag] = np.sort(found[found >= 0])
            cached = self._category_rows = (self.control.tags_version, n, rows)
        scores = model.browse_scores()
        ids = model.item_index.ids
        k = self.top_n + min(len(unavailable), self.top_n)
        out: dict[str, Recommendations] = {}
        for tag, members in cached[2].items():
            members = members[members < len(scores)]
            if not len(members):
                continue
            values = scores[members]
            top = (
                members[np.argsort(-values, kind="stable")[:k]]
                if len(members) > k
                else members[np.argsort(-values, kind="stable")]
            )
            items = [ids[j] for j in top.tolist()]
            keep = [j for j, item in enumerate(items) if item not in unavailable][: self.top_n]
            out[tag] = Recommendations(["*"], [[items[j] for j in keep]], [[float(scores[top[j]]) for j in keep]])
        return out

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
        acts = [j for j in positions if isinstance(events[j], Interaction | Rating) and not _feedback(events[j])]
        negatives = [events[j] for j in positions if _feedback(events[j])]
        if negatives:  # "not interested": taught to the models that learn negatives, never as a positive
            self._learn_negatives(negatives)  # type: ignore[arg-type]
        if not acts:
            return
        batch = to_interactions(events[j] for j in acts)  # type: ignore[misc]
        if self.repeats == "unbought":
            for j in acts:
                e = events[j]
                if isinstance(e, Interaction) and e.event_type == "purchase":
                    self.user_exclusions.add(e.user_id, [e.item_id], kind="bought")
        if self.similar_model is not None:
            self._similar_touched.update(dict.fromkeys(batch.items.tolist()))
        for name, model in self.all_models().items():
            started = time.perf_counter()
            model.learn(batch)
            self._learn_time[name] = self._learn_time.get(name, 0.0) + time.perf_counter() - started
        for j in acts:
            e = events[j]
            u = e.user_id  # type: ignore[union-attr]
            if e.timestamp > event_ts.get(u, float("-inf")):
                event_ts[u] = e.timestamp
            if ingest_ts is not None and ingest_ts[j] is not None:
                newest_ingest[u] = max(newest_ingest.get(u, 0.0), float(ingest_ts[j]))  # type: ignore[arg-type]

    def _learn_negatives(self, events: Sequence[Interaction]) -> None:
        batch = models.Interactions.from_columns(
            [e.user_id for e in events], [e.item_id for e in events], [e.timestamp for e in events]
        )
        for name, model in self.all_models().items():
            if model.learns_negatives:
                started = time.perf_counter()
                model.learn_negatives(batch)
                self._learn_time[name] = self._learn_time.get(name, 0.0) + time.perf_counter() - started

    def add_catalogue(self, updates: Sequence[ItemUpdate]) -> None:
        """Add catalogue entries (ids, tags, titles) to every model; follow their availability and tags."""
        self.control.apply(updates)
        ids = [e.item_id for e in updates]
        tags = [e.tags for e in updates]
        titles = [e.title for e in updates]
        for model in self.all_models().values():
            model.add_items(ids, tags=tags, titles=titles)

    def forget_user(self, user_id: str) -> None:
        """Remove ``user_id`` from every model (privacy requests)."""
        self.user_exclusions.forget_user(user_id)
        if self.live is not None:
            self.live.forget(user_id)
        if self.exposures is not None:
            self.exposures.forget(user_id)
        for model in self.all_models().values():
            model.forget_user(user_id)
