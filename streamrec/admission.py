"""Admission of decoded events: what a bad or hostile producer may not do to everybody's lists.

Decoding (:mod:`streamrec.events`) checks that an event is well formed; the
checks here decide whether a well-formed event may reach the models. Each is
a small object the stream worker calls per event, between decoding and the
pipeline; an event they refuse goes to the dead-letter topic with the reason
they return. None of them imports Kafka or Redis.

- :class:`EventTimeGuard`: timestamps far ahead of the event's arrival (a
  clock in the year 2100 would set popularity's decay clock 75 years ahead),
  and optionally ones too far behind it;
- :class:`RateLimiter`: more events per user than a person makes, by arrival time;
- :class:`EventIdFilter`: an event whose ``event_id`` the same user already
  sent (a retried batch), with per-user state that moves with the user's
  partition.

In that order, as below: a refused timestamp never enters the id filter, and
a retried duplicate takes no token from its user's rate.

Examples
--------
>>> from streamrec.events import Interaction
>>> guard, ids, limiter = EventTimeGuard(), EventIdFilter(), RateLimiter(max_events=2, per_seconds=60.0)
>>> arrival = 1_764_000_000.0
>>> events = [Interaction("ann", "tea", arrival, event_id="e1"), Interaction("ann", "tea", arrival, event_id="e1"),
...           Interaction("ann", "jam", 4_102_444_800.0), Interaction("ann", "ham", arrival),
...           Interaction("ann", "pie", arrival)]
>>> for event in events:
...     checked = guard.apply(event, arrival)
...     if isinstance(checked, str):
...         print("refused:", checked[:33], "...")
...     elif not ids.admit(checked.user_id, checked.event_id, checked.timestamp):
...         print("duplicate:", checked.event_id)
...     elif (reason := limiter.check(checked.user_id, arrival)) is not None:
...         print("refused:", reason)
...     else:
...         print("admitted:", checked.item_id)
admitted: tea
duplicate: e1
refused: timestamp: 4102444800 is 2,338,44 ...
admitted: ham
refused: rate limit: user 'ann' is over 2 events per 60 s
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeVar

from streamrec.events import ForgetUser, Interaction, ItemUpdate, Rating

__all__ = ["Admission", "Duplicate", "EventIdFilter", "EventTimeGuard", "RateLimiter"]

E = TypeVar("E", Interaction, Rating, ItemUpdate, ForgetUser)


def _number(value: float) -> str:
    """``value`` with thousands separators and at most three decimals, none when whole."""
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _plain(value: float) -> str:
    """A timestamp as written on the wire: no separators, at most three decimals."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} seconds, got {value!r}")
    return float(value)


class EventTimeGuard:
    """Refuse (or clamp) event timestamps far from the event's arrival.

    Models trust event time: popularity decays every score relative to the
    newest timestamp it has seen, so one event stamped in the year 2100 would
    make its item first in the fallback list for good. The guard compares an
    event's timestamp with its *arrival* (the time it reached Kafka, or the
    worker's clock): a timestamp more than ``max_skew`` seconds ahead is
    refused with a reason, or, with ``future="clamp"``, replaced by the
    arrival time. With ``max_age`` set, a timestamp more than ``max_age``
    seconds before the arrival is refused too; by default old events are
    accepted on purpose, since replays of recorded logs (MovieLens from
    1997) are old by design.

    :class:`~streamrec.events.ForgetUser` requests are never refused for
    their time (a privacy request must not be lost to a wrong clock): a
    future one is clamped to its arrival, an old one is kept.

    Parameters
    ----------
    max_skew
        Seconds an event may be ahead of its arrival (clock differences
        between producers and the broker).
    future
        What to do with an event further ahead: ``"deadletter"`` (refuse it
        with a reason) or ``"clamp"`` (use the arrival time as its timestamp).
    max_age
        Seconds an event may be behind its arrival; ``None``: no limit.

    Attributes
    ----------
    counts
        How many events were refused or clamped, by cause: ``"future"``
        (refused ahead), ``"too_old"`` (refused behind), ``"clamped"``.

    Examples
    --------
    >>> guard = EventTimeGuard(max_skew=300.0)
    >>> guard.check(1_764_000_100.0, arrival=1_764_000_000.0)   # within the skew: kept as it is
    1764000100.0
    >>> guard.check(4_102_444_800.0, arrival=1_764_000_000.0)
    'timestamp: 4102444800 is 2,338,444,800 s ahead of its arrival 1764000000, more than the allowed skew of 300 s'
    >>> EventTimeGuard(future="clamp").check(4_102_444_800.0, arrival=1_764_000_000.0)
    1764000000.0
    >>> EventTimeGuard(max_age=86400.0).check(881_250_949.0, arrival=1_764_000_000.0)
    'timestamp: 881250949 is 882,749,051 s before its arrival 1764000000, more than the allowed age of 86,400 s'
    >>> guard.counts
    Counter({'future': 1})
    """

    def __init__(
        self,
        max_skew: float = 300.0,
        future: Literal["deadletter", "clamp"] = "deadletter",
        max_age: float | None = None,
    ) -> None:
        if future not in ("deadletter", "clamp"):
            raise ValueError(f"future must be 'deadletter' or 'clamp', got {future!r}")
        self.max_skew = _positive("max_skew", max_skew, allow_zero=True)
        self.future = future
        self.max_age = None if max_age is None else _positive("max_age", max_age)
        self.counts: Counter[str] = Counter()

    def check(self, timestamp: float, arrival: float) -> float | str:
        """The timestamp to use for an event that arrived at ``arrival``, or why it is refused (a ``str``).

        Parameters
        ----------
        timestamp
            The event's timestamp, seconds since the epoch.
        arrival
            When the event arrived, seconds since the epoch.
        """
        ahead = timestamp - arrival
        if ahead > self.max_skew:
            if self.future == "clamp":
                self.counts["clamped"] += 1
                return float(arrival)
            self.counts["future"] += 1
            return (
                f"timestamp: {_plain(timestamp)} is {_number(ahead)} s ahead of its arrival {_plain(arrival)}, "
                f"more than the allowed skew of {_number(self.max_skew)} s"
            )
        if self.max_age is not None and -ahead > self.max_age:
            self.counts["too_old"] += 1
            return (
                f"timestamp: {_plain(timestamp)} is {_number(-ahead)} s before its arrival {_plain(arrival)}, "
                f"more than the allowed age of {_number(self.max_age)} s"
            )
        return float(timestamp)

    def apply(self, event: E, arrival: float) -> E | str:
        """``event`` with the timestamp to use (the same object when unchanged), or why it is refused.

        Examples
        --------
        >>> from streamrec.events import ForgetUser, Interaction
        >>> guard = EventTimeGuard(future="clamp")
        >>> guard.apply(Interaction("ann", "tea", 4_102_444_800.0), arrival=1_764_000_000.0).timestamp
        1764000000.0
        >>> EventTimeGuard().apply(ForgetUser("ann", 4_102_444_800.0), arrival=1_764_000_000.0).timestamp
        1764000000.0
        """
        if isinstance(event, ForgetUser):
            if event.timestamp - arrival > self.max_skew:
                self.counts["clamped"] += 1
                return dataclasses.replace(event, timestamp=float(arrival))
            return event
        checked = self.check(event.timestamp, arrival)
        if isinstance(checked, str):
            return checked
        if checked == event.timestamp:
            return event
        return dataclasses.replace(event, timestamp=checked)


class RateLimiter:
    """Refuse a user's events beyond ``max_events`` per ``per_seconds``, by arrival time.

    A token bucket per user: a user holds up to ``max_events`` tokens, one
    event takes one, and tokens come back at ``max_events / per_seconds`` a
    second. So a user may send ``max_events`` at once and ``max_events`` per
    ``per_seconds`` sustained; an event that finds no token is refused (and
    takes none). Memory is bounded: at most ``max_users`` users are tracked,
    the least recently active forgotten first (they come back with a full
    bucket: a user inactive for that long is no flood).

    The clock is the *arrival* time, not the event's timestamp: timestamps
    are written by the producer, so a hostile one could spread 1,500 clicks
    over fake past hours to refill the bucket between them; arrival is
    stamped by the broker (or the worker). Pass the time the event reached
    Kafka (its log-append or ingest time) rather than the worker's clock, so
    that a worker catching up on a backlog does not see the backlog's events
    as a burst, and a replay decides as the first run did. Arrival times
    that go backwards (several partitions) refill nothing.

    Parameters
    ----------
    max_events
        Events a user may send at once, and per ``per_seconds`` sustained.
    per_seconds
        The period of the rate, seconds.
    max_users
        Users tracked at most.

    Attributes
    ----------
    refused
        Events refused so far.

    Examples
    --------
    >>> limiter = RateLimiter(max_events=3, per_seconds=60.0)
    >>> [limiter.check("bot", arrival=1000.0 + n) is None for n in range(5)]
    [True, True, True, False, False]
    >>> limiter.check("bot", arrival=1025.0) is None   # 20 s later one token is back
    True
    >>> limiter.check("bot", arrival=1025.0)
    "rate limit: user 'bot' is over 3 events per 60 s"
    >>> limiter.check("ann", arrival=1025.0) is None, limiter.refused
    (True, 3)
    """

    def __init__(self, max_events: int, per_seconds: float, max_users: int = 100_000) -> None:
        for name, value in (("max_events", max_events), ("max_users", max_users)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.max_events = max_events
        self.per_seconds = _positive("per_seconds", per_seconds)
        self.max_users = max_users
        self._rate = max_events / self.per_seconds
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # user -> [tokens, last arrival]
        self.refused = 0

    def __len__(self) -> int:
        """Users tracked."""
        return len(self._buckets)

    def check(self, user_id: str, arrival: float) -> str | None:
        """Take a token for an event of ``user_id`` that arrived at ``arrival``; ``None``, or why it is refused."""
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = [float(self.max_events), arrival]
            if len(self._buckets) > self.max_users:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(user_id)
            elapsed = arrival - bucket[1]
            if elapsed > 0:
                bucket[0] = min(float(self.max_events), bucket[0] + elapsed * self._rate)
                bucket[1] = arrival
        if bucket[0] < 1.0:
            self.refused += 1
            return f"rate limit: user {user_id!r} is over {self.max_events} events per {_number(self.per_seconds)} s"
        bucket[0] -= 1.0
        return None

    def forget_user(self, user_id: str) -> bool:
        """Stop tracking ``user_id``; return whether it was tracked."""
        return self._buckets.pop(user_id, None) is not None


#: What :meth:`EventIdFilter.export_users` gives per user: ``{"ids": [...], "ts": [...]}``,
#: parallel lists, oldest first.
IdRecord = dict[str, list[Any]]


class EventIdFilter:
    """Recognise events a user sent before (same ``event_id``): retried batches are learned once.

    Per user, the filter remembers the ids of the user's events with their
    timestamps, as long as they are within ``window`` seconds of the user's
    newest timestamp seen, and at most ``max_ids_per_user`` of them (the
    oldest go first). An event whose id is remembered for its user is a
    duplicate. Events without an id are always admitted and remembered by
    nothing. Time is the events' own (pass the timestamp after
    :class:`EventTimeGuard`): decisions depend only on the user's events,
    so the worker that owns the user's partition after a rebalance decides
    as the one before it did, once it has imported the user's record.

    Since the ids of a user must move with the user's Kafka partition,
    state is per user and JSON-ready: :meth:`export_users` gives one small
    record per user (for a changelog keyed by user), :meth:`import_users`
    takes them back, :meth:`drop_users` lets go of users whose partition
    moved away. The worker tracks which users it touched.

    Parameters
    ----------
    window
        Seconds an id is remembered after the user's newest event.
    max_ids_per_user
        Ids remembered per user at most.

    Examples
    --------
    >>> ids = EventIdFilter(window=3600.0)
    >>> ids.admit("ann", "e1", 1000.0), ids.admit("ann", "e1", 1000.0), ids.admit("bob", "e1", 1000.0)
    (True, False, True)
    >>> ids.admit("ann", None, 1000.0), ids.admit("ann", None, 1000.0)   # no id: always admitted
    (True, True)
    >>> ids.admit("ann", "e2", 9000.0), ids.admit("ann", "e1", 1000.0)   # e1 is out of the window now
    (True, True)
    >>> records = ids.export_users(["ann", "nobody"])
    >>> records
    {'ann': {'ids': ['e2', 'e1'], 'ts': [9000.0, 1000.0]}}
    >>> other = EventIdFilter(window=3600.0)
    >>> other.import_users(records)
    >>> other.admit("ann", "e2", 9000.0)
    False
    """

    def __init__(self, window: float = 86400.0, max_ids_per_user: int = 1000) -> None:
        if isinstance(max_ids_per_user, bool) or not isinstance(max_ids_per_user, int) or max_ids_per_user < 1:
            raise ValueError(f"max_ids_per_user must be a positive int, got {max_ids_per_user!r}")
        self.window = _positive("window", window)
        self.max_ids_per_user = max_ids_per_user
        # user -> (event id -> timestamp, oldest remembered first), and the user's newest timestamp
        self._ids: dict[str, dict[str, float]] = {}
        self._newest: dict[str, float] = {}
        self.duplicates = 0

    def __len__(self) -> int:
        """Users holding at least one id."""
        return len(self._ids)

    @property
    def n_ids(self) -> int:
        """Ids remembered, all users together."""
        return sum(len(ids) for ids in self._ids.values())

    def admit(self, user_id: str, event_id: str | int | None, timestamp: float) -> bool:
        """Whether the event is new for ``user_id`` (``False``: a duplicate); remember its id.

        Parameters
        ----------
        user_id
            The event's user.
        event_id
            The producer's id of the event (``None``: no id, always admitted).
        timestamp
            The event's timestamp, seconds since the epoch.
        """
        if event_id is None:
            return True
        key = str(event_id)
        ids = self._ids.get(user_id)
        newest = max(self._newest.get(user_id, timestamp), timestamp)
        cutoff = newest - self.window
        if ids is None:
            ids = self._ids[user_id] = {}
        else:
            seen = ids.get(key)
            if seen is not None and seen >= cutoff:
                self.duplicates += 1
                return False
            if seen is not None:  # out of the window: remembered again, as new
                del ids[key]
        self._newest[user_id] = newest
        ids[key] = float(timestamp)
        self._prune(ids, cutoff)
        return True

    def _prune(self, ids: dict[str, float], cutoff: float) -> None:
        """Drop the oldest ids past the cap, and those out of the window at the front."""
        while len(ids) > self.max_ids_per_user:
            del ids[next(iter(ids))]
        while ids:
            first = next(iter(ids))
            if ids[first] >= cutoff:
                break
            del ids[first]

    def expire(self, now: float) -> list[str]:
        """Forget ids older than ``now - window`` for every user; return the users left with none.

        The filter prunes a user's ids when the user sends an event; users
        who stop sending keep theirs until this sweep (``O(ids)``; call it now
        and then, with the newest event time). The users returned hold no
        state any more (their changelog records can be deleted).
        """
        cutoff = now - self.window
        emptied = []
        for user, ids in self._ids.items():
            for key in [k for k, ts in ids.items() if ts < cutoff]:
                del ids[key]
            if not ids:
                emptied.append(user)
        for user in emptied:
            del self._ids[user]
            self._newest.pop(user, None)
        return emptied

    def export_users(self, users: Iterable[str]) -> dict[str, IdRecord]:
        """One JSON-ready record per user holding ids (others left out): ``{"ids": [...], "ts": [...]}``."""
        out: dict[str, IdRecord] = {}
        for user in users:
            ids = self._ids.get(user)
            if ids:
                out[user] = {"ids": list(ids), "ts": list(ids.values())}
        return out

    def import_users(self, records: Mapping[str, IdRecord]) -> None:
        """Take over users from :meth:`export_users` records (replacing what is held for them).

        Raises
        ------
        ValueError
            A record whose ``ids`` and ``ts`` differ in length.
        """
        for user, record in records.items():
            ids, stamps = record.get("ids", []), record.get("ts", [])
            if len(ids) != len(stamps):
                raise ValueError(f"event-id record of user {user!r}: {len(ids)} ids but {len(stamps)} timestamps")
            self.forget_user(user)
            if not ids:
                continue
            held = dict(zip(map(str, ids), map(float, stamps), strict=True))
            newest = max(held.values())
            self._prune(held, newest - self.window)
            self._ids[user] = held
            self._newest[user] = newest

    def users(self) -> list[str]:
        """Users holding at least one id (for a checkpoint of the whole filter)."""
        return list(self._ids)

    def drop_users(self, users: Iterable[str]) -> int:
        """Let go of ``users`` (their partition moved to another worker); return how many were held."""
        return sum(self.forget_user(u) for u in users)

    def forget_user(self, user_id: str) -> bool:
        """Erase the ids of ``user_id``; return whether any were held."""
        self._newest.pop(user_id, None)
        return self._ids.pop(user_id, None) is not None


class Duplicate:
    """What :meth:`Admission.admit` returns for an event whose id its user already sent."""

    def __repr__(self) -> str:
        return "DUPLICATE"


#: The one :class:`Duplicate` value.
DUPLICATE = Duplicate()


class Admission:
    """The checks of this module, in the order the stream worker applies them to each decoded event.

    1. :class:`EventTimeGuard` against the worker's wall clock (``now``): no
       model's clock ever moves past the wall clock plus the allowed skew;
    2. :class:`EventIdFilter`: a retried event (same user, same ``event_id``)
       is counted and skipped, not dead-lettered;
    3. :class:`RateLimiter` (optional) against the event's arrival in Kafka.

    Catalogue updates pass untouched (their timestamps reach no model).

    Examples
    --------
    >>> from streamrec.events import Interaction
    >>> admission = Admission(EventTimeGuard(max_skew=300.0), EventIdFilter(), RateLimiter(2, 60.0))
    >>> now = 1_764_000_000.0
    >>> admission.admit(Interaction("ann", "tea", now, event_id=7), now=now, arrival=now).item_id
    'tea'
    >>> admission.admit(Interaction("ann", "tea", now, event_id=7), now=now, arrival=now)
    DUPLICATE
    >>> admission.admit(Interaction("ann", "jam", now + 3600), now=now, arrival=now)[:38]
    'timestamp: 1764003600 is 3,600 s ahead'
    >>> admission.counts
    Counter({'admitted': 1, 'duplicate': 1, 'future': 1})
    """

    def __init__(self, guard: EventTimeGuard, ids: EventIdFilter, limiter: RateLimiter | None = None) -> None:
        self.guard = guard
        self.ids = ids
        self.limiter = limiter
        self.counts: Counter[str] = Counter()

    @classmethod
    def from_settings(cls, settings: Any) -> Admission:
        """The checks :class:`~streamrec.settings.Settings` configures (``STREAMREC_MAX_CLOCK_SKEW``, ...)."""
        limit = settings.user_rate_limit
        return cls(
            EventTimeGuard(settings.max_clock_skew, settings.future_events, settings.max_event_age),
            EventIdFilter(settings.event_id_window, settings.event_ids_per_user),
            RateLimiter(limit[0], limit[1]) if limit is not None else None,
        )

    def admit(self, event: E, now: float, arrival: float | None = None) -> E | str | Duplicate:
        """The event to learn (its timestamp clamped if so configured), a reason to dead-letter it, or ``DUPLICATE``.

        Parameters
        ----------
        event
            A decoded event.
        now
            The worker's wall clock, seconds since the epoch: the bound on event time.
        arrival
            When the event reached Kafka (its record timestamp), for the rate limit; ``now`` when unknown.
        """
        if isinstance(event, ItemUpdate):
            return event
        clamped = self.guard.counts["clamped"]
        checked = self.guard.apply(event, now)
        if isinstance(checked, str):
            self.counts["future" if " ahead of " in checked else "too_old"] += 1
            return checked
        if self.guard.counts["clamped"] > clamped:
            self.counts["clamped"] += 1
        if isinstance(checked, ForgetUser):
            self.ids.forget_user(checked.user_id)
            if self.limiter is not None:
                self.limiter.forget_user(checked.user_id)
            return checked
        if not self.ids.admit(checked.user_id, checked.event_id, checked.timestamp):
            self.counts["duplicate"] += 1
            return DUPLICATE
        if self.limiter is not None:
            reason = self.limiter.check(checked.user_id, arrival if arrival is not None else now)
            if reason is not None:
                self.counts["rate_limited"] += 1
                return reason
        self.counts["admitted"] += 1
        return checked
