"""What the catalogue allows to be served: items hidden or expiring, and each item's tags.

:class:`CatalogueControl` follows catalogue updates (:class:`~streamrec.events.ItemUpdate`)
in the worker's memory, with no Kafka and no Redis: the pipeline asks it which
items the models must not put in new lists (:meth:`CatalogueControl.unavailable`)
and which tags to write beside each listed item (:meth:`CatalogueControl.tags_of`).
Reads do not depend on it: they filter with what the worker wrote to Redis
(:mod:`streamrec.serving.read_step`).

An item is *unavailable* at time ``t`` when an update marked it
``available=False`` or gave it an ``expires_at <= t``. An item hidden before it
is first seen stays hidden: the state is kept per id, whether or not any
model knows the item.

Examples
--------
>>> from streamrec.events import ItemUpdate
>>> control = CatalogueControl()
>>> changes = control.apply([
...     ItemUpdate("shoe", 1.0, tags=("Shoes",)),
...     ItemUpdate("news", 1.0, tags=("News",), expires_at=100.0),
...     ItemUpdate("gone", 1.0, available=False),   # hidden before anything else is known of it
... ])
>>> changes.hidden_until
{'news': 100.0, 'gone': 0.0}
>>> sorted(control.unavailable(now=50.0)), sorted(control.unavailable(now=100.0))
(['gone'], ['gone', 'news'])
>>> control.apply([ItemUpdate("gone", 2.0, available=True)]).hidden_until   # None: shown again
{'gone': None}
>>> control.tags_of(["shoe", "news", "unknown"])
[['Shoes'], ['News'], []]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from streamrec.events import ItemUpdate

__all__ = ["CatalogueControl", "ControlChanges", "UserExclusions", "hidden_until"]

#: ``hidden_until`` of an item hidden now and until an update shows it again.
HIDDEN_NOW = 0.0


def hidden_until(update: ItemUpdate) -> float | None:
    """When ``update`` hides its item: ``0.0`` now, a time (its expiry), or ``None`` never.

    Only meaningful when :attr:`~streamrec.events.ItemUpdate.sets_availability`.

    Examples
    --------
    >>> hidden_until(ItemUpdate("a", 1.0, available=False, expires_at=5.0))
    0.0
    >>> hidden_until(ItemUpdate("a", 1.0, expires_at=5.0)), hidden_until(ItemUpdate("a", 1.0, available=True))
    (5.0, None)
    """
    if update.available is False:
        return HIDDEN_NOW
    return update.expires_at


@dataclass
class ControlChanges:
    """What a group of catalogue updates changed (the worker writes it to Redis).

    ``hidden_until`` maps items whose availability an update set to when they
    are hidden from (``None``: served again); ``tags`` maps items to the tags
    their newest update gave them.
    """

    hidden_until: dict[str, float | None] = field(default_factory=dict)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def merge(self, newer: ControlChanges) -> None:
        """Add ``newer`` changes (they win where both name an item)."""
        self.hidden_until.update(newer.hidden_until)
        self.tags.update(newer.tags)

    def __bool__(self) -> bool:
        return bool(self.hidden_until or self.tags)


class CatalogueControl:
    """Availability and tags per item, as catalogue updates set them (see the module docstring)."""

    def __init__(self) -> None:
        self._hidden: dict[str, float] = {}  # item -> hidden from this time on (0: now)
        self._tags: dict[str, tuple[str, ...]] = {}
        self._interned: dict[tuple[str, ...], tuple[str, ...]] = {}  # many items share a tag set: one tuple each
        #: grows by one whenever an item's tags change (cached per-category rows are rebuilt then)
        self.tags_version = 0

    def apply(self, updates: Iterable[ItemUpdate]) -> ControlChanges:
        """Follow ``updates`` in order; return what they changed."""
        changes = ControlChanges()
        for update in updates:
            item = update.item_id
            if update.sets_availability:
                until = hidden_until(update)
                if until is None:
                    self._hidden.pop(item, None)
                else:
                    self._hidden[item] = until
                changes.hidden_until[item] = until
            tags = self._interned.setdefault(tuple(update.tags), tuple(update.tags))
            if self._tags.get(item, ()) != tags:
                self.tags_version += 1
            if tags:
                self._tags[item] = tags
            else:
                self._tags.pop(item, None)
            changes.tags[item] = tags
        return changes

    def unavailable(self, now: float) -> set[str]:
        """Items that may not be served at ``now`` (seconds since the epoch)."""
        return {item for item, until in self._hidden.items() if until <= now}

    def next_expiry(self, now: float) -> float:
        """The soonest time after ``now`` at which an item expires (``inf`` when none will)."""
        return min((until for until in self._hidden.values() if until > now), default=math.inf)

    def is_available(self, item: str, now: float) -> bool:
        until = self._hidden.get(item)
        return until is None or until > now

    def tags(self, item: str) -> tuple[str, ...]:
        return self._tags.get(item, ())

    def tags_of(self, items: Sequence[str]) -> list[list[str]]:
        """Each item's tags (empty for items with none or unknown), as written beside a list's items."""
        get = self._tags.get
        return [list(get(item, ())) for item in items]

    def items_by_tag(self) -> dict[str, list[str]]:
        """Tag -> the items that carry it (the categories and their members)."""
        out: dict[str, list[str]] = {}
        for item, tags in self._tags.items():
            for tag in tags:
                out.setdefault(tag, []).append(item)
        return out

    @property
    def n_hidden(self) -> int:
        """Items with a hiding time, past or future."""
        return len(self._hidden)


class UserExclusions:
    """Per user, the items never to put in their lists: "not interested" feedback, explicit exclusions, and
    (with ``STREAMREC_REPEATS=unbought``) the items they bought.

    The pipeline passes them to the models (``recommend(..., exclude=...)``)
    so that new lists do not waste slots on them; reads filter them anyway.
    The state moves with the user's partition (``export_users`` /
    ``import_users`` / ``drop_users``, as :class:`~streamrec.admission.EventIdFilter`).

    Examples
    --------
    >>> ex = UserExclusions()
    >>> ex.add("ann", ["tea"], kind="not_interested"); ex.add("ann", ["cake", "jam"]); ex.remove("ann", ["jam"])
    >>> sorted(ex.of("ann")), ex.export_users(["ann", "bob"])
    (['cake', 'tea'], {'ann': {'not_interested': ['tea'], 'excluded': ['cake']}})
    >>> ex.remove("ann", ["tea"]); sorted(ex.of("ann"))   # "not interested" is for good: only exclusions go
    ['cake', 'tea']
    """

    KINDS = ("not_interested", "excluded", "bought")

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, set[str]]] = {}

    def add(self, user: str, items: Iterable[str], kind: str = "excluded") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self._sets.setdefault(user, {}).setdefault(kind, set()).update(items)

    def remove(self, user: str, items: Iterable[str]) -> None:
        """Serve ``items`` to ``user`` again, unless they said they are not interested in them (or bought them)."""
        sets = self._sets.get(user)
        if sets is not None and "excluded" in sets:
            sets["excluded"].difference_update(items)

    def of(self, user: str) -> set[str]:
        """Every item left out of ``user``'s lists."""
        sets = self._sets.get(user)
        if not sets:
            return set()
        return set().union(*sets.values())

    def users(self) -> list[str]:
        return list(self._sets)

    def export_users(self, users: Iterable[str]) -> dict[str, dict[str, list[str]]]:
        """JSON-ready records of the users holding exclusions (others left out)."""
        out = {}
        for user in users:
            sets = self._sets.get(user)
            if sets and any(sets.values()):
                out[user] = {kind: sorted(items) for kind, items in sets.items() if items}
        return out

    def import_users(self, records: dict[str, dict[str, list[str]]]) -> None:
        """Take over users from :meth:`export_users` records (replacing what is held for them)."""
        for user, record in records.items():
            self._sets[user] = {kind: set(record.get(kind, ())) for kind in self.KINDS if record.get(kind)}

    def drop_users(self, users: Iterable[str]) -> int:
        return sum(self._sets.pop(u, None) is not None for u in users)

    def forget_user(self, user: str) -> bool:
        return self._sets.pop(user, None) is not None
