"""Event logs for the backtest, in time order: files, MovieLens 100K, Kafka topics.

:class:`EventLog` holds the interactions and ratings of a log as columns,
stably sorted by timestamp (events with equal timestamps keep their order in
the source), and the catalogue updates (items with content tags) placed in that
order: ``catalogue_positions[n]`` is the number of events that come before
update ``n``. Requests to forget a user are counted and skipped.

Examples
--------
>>> from streamrec.events import Interaction, ItemUpdate, Rating
>>> log = EventLog.from_events([
...     Interaction("u1", "b", 20.0, "click"),
...     ItemUpdate("c", 15.0, tags=("new",)),
...     Rating("u2", "a", 4.0, 10.0),
... ])
>>> log.users.tolist(), log.items.tolist(), log.event_types.tolist()
(['u2', 'u1'], ['a', 'b'], ['rating', 'click'])
>>> log.catalogue_items.tolist(), log.catalogue_positions.tolist()   # after the rating at t=10
(['c'], [1])
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.base import Interactions
from streamrec.admission import EventTimeGuard
from streamrec.eventlog import (
    ReadReport,
    read_events,
    read_movielens_items,
    read_movielens_ratings,
    read_movielens_users,
)
from streamrec.events import (
    DEFAULT_LIMITS,
    EVENT_WEIGHTS,
    Event,
    Exclusion,
    ForgetUser,
    Interaction,
    InvalidEvent,
    ItemUpdate,
    Limits,
    Rating,
    decode,
)

__all__ = [
    "TOPIC_KINDS",
    "EventLog",
    "display_path",
    "kind_for_topic",
    "load_log",
    "movielens_log",
    "read_kafka_topic",
]

#: Topic name suffix (``<prefix>.<suffix>``, see :meth:`Settings.topic`) -> event kind.
TOPIC_KINDS = {"interactions": "interaction", "ratings": "rating", "items": "item", "forget": "forget"}


@dataclass(frozen=True)
class EventLog:
    """Interactions and ratings in time order (columns), plus catalogue updates.

    ``event_types`` holds the interaction type (``view``, ``click``, ...) or
    ``"rating"`` for a rating; ``ratings`` is ``NaN`` for events without one.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    event_types: np.ndarray
    ratings: np.ndarray
    weights: np.ndarray
    contexts: tuple[Any, ...] | None = None
    catalogue_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    catalogue_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    catalogue_tags: tuple[tuple[str, ...], ...] = ()
    catalogue_titles: tuple[str | None, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)
    #: How the log's event times were bounded (the live worker refuses events far ahead of their arrival);
    #: files carry no arrival times, so their events are replayed as recorded.
    event_time_rule: str = "none: a file log carries no arrival times; events replayed as recorded"
    source: str = ""

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_events(cls, events: Iterable[Event], source: str = "") -> EventLog:
        """Collect records from any reader and put them in time order (stable)."""
        users: list[str] = []
        items: list[str] = []
        ts: list[float] = []
        types: list[str] = []
        ratings: list[float] = []
        contexts: list[Any] = []
        any_context = False
        cat_ids: list[str] = []
        cat_tags: list[tuple[str, ...]] = []
        cat_titles: list[str | None] = []
        cat_ts: list[float] = []
        cat_after: list[int] = []  # events before the update in the source
        forgotten = 0
        nan = float("nan")
        controls = 0
        for e in events:
            if isinstance(e, ItemUpdate):
                cat_ids.append(e.item_id)
                cat_tags.append(tuple(e.tags))
                cat_titles.append(e.title)
                cat_ts.append(e.timestamp)
                cat_after.append(len(users))
                continue
            if isinstance(e, ForgetUser):
                forgotten += 1
                continue
            if isinstance(e, Exclusion) or (isinstance(e, Interaction) and e.is_feedback):
                controls += 1  # what may be served, not what a user wanted: no model learns it
                continue
            users.append(e.user_id)
            items.append(e.item_id)
            ts.append(e.timestamp)
            if isinstance(e, Rating):
                types.append("rating")
                ratings.append(e.rating)
            else:
                types.append(e.event_type)
                ratings.append(nan)
            contexts.append(e.context)
            any_context = any_context or bool(e.context)
        n, n_cat = len(users), len(cat_ids)
        ts_arr = np.asarray(ts, dtype=np.float64)
        # one stable order over events and catalogue updates: by timestamp, then source order
        # (an update sorts before the events that follow it in the source)
        all_ts = np.concatenate([ts_arr, np.asarray(cat_ts, dtype=np.float64)])
        source_order = np.concatenate([2 * np.arange(n), 2 * np.asarray(cat_after, dtype=np.int64) - 1])
        order = np.lexsort((source_order, all_ts))
        is_event = order < n
        events_before = np.cumsum(is_event) - is_event
        event_order = order[is_event]
        cat_order = order[~is_event] - n
        type_arr = np.asarray(types, dtype=object)[event_order] if n else np.zeros(0, dtype=object)
        weights = np.array([EVENT_WEIGHTS.get(t, 1.0) for t in type_arr.tolist()], dtype=np.float32)
        return cls(
            users=np.asarray(users, dtype=object)[event_order] if n else np.zeros(0, dtype=object),
            items=np.asarray(items, dtype=object)[event_order] if n else np.zeros(0, dtype=object),
            timestamps=ts_arr[event_order],
            event_types=type_arr,
            ratings=np.asarray(ratings, dtype=np.float32)[event_order],
            weights=weights,
            contexts=tuple(contexts[j] for j in event_order.tolist()) if any_context else None,
            catalogue_positions=events_before[~is_event].astype(np.int64),
            catalogue_items=np.asarray(cat_ids, dtype=object)[cat_order] if n_cat else np.zeros(0, dtype=object),
            catalogue_tags=tuple(cat_tags[j] for j in cat_order.tolist()),
            catalogue_titles=tuple(cat_titles[j] for j in cat_order.tolist()),
            skipped={
                **({"forget": forgotten} if forgotten else {}),
                **({"not_interested_or_exclusion": controls} if controls else {}),
            },
            source=source,
        )

    def interactions(self, start: int = 0, stop: int | None = None) -> Interactions:
        """Events ``start:stop`` as a model batch (views of these columns, no copy)."""
        part = slice(start, stop)
        return Interactions(
            users=self.users[part],
            items=self.items[part],
            timestamps=self.timestamps[part],
            weights=self.weights[part],
            ratings=self.ratings[part],
            contexts=None if self.contexts is None else self.contexts[part],
        )

    def head(self, n: int) -> EventLog:
        """The first ``n`` events, with the catalogue updates that come before the last of them."""
        keep = self.catalogue_positions < n if n < len(self) else np.ones(len(self.catalogue_items), dtype=bool)
        return EventLog(
            users=self.users[:n],
            items=self.items[:n],
            timestamps=self.timestamps[:n],
            event_types=self.event_types[:n],
            ratings=self.ratings[:n],
            weights=self.weights[:n],
            contexts=None if self.contexts is None else self.contexts[:n],
            catalogue_positions=self.catalogue_positions[keep],
            catalogue_items=self.catalogue_items[keep],
            catalogue_tags=tuple(t for t, k in zip(self.catalogue_tags, keep.tolist(), strict=True) if k),
            catalogue_titles=tuple(t for t, k in zip(self.catalogue_titles, keep.tolist(), strict=True) if k),
            skipped=dict(self.skipped),
            source=self.source,
            event_time_rule=self.event_time_rule,
        )

    def describe(self) -> dict[str, Any]:
        """Counts and time span, for the report."""
        span = (float(self.timestamps.min()), float(self.timestamps.max())) if len(self) else (None, None)
        types, counts = np.unique(self.event_types, return_counts=True) if len(self) else ([], [])
        return {
            "source": self.source,
            "events": len(self),
            "users": len(np.unique(self.users)) if len(self) else 0,
            "items": len(np.unique(np.concatenate([self.items, self.catalogue_items]))),
            "catalogue_updates": len(self.catalogue_items),
            "event_types": {str(t): int(c) for t, c in zip(types, counts, strict=True)},
            "first_timestamp": span[0],
            "last_timestamp": span[1],
            "skipped": dict(self.skipped),
            "event_time_rule": self.event_time_rule,
        }


def display_path(path: str | Path) -> str:
    """``path`` as a report may name it: relative to the working folder when inside it, else its last two parts.

    Examples
    --------
    >>> display_path("logs/clicks.jsonl")
    'logs/clicks.jsonl'
    >>> display_path("/somewhere/else/ml-100k/u.data")
    'ml-100k/u.data'
    """
    p = Path(path)
    if not p.is_absolute():
        return str(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(Path(*p.parts[-2:]))


def load_log(
    paths: Sequence[str | Path],
    fmt: str | None = None,
    kind: str | None = None,
    report: ReadReport | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> EventLog:
    """Read JSON-lines, CSV or MovieLens ``u.data`` files into one time-ordered log.

    Invalid lines are skipped and counted in ``report`` (see
    :func:`streamrec.eventlog.read_events`).
    """
    report = report if report is not None else ReadReport()

    def chained() -> Iterator[Event]:
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no event log at {path}")
            yield from read_events(path, fmt=fmt, kind=kind, report=report, limits=limits)

    log = EventLog.from_events(chained(), source=", ".join(display_path(p) for p in paths))
    if report.invalid:
        log.skipped["invalid"] = report.invalid
    return log


def movielens_log(folder: str | Path, report: ReadReport | None = None) -> EventLog:
    """MovieLens 100K: the ``u.item`` catalogue with genre tags first, then ``u.data`` ratings.

    When the folder has ``u.user``, each rating's context holds its user's
    age, gender and occupation.
    """
    folder = Path(folder)
    report = report if report is not None else ReadReport()
    users = read_movielens_users(folder / "u.user") if (folder / "u.user").is_file() else None

    def chained() -> Iterator[Event]:
        yield from read_movielens_items(folder / "u.item")
        yield from read_movielens_ratings(folder / "u.data", report=report, users=users)

    log = EventLog.from_events(chained(), source="MovieLens 100K (ml-100k/u.data)")
    if report.invalid:
        log.skipped["invalid"] = report.invalid
    return log


def kind_for_topic(topic: str) -> str | None:
    """The event kind a topic carries, from its name's last dotted part (``None`` if unknown).

    Examples
    --------
    >>> kind_for_topic("streamrec.ratings"), kind_for_topic("clicks")
    ('rating', None)
    """
    return TOPIC_KINDS.get(topic.rsplit(".", 1)[-1])


def read_kafka_topic(
    bootstrap: str,
    topic: str,
    kind: str,
    from_timestamp: float | None = None,
    *,
    report: ReadReport | None = None,
    limits: Limits = DEFAULT_LIMITS,
    consumer: Any = None,
    poll_timeout_ms: int = 500,
    idle_timeout: float = 30.0,
    guard: EventTimeGuard | None = None,
) -> Iterator[Event]:
    """Yield the events of a Kafka topic from the beginning (or a time) to its end at the start.

    The end offset of every partition is captured when reading starts, so a
    topic that keeps growing still gives a finite log. Partitions are read
    together; their order is restored by :class:`EventLog` (sort by timestamp).
    Messages that fail validation are counted in ``report`` and skipped.

    Parameters
    ----------
    bootstrap
        Broker addresses, comma separated.
    topic, kind
        The topic and the kind of event it carries (``interaction``, ``rating``, ``item``).
    from_timestamp
        Seconds since the epoch: start in each partition at the first message
        whose Kafka timestamp is at or after it (``offsets_for_times``); a
        partition with no such message contributes nothing. ``None``: from the
        beginning.
    consumer
        A ready ``KafkaConsumer``-like object to use instead of creating one
        (tests); it is not closed.
    idle_timeout
        Seconds without any message before giving up with :class:`TimeoutError`.
    guard
        The live worker's event-time rule (:class:`~streamrec.admission.EventTimeGuard`), applied with
        each message's Kafka timestamp as its arrival: refused events are counted in ``report`` with
        their reason and skipped, clamped ones replayed at their arrival, as the worker would have.
    """
    from kafka import TopicPartition

    report = report if report is not None else ReadReport()
    own = consumer is None
    if own:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="streamrec-backtest",
        )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"topic {topic!r} does not exist on {bootstrap} (or has no partitions)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        if from_timestamp is None:
            consumer.seek_to_beginning(*tps)
            start = consumer.beginning_offsets(tps)
        else:
            found = consumer.offsets_for_times({tp: int(from_timestamp * 1000) for tp in tps})
            start = {}
            for tp in tps:
                hit = found.get(tp)
                start[tp] = end[tp] if hit is None else hit.offset
                consumer.seek(tp, start[tp])
        remaining = {tp for tp in tps if start[tp] < end[tp]}
        idle_since = time.monotonic()
        while remaining:
            polled = consumer.poll(timeout_ms=poll_timeout_ms)
            if not polled:
                if time.monotonic() - idle_since > idle_timeout:
                    raise TimeoutError(f"no message from {topic!r} for {idle_timeout:.0f} s before its end offsets")
                continue
            idle_since = time.monotonic()
            for tp, messages in polled.items():
                if tp not in remaining:
                    continue
                for message in messages:
                    if message.offset >= end[tp]:
                        break
                    report.lines += 1
                    try:
                        event = decode(message.value, kind, limits)  # type: ignore[arg-type]
                    except InvalidEvent as exc:
                        report.reject(message.offset, str(exc), repr(message.value)[:200])
                        continue
                    if guard is not None and message.timestamp is not None and message.timestamp >= 0:
                        checked = guard.apply(event, message.timestamp / 1000.0)
                        if isinstance(checked, str):
                            report.reject(message.offset, checked, repr(message.value)[:200])
                            continue
                        event = checked
                    report.valid += 1
                    yield event
            for tp in list(remaining):
                if consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
    finally:
        if own:
            consumer.close()
