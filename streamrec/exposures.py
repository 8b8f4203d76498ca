"""Exposures joined with the user's later events: click-through and conversion of what was shown.

An application records what it showed (:class:`~streamrec.events.Exposure`,
one record per list shown, through ``RecsClient.record_exposure`` or any
Kafka producer). The worker reads exposures from a topic keyed by user like
the events, so a user's exposures and events reach the same worker, and
:class:`ExposureJoin` credits each exposure with the user's events on a shown
item within ``window`` seconds of event time after it:

- an exposure is **clicked** when one of those events is a ``view``, ``click``
  or ``add_to_cart`` (or a rating), and **converted** when one is a ``purchase``;
  each exposure counts at most once for each;
- the event is credited to the newest exposure of the user that showed the item;
- per position (0 = the top; ``10+`` together), shown items and events on them;
- an event that arrives before its exposure (another topic, another order) is
  kept for a moment (the user's newest 32 events) and joined when the exposure comes;
  the worker keeps events only once exposures flow (``lazy``);
- a repeated ``exposure_id`` counts once; exposures of users or items the models
  do not know are counted (``unknown_user``, ``unknown_items``) and joined all the same.

Counts are a flat mapping like :mod:`streamrec.live_quality`'s, prefixed ``shown:<variant>``
(``shown:-`` when the record names no variant), and travel with them (Redis, Prometheus).

Examples
--------
>>> from streamrec.events import Exposure, Interaction
>>> join = ExposureJoin(window=600.0)
>>> counts = join.observe([
...     Exposure("u", ("a", "b", "c"), 100.0, variant="knn"),
...     Interaction("u", "b", 130.0, "click"),
...     Interaction("u", "b", 140.0, "purchase"),
...     Interaction("u", "z", 150.0, "click"),
... ])
>>> counts["shown:knn|-|exposures"], counts["shown:knn|-|clicked"], counts["shown:knn|-|converted"]
(1.0, 1.0, 1.0)
>>> counts["shown:knn|p1|events"], counts["shown:knn|p0|items"]
(2.0, 1.0)
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamrec.events import Event, Exposure, ForgetUser, Interaction, Rating

__all__ = ["ExposureJoin", "position_label"]

#: Exposures remembered per user (the newest), and events kept for exposures that arrive after them.
PER_USER = 32


def position_label(position: int) -> str:
    """``p0`` .. ``p9``, then ``p10+``.

    >>> position_label(0), position_label(9), position_label(42)
    ('p0', 'p9', 'p10+')
    """
    return f"p{position}" if position < 10 else "p10+"


@dataclass
class _Shown:
    timestamp: float
    variant: str
    positions: dict[str, int]
    clicked: bool = False
    converted: bool = False
    credited: set[tuple[str, float]] = field(default_factory=set)


class ExposureJoin:
    """Remembers recent exposures per user and credits them with the user's events.

    Parameters
    ----------
    window
        Seconds of event time after an exposure in which an event on a shown item counts.
    max_users
        Users remembered; beyond, those first seen earliest are forgotten.
    lazy
        Keep no event until a batch brings the first exposure (the worker's choice: where no
        application records exposures, the join then costs one pass over each batch and no memory;
        only events in batches before the first exposure ever can then not be joined late).
    """

    def __init__(self, window: float = 1800.0, max_users: int = 200_000, lazy: bool = False) -> None:
        self.window = window
        self.max_users = max_users
        self._shown: dict[str, deque[_Shown]] = {}
        self._events: dict[str, deque[tuple[float, str, str]]] = {}
        self._ids: dict[str, deque[str]] = {}
        #: whether events are kept for exposures to come (with ``lazy``, once the first exposure has come)
        self._active = not lazy

    def observe(
        self,
        events: Iterable[Event],
        knows_user: Callable[[str], bool] | None = None,
        knows_item: Callable[[str], bool] | None = None,
        variant_of: Callable[[str], str] | None = None,
    ) -> dict[str, float]:
        """Take ``events`` in arrival order (before the models learn them); return the counts they add.

        ``knows_user`` and ``knows_item`` say what the models know (for the ``unknown`` counts);
        ``variant_of(user)`` names the variant of an exposure that names none (the experiment's).
        """
        events = list(events)
        if not self._active:  # no application records exposures (yet): nothing to join, nothing to keep
            if not any(isinstance(e, Exposure) for e in events):
                return {}
            self._active = True  # this batch's events are kept too, whatever their order
        counts: Counter[str] = Counter()
        for event in events:
            if isinstance(event, Exposure):
                self._exposure(event, counts, knows_user, knows_item, variant_of)
            elif isinstance(event, Interaction | Rating) and not (isinstance(event, Interaction) and event.is_feedback):
                kind = event.event_type if isinstance(event, Interaction) else "rating"
                self._event(event.user_id, event.item_id, event.timestamp, kind, counts)
                recent = self._events.setdefault(event.user_id, deque(maxlen=PER_USER))
                recent.append((event.timestamp, event.item_id, kind))
            elif isinstance(event, ForgetUser):
                self.forget(event.user_id)
        self._bound()
        return {name: float(value) for name, value in counts.items()}

    def _exposure(
        self,
        e: Exposure,
        counts: Counter[str],
        knows_user: Callable[[str], bool] | None,
        knows_item: Callable[[str], bool] | None,
        variant_of: Callable[[str], str] | None,
    ) -> None:
        if e.exposure_id is not None:
            ids = self._ids.setdefault(e.user_id, deque(maxlen=PER_USER))
            if e.exposure_id in ids:
                counts["shown:-|-|duplicate"] += 1
                return
            ids.append(e.exposure_id)
        variant = e.variant or (variant_of(e.user_id) if variant_of is not None else "-")
        prefix = f"shown:{variant}|"
        counts[prefix + "-|exposures"] += 1
        counts[prefix + "-|items"] += len(e.item_ids)
        if knows_user is not None and not knows_user(e.user_id):
            counts[prefix + "-|unknown_user"] += 1
        if knows_item is not None:
            unknown = sum(1 for item in e.item_ids if not knows_item(item))
            if unknown:
                counts[prefix + "-|unknown_items"] += unknown
        positions: dict[str, int] = {}
        for offset, item in enumerate(e.item_ids):
            if item not in positions:
                positions[item] = e.first_position + offset
                counts[f"{prefix}{position_label(positions[item])}|items"] += 1
        shown = _Shown(e.timestamp, variant, positions)
        self._shown.setdefault(e.user_id, deque(maxlen=PER_USER)).append(shown)
        for ts, item, kind in self._events.get(e.user_id, ()):  # events that came before their exposure
            joined = item in positions and e.timestamp <= ts <= e.timestamp + self.window
            if joined and self._credit(shown, item, ts, kind, counts):
                counts["shown:-|-|late"] += 1

    def _event(self, user: str, item: str, ts: float, kind: str, counts: Counter[str]) -> None:
        for shown in reversed(self._shown.get(user, ())):  # the newest exposure that showed the item
            if item in shown.positions and shown.timestamp <= ts <= shown.timestamp + self.window:
                self._credit(shown, item, ts, kind, counts)
                return

    def _credit(self, shown: _Shown, item: str, ts: float, kind: str, counts: Counter[str]) -> bool:
        if (item, ts) in shown.credited:
            return False
        shown.credited.add((item, ts))
        prefix = f"shown:{shown.variant}|"
        counts[f"{prefix}{position_label(shown.positions[item])}|events"] += 1
        if kind == "purchase":
            if not shown.converted:
                shown.converted = True
                counts[prefix + "-|converted"] += 1
        elif not shown.clicked:
            shown.clicked = True
            counts[prefix + "-|clicked"] += 1
        return True

    def forget(self, user: str) -> None:
        """Drop what is remembered of ``user``."""
        self._shown.pop(user, None)
        self._events.pop(user, None)
        self._ids.pop(user, None)

    def _bound(self) -> None:
        for store in (self._shown, self._events, self._ids):
            excess = len(store) - self.max_users
            if excess > 0:
                for user in list(store)[:excess]:
                    del store[user]
