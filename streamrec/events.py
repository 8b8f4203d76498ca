"""Typed event records, their JSON wire format, and strict validation.

Kinds of event travel on their own topics, JSON on the wire, keyed by id:

- :class:`Interaction` (a view, click, add-to-cart or purchase; or ``not_interested``,
  negative feedback that no model learns as a positive), keyed by ``user_id``;
- :class:`Rating` (an explicit rating), keyed by ``user_id``;
- :class:`ItemUpdate` (a catalogue entry with content tags, and optionally whether the
  item may be served and until when), keyed by ``item_id``;
- :class:`ForgetUser` (a privacy request), keyed by ``user_id``;
- :class:`Exclusion` (items never to serve a user, e.g. a creator's own: not feedback),
  keyed by ``user_id``.

:func:`decode` turns raw bytes into a record or raises :class:`InvalidEvent`
with a reason that says what was wrong; the worker sends such events to the
dead-letter topic with that reason and the original bytes.

Examples
--------
>>> event = decode(b'{"user_id": "u1", "item_id": 42, "timestamp": 1700000000, "event_type": "click"}', "interaction")
>>> event.item_id, event.event_type
('42', 'click')
>>> decode(encode(event), "interaction") == event
True
>>> retried = decode(b'{"user_id": "u1", "item_id": 42, "timestamp": 1700000000, "event_id": 7}', "interaction")
>>> retried.event_id, b'"event_id":"7"' in encode(retried), b"event_id" in encode(event)   # only when set
('7', True, False)
>>> hide = decode(b'{"item_id": "sku-1", "timestamp": 1700000000, "available": false}', "item")
>>> hide.available, hide.expires_at, decode(encode(hide), "item") == hide
(False, None, True)
>>> decode(b'{"user_id": "u1", "item_id": "i", "timestamp": 1.0, "rating": "NaN"}', "rating")
Traceback (most recent call last):
...
streamrec.events.InvalidEvent: rating: must be a number, got str
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from models.base import Interactions

__all__ = [
    "EVENT_TYPES",
    "EVENT_WEIGHTS",
    "FEEDBACK_TYPES",
    "KINDS",
    "Event",
    "Exclusion",
    "Exposure",
    "ForgetUser",
    "Interaction",
    "InvalidEvent",
    "ItemUpdate",
    "Limits",
    "Rating",
    "decode",
    "encode",
    "event_from_dict",
    "parse_json",
    "to_interactions",
]

#: Interaction types that say a user wanted an item (the models learn them as positives).
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
#: Interaction types of negative feedback: never learned as positives; the item leaves the user's reads for good.
FEEDBACK_TYPES = ("not_interested",)
#: Implicit strength of each event type (a rating counts as 1).
EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 5.0, "rating": 1.0}
Kind = Literal["interaction", "rating", "item", "forget", "exclusion", "exposure"]
KINDS: tuple[Kind, ...] = ("interaction", "rating", "item", "forget", "exclusion", "exposure")


class InvalidEvent(ValueError):
    """An event that cannot be accepted; ``str(error)`` is the reason."""


@dataclass(frozen=True)
class Limits:
    """Bounds that validation enforces (configurable through settings)."""

    max_bytes: int = 16_384
    max_id_length: int = 256
    min_rating: float = 0.0
    max_rating: float = 5.0
    max_context_keys: int = 32
    max_tags: int = 64
    #: Timestamps are seconds since the epoch; larger values are likely milliseconds.
    max_timestamp: float = 1e10


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Interaction:
    """A user acted on an item (view, click, add_to_cart, purchase)."""

    user_id: str
    item_id: str
    timestamp: float
    event_type: str = "view"
    context: dict[str, str | int | float | bool] | None = None
    #: The producer's id of the event, unique per user (a retried event carries the same id); optional.
    event_id: str | None = None
    kind: Kind = field(default="interaction", init=False, repr=False)

    @property
    def key(self) -> str:
        return self.user_id

    @property
    def is_feedback(self) -> bool:
        """Whether this is negative feedback (``not_interested``), which no model learns as a positive."""
        return self.event_type in FEEDBACK_TYPES


@dataclass(frozen=True)
class Rating:
    """A user rated an item."""

    user_id: str
    item_id: str
    rating: float
    timestamp: float
    context: dict[str, str | int | float | bool] | None = None
    #: The producer's id of the event, unique per user (a retried event carries the same id); optional.
    event_id: str | None = None
    kind: Kind = field(default="rating", init=False, repr=False)

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True)
class ItemUpdate:
    """A catalogue entry: a new or changed item with its content tags, and whether it may be served.

    ``available`` and ``expires_at`` together say whether the item may be
    served: ``available=False`` hides it until an update makes it available
    again; ``expires_at`` (seconds since the epoch) hides it from that time on,
    with no further event. An update that carries neither leaves the item's
    availability as it was; one that carries either replaces it
    (``available`` defaults to true, ``expires_at`` to never).
    """

    item_id: str
    timestamp: float
    title: str | None = None
    tags: tuple[str, ...] = ()
    available: bool | None = None
    expires_at: float | None = None
    kind: Kind = field(default="item", init=False, repr=False)

    @property
    def sets_availability(self) -> bool:
        """Whether this update says anything about availability (else it leaves it as it was)."""
        return self.available is not None or self.expires_at is not None

    @property
    def key(self) -> str:
        return self.item_id


@dataclass(frozen=True)
class Exclusion:
    """Items never to serve a user (``action="add"``) or to serve again (``"remove"``): not feedback.

    For example a creator's own items. No model learns from it; reads leave
    the items out of every list of the user.
    """

    user_id: str
    item_ids: tuple[str, ...]
    timestamp: float
    action: str = "add"
    kind: Kind = field(default="exclusion", init=False, repr=False)

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True)
class ForgetUser:
    """A request to remove every trace of a user (privacy)."""

    user_id: str
    timestamp: float
    kind: Kind = field(default="forget", init=False, repr=False)

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True)
class Exposure:
    """What an application showed a user: ``item_ids`` in the order shown, the first at ``first_position``.

    ``variant`` is the experiment's variant the list came from (a read's ``variant``); ``exposure_id``,
    when given, makes a repeated record count once. No model learns from it: the worker joins the
    user's later events with it (:mod:`streamrec.exposures`).
    """

    user_id: str
    item_ids: tuple[str, ...]
    timestamp: float
    variant: str | None = None
    first_position: int = 0
    exposure_id: str | None = None
    kind: Kind = field(default="exposure", init=False, repr=False)

    @property
    def key(self) -> str:
        return self.user_id


Event = Interaction | Rating | ItemUpdate | ForgetUser | Exclusion | Exposure
#: Most items one exposure record may carry.
MAX_EXPOSED_ITEMS = 500
#: Actions of an :class:`Exclusion`.
EXCLUSION_ACTIONS = ("add", "remove")


# -- validation -------------------------------------------------------------------------


def _id(obj: Mapping[str, Any], name: str, limits: Limits) -> str:
    if name not in obj:
        raise InvalidEvent(f"{name}: missing")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidEvent(f"{name}: must be a string or an integer, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise InvalidEvent(f"{name}: empty")
    if len(text) > limits.max_id_length:
        raise InvalidEvent(f"{name}: {len(text)} characters, more than the limit of {limits.max_id_length}")
    if not text.isprintable() and any(ord(c) < 32 for c in text):  # isprintable: one C pass for the usual id
        raise InvalidEvent(f"{name}: contains control characters")
    return text


def _optional_id(obj: Mapping[str, Any], name: str, limits: Limits) -> str | None:
    """An optional id field (absent or ``null``: ``None``), checked as :func:`_id` checks ids."""
    if obj.get(name) is None:
        return None
    return _id(obj, name, limits)


def _number(obj: Mapping[str, Any], name: str) -> float:
    if name not in obj:
        raise InvalidEvent(f"{name}: missing")
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{name}: must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidEvent(f"{name}: must be finite, got {value!r}")
    return number


def _timestamp(obj: Mapping[str, Any], limits: Limits) -> float:
    ts = _number(obj, "timestamp")
    if ts < 0:
        raise InvalidEvent(f"timestamp: negative ({ts})")
    if ts >= limits.max_timestamp:
        raise InvalidEvent(f"timestamp: {ts} is too large for seconds since the epoch (milliseconds?)")
    return ts


def _context(obj: Mapping[str, Any], limits: Limits) -> dict[str, str | int | float | bool] | None:
    ctx = obj.get("context")
    if ctx is None:
        return None
    if not isinstance(ctx, dict):
        raise InvalidEvent(f"context: must be an object, got {type(ctx).__name__}")
    if len(ctx) > limits.max_context_keys:
        raise InvalidEvent(f"context: {len(ctx)} keys, more than the limit of {limits.max_context_keys}")
    for key, value in ctx.items():
        if not isinstance(value, str | int | float | bool) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidEvent(f"context.{key}: must be a string, number or boolean, got {value!r}"[:200])
        if isinstance(value, str) and len(value) > limits.max_id_length:
            raise InvalidEvent(f"context.{key}: longer than {limits.max_id_length} characters")
    return dict(ctx)


def event_from_dict(obj: Any, kind: Kind, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Validate a parsed JSON object as an event of ``kind``.

    A ``"kind"`` field in the object, when present, must agree with ``kind``.
    Unknown fields are ignored, so producers can add fields before consumers
    know them.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"event must be a JSON object, got {type(obj).__name__}")
    declared = obj.get("kind", kind)
    if declared != kind:
        raise InvalidEvent(f"kind: {declared!r} sent where {kind!r} events are expected")
    if kind == "interaction":
        event_type = obj.get("event_type", "view")
        if event_type not in EVENT_TYPES and event_type not in FEEDBACK_TYPES:
            known = ", ".join((*EVENT_TYPES, *FEEDBACK_TYPES))
            raise InvalidEvent(f"event_type: {event_type!r} is not one of {known}"[:200])
        return Interaction(
            user_id=_id(obj, "user_id", limits),
            item_id=_id(obj, "item_id", limits),
            timestamp=_timestamp(obj, limits),
            event_type=event_type,
            context=_context(obj, limits),
            event_id=_optional_id(obj, "event_id", limits),
        )
    if kind == "rating":
        rating = _number(obj, "rating")
        if not limits.min_rating <= rating <= limits.max_rating:
            raise InvalidEvent(f"rating: {rating} outside [{limits.min_rating}, {limits.max_rating}]")
        return Rating(
            user_id=_id(obj, "user_id", limits),
            item_id=_id(obj, "item_id", limits),
            rating=rating,
            timestamp=_timestamp(obj, limits),
            context=_context(obj, limits),
            event_id=_optional_id(obj, "event_id", limits),
        )
    if kind == "item":
        tags = obj.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise InvalidEvent("tags: must be a list of non-empty strings")
        if len(tags) > limits.max_tags:
            raise InvalidEvent(f"tags: {len(tags)} tags, more than the limit of {limits.max_tags}")
        if any(len(t) > limits.max_id_length or any(ord(c) < 32 for c in t) for t in tags):
            raise InvalidEvent(f"tags: a tag longer than {limits.max_id_length} characters or with control characters")
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise InvalidEvent(f"title: must be a string, got {type(title).__name__}")
        available = obj.get("available")
        if available is not None and not isinstance(available, bool):
            raise InvalidEvent(f"available: must be true or false, got {type(available).__name__}")
        expires_at = None
        if obj.get("expires_at") is not None:
            expires_at = _number(obj, "expires_at")
            if not 0 <= expires_at < limits.max_timestamp:
                raise InvalidEvent(f"expires_at: {expires_at} is not seconds since the epoch")
        return ItemUpdate(
            item_id=_id(obj, "item_id", limits),
            timestamp=_timestamp(obj, limits),
            title=title,
            tags=tuple(tags),
            available=available,
            expires_at=expires_at,
        )
    if kind == "exclusion":
        action = obj.get("action", "add")
        if action not in EXCLUSION_ACTIONS:
            raise InvalidEvent(f"action: {action!r} is not one of {', '.join(EXCLUSION_ACTIONS)}"[:200])
        items = obj.get("item_ids")
        if not isinstance(items, list) or not items:
            raise InvalidEvent("item_ids: must be a non-empty list of ids")
        if len(items) > limits.max_tags:
            raise InvalidEvent(f"item_ids: {len(items)} ids, more than the limit of {limits.max_tags}")
        return Exclusion(
            user_id=_id(obj, "user_id", limits),
            item_ids=tuple(_id({"item_ids[]": v}, "item_ids[]", limits) for v in items),
            timestamp=_timestamp(obj, limits),
            action=action,
        )
    if kind == "forget":
        return ForgetUser(user_id=_id(obj, "user_id", limits), timestamp=_timestamp(obj, limits))
    if kind == "exposure":
        items = obj.get("item_ids")
        if not isinstance(items, list) or not items:
            raise InvalidEvent("item_ids: must be a non-empty list of the ids shown, in order")
        if len(items) > MAX_EXPOSED_ITEMS:
            raise InvalidEvent(f"item_ids: {len(items)} ids, more than the limit of {MAX_EXPOSED_ITEMS}")
        first = obj.get("first_position", 0)
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise InvalidEvent(f"first_position: must be an integer >= 0, got {first!r}"[:200])
        return Exposure(
            user_id=_id(obj, "user_id", limits),
            item_ids=tuple(_id({"item_ids[]": v}, "item_ids[]", limits) for v in items),
            timestamp=_timestamp(obj, limits),
            variant=_optional_id(obj, "variant", limits),
            first_position=first,
            exposure_id=_optional_id(obj, "exposure_id", limits),
        )
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def decode(raw: bytes | bytearray | memoryview | None, kind: Kind, limits: Limits = DEFAULT_LIMITS) -> Event:
    """Parse and validate the bytes of one event; raise :class:`InvalidEvent` on any fault."""
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    raw = bytes(raw)
    if len(raw) > limits.max_bytes:
        raise InvalidEvent(f"message of {len(raw)} bytes, more than the limit of {limits.max_bytes}")
    return event_from_dict(parse_json(raw), kind, limits)


def parse_json(text: str | bytes) -> Any:
    r"""Parse UTF-8 JSON strictly (RFC 8259); anything else is :class:`InvalidEvent` with the reason.

    orjson parses (1.8x faster than the standard library here, see
    ``scripts/bench_json.py``). Besides ``NaN``/``Infinity`` it refuses what
    the standard library lets through: numbers that overflow to infinity, lone
    surrogates (``"\ud800"``, which no UTF-8 encoder can write back: such an
    id would fail later, in a Redis key), and nesting deeper than 1,024. When
    it refuses, the standard library parses again only to word the reason.

    Examples
    --------
    >>> parse_json('{"a": 1}')
    {'a': 1}
    >>> parse_json('[NaN]')
    Traceback (most recent call last):
    ...
    streamrec.events.InvalidEvent: not JSON: NaN is not a JSON number
    >>> parse_json(b'{"user_id": "\\ud800"}')
    Traceback (most recent call last):
    ...
    streamrec.events.InvalidEvent: not JSON: no low surrogate in string: line 1 column 14 (char 13)
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as fast_error:
        reason = str(fast_error)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:  # the standard library words most faults better (e.g. "NaN is not a JSON number")
        json.loads(text, parse_constant=_reject_constant)
    except InvalidEvent:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"not JSON: {exc}"[:200]) from None
    raise InvalidEvent(f"not JSON: {reason}"[:200])


def _reject_constant(name: str) -> float:
    raise InvalidEvent(f"not JSON: {name} is not a JSON number")


def encode(event: Event) -> bytes:
    """The canonical JSON bytes of ``event`` (with its ``kind``)."""
    obj = {k: v for k, v in asdict(event).items() if v is not None}
    if isinstance(event, ItemUpdate):
        obj["tags"] = list(event.tags)
    if isinstance(event, Exclusion | Exposure):
        obj["item_ids"] = list(event.item_ids)
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def to_interactions(events: Iterable[Interaction | Rating]) -> Interactions:
    """Turn interaction and rating records into a model batch (arrival order kept).

    Negative feedback (``not_interested``) is not a positive event: callers
    leave it out (see :attr:`Interaction.is_feedback`); it is refused here.

    Examples
    --------
    >>> batch = to_interactions([Interaction("u", "i", 5.0, "purchase"), Rating("u", "j", 4.0, 6.0)])
    >>> batch.weights.tolist(), batch.ratings.tolist()[0]
    ([5.0, 1.0], nan)
    """
    events = list(events)
    n = len(events)
    users = np.empty(n, dtype=object)
    items = np.empty(n, dtype=object)
    ts = np.empty(n, dtype=np.float64)
    weights = np.empty(n, dtype=np.float32)
    ratings = np.full(n, np.nan, dtype=np.float32)
    contexts: list[Any] = [None] * n
    any_context = False
    for j, e in enumerate(events):
        users[j] = e.user_id
        items[j] = e.item_id
        ts[j] = e.timestamp
        if isinstance(e, Rating):
            weights[j] = EVENT_WEIGHTS["rating"]
            ratings[j] = e.rating
        elif e.event_type in FEEDBACK_TYPES:
            raise ValueError(f"{e.event_type!r} is negative feedback: no model learns it as a positive event")
        else:
            weights[j] = EVENT_WEIGHTS.get(e.event_type, 1.0)
        if e.context:
            contexts[j] = e.context
            any_context = True
    return Interactions(users, items, ts, weights, ratings, tuple(contexts) if any_context else None)
