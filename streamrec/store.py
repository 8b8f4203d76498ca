"""The Redis layout of recommendation lists, and the code that writes and reads it.

One key per user holds a JSON document. Keys carry a *bucket* of the user,
``NN = crc32(utf-8 user id) % 64`` written with two digits, as a Redis Cluster
hash tag ``{NN}``, so that a user's key and the fallback list kept for their
bucket live in the same hash slot: one ``MGET`` of the two reads a user's list,
else the fallback, in one round trip on a single Redis and on a Redis Cluster
alike (a cluster refuses multi-key commands across slots).

``{prefix}:recs:{NN}:{user_id}``
    the default model's list;
``{prefix}:model:{model}:recs:{NN}:{user_id}``
    each configured model's list;
``{prefix}:fallback:{NN}``
    the global list (time-decayed popularity) for users with no key, one copy per bucket;
``{prefix}:fallback``
    the same global list, once (for tools that want only it);
``{prefix}:stats``
    a hash of worker counters (accepted, rejected, batches, ...);
``{prefix}:meta``
    a hash describing the running worker (models, default model, list length,
    ``updated_at``: when it last wrote);
``{prefix}:offsets``
    a hash ``topic:partition`` -> the next offset the worker will process
    (``streamrec status`` subtracts it from the partition's end: the lag);
``{prefix}:freshness``
    a capped list of the latest per-event freshness samples: seconds from the
    event reaching Kafka to its user's list being written.

What controls the served lists (read by :mod:`streamrec.serving.read_step`; each
global one is kept once per bucket, like the fallback, so a read touches one
hash slot):

``{prefix}:hidden:{NN}``
    a hash: item -> the time (seconds since the epoch) it is hidden from, ``0``
    for hidden now; items served again are deleted from it;
``{prefix}:hidden-version:{NN}``
    a hash: item -> the offset of the catalogue event that set its availability
    (an older event, replayed or read late by another worker, is not applied);
``{prefix}:tags:{NN}``
    a hash: item -> its tags (joined by ``\x1f``), for items whose tags changed
    after they were first set (lists carry each item's tags as they were when written);
``{prefix}:category:{NN}:{category}``
    a list document: the category's items by time-decayed popularity;
``{prefix}:not-interested:{NN}:{user_id}`` / ``{prefix}:excluded:{NN}:{user_id}``
    sets: items the user said they are not interested in / items excluded for them;
``{prefix}:similar:{NN}:{item_id}``
    a list document: the item's neighbours (``NN`` is the item's bucket);
``{prefix}:item-tags``
    a hash: item -> its newest tags (JSON), once (the worker compares a tag
    update with it to know whether the tags changed).

A list document::

    {"user_id": "196", "model": "itemknn", "items": ["242", "302"],
     "scores": [0.93, 0.88], "reasons": ["51", "51"], "tags": ["Drama\u001fRomance", ""],
     "computed_at": 1763870000.123, "event_ts": 881250949.0,
     "ingest_ts": 1763869999.98}

``tags`` are each item's tags when the list was written, joined by the unit
separator ``\x1f`` (``""``: none; one string per item decodes in a third of the
time a list per item takes in the read step's Lua); ``computed_at`` is
when the list was written (seconds since the epoch);
``event_ts`` is the timestamp of the newest event of this user that the list
reflects; ``ingest_ts`` is when that event reached Kafka (its record time).

Examples
--------
>>> layout = KeyLayout("streamrec")
>>> layout.bucket("196")
22
>>> layout.user_key("196"), layout.user_key("196", model="isgd"), layout.fallback_key("196")
('streamrec:recs:{22}:196', 'streamrec:model:isgd:recs:{22}:196', 'streamrec:fallback:{22}')
>>> layout.control_keys(22, "196")
['streamrec:hidden:{22}', 'streamrec:tags:{22}', 'streamrec:not-interested:{22}:196', 'streamrec:excluded:{22}:196']
>>> doc = RecList("196", "isgd", ["1", "2"], [0.5, 0.25], computed_at=10.0, event_ts=9.0)
>>> RecList.from_json(doc.to_json()) == doc
True
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

from streamrec.serving.read_step import (
    FUNCTION_NAME,
    HIDE_FUNCTION,
    READ_LIBRARY,
    ReadCall,
    is_missing_function,
    load_library,
)

__all__ = ["BUCKETS", "AsyncRecSink", "ControlWrites", "KeyLayout", "RecList", "RecsClient", "is_cluster", "sync_redis"]


def is_cluster(url: str, **redis_kwargs: Any) -> bool:
    """Whether the server at ``url`` runs in cluster mode (``INFO cluster``).

    A least-privilege ACL user that may not run ``INFO`` (``-@dangerous``) is
    taken to talk to a single server: a cluster client needs ``CLUSTER SLOTS``
    and ``INFO`` anyway, so such a user could not use a cluster either.
    """
    probe = redis.Redis.from_url(url, **{"socket_connect_timeout": 2.0, "socket_timeout": 5.0, **redis_kwargs})
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
    except redis.exceptions.NoPermissionError:
        return False
    finally:
        probe.close()


def sync_redis(url: str, **redis_kwargs: Any) -> Any:
    """A redis-py client for ``url``: a ``RedisCluster`` when the server is a cluster node, else ``Redis``."""
    if is_cluster(url, **redis_kwargs):
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **redis_kwargs)
    return redis.Redis.from_url(url, **redis_kwargs)


def async_redis(url: str, **redis_kwargs: Any) -> Any:
    """The asyncio client for ``url``, cluster-aware like :func:`sync_redis`."""
    if is_cluster(url, **redis_kwargs):
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **redis_kwargs)
    return aioredis.Redis.from_url(url, **redis_kwargs)


#: Separates an item's tags in list documents and in ``{prefix}:tags:{NN}`` (tags never hold control characters).
TAG_SEPARATOR = "\x1f"


def join_tags(tags: Sequence[str]) -> str:
    r"""An item's tags as stored: joined by :data:`TAG_SEPARATOR` (``""`` for none).

    Examples
    --------
    >>> join_tags(["Shoes", "Sale"]), split_tags(join_tags(["Shoes", "Sale"])), split_tags("")
    ('Shoes\x1fSale', ['Shoes', 'Sale'], [])
    """
    return TAG_SEPARATOR.join(tags)


def split_tags(joined: str) -> list[str]:
    """The tags :func:`join_tags` joined."""
    return joined.split(TAG_SEPARATOR) if joined else []


#: Number of user buckets (hash tags), hence of fallback copies.
BUCKETS = 64
#: Seconds a minute's live quality counts are kept (the longest window ``streamrec status`` shows is a day).
QUALITY_KEEP = 2 * 86_400


@dataclass(frozen=True)
class KeyLayout:
    """Names of the Redis keys under one prefix (see the module docstring)."""

    prefix: str = "streamrec"

    @staticmethod
    def bucket(user_id: str) -> int:
        """``crc32(utf-8 user id) % 64``: the hash tag a user's keys and their fallback copy share."""
        return zlib.crc32(str(user_id).encode("utf-8")) % BUCKETS

    def user_key(self, user_id: str, model: str | None = None) -> str:
        tag = f"{{{self.bucket(user_id):02d}}}"
        if model is None:
            return f"{self.prefix}:recs:{tag}:{user_id}"
        return f"{self.prefix}:model:{model}:recs:{tag}:{user_id}"

    def fallback_key(self, user_id: str | None = None) -> str:
        """The fallback copy in ``user_id``'s slot, or the single global key without a user."""
        if user_id is None:
            return f"{self.prefix}:fallback"
        return f"{self.prefix}:fallback:{{{self.bucket(user_id):02d}}}"

    def fallback_keys(self) -> list[str]:
        """Every key the fallback list is written to: one per bucket, and the global one."""
        return [f"{self.prefix}:fallback:{{{b:02d}}}" for b in range(BUCKETS)] + [self.fallback_key()]

    @staticmethod
    def tag(bucket: int) -> str:
        """The hash tag of ``bucket``: ``{NN}``."""
        return f"{{{bucket:02d}}}"

    def hidden_key(self, bucket: int) -> str:
        return f"{self.prefix}:hidden:{self.tag(bucket)}"

    def hidden_version_key(self, bucket: int) -> str:
        return f"{self.prefix}:hidden-version:{self.tag(bucket)}"

    def tags_key(self, bucket: int) -> str:
        return f"{self.prefix}:tags:{self.tag(bucket)}"

    def not_interested_key(self, user_id: str) -> str:
        return f"{self.prefix}:not-interested:{self.tag(self.bucket(user_id))}:{user_id}"

    def excluded_key(self, user_id: str) -> str:
        return f"{self.prefix}:excluded:{self.tag(self.bucket(user_id))}:{user_id}"

    def control_keys(self, bucket: int, user_id: str | None = None) -> list[str]:
        """The four keys after the list key of a read (:mod:`streamrec.serving.read_step`), in ``bucket``'s slot.

        Without a user the two sets are keys that never exist (no user id is empty).
        """
        user = "" if user_id is None else str(user_id)
        tag = self.tag(bucket)
        return [
            self.hidden_key(bucket),
            self.tags_key(bucket),
            f"{self.prefix}:not-interested:{tag}:{user}",
            f"{self.prefix}:excluded:{tag}:{user}",
        ]

    def category_key(self, bucket: int, category: str) -> str:
        return f"{self.prefix}:category:{self.tag(bucket)}:{category}"

    def similar_key(self, item_id: str) -> str:
        """The item's similar-items list, in the item's bucket."""
        return f"{self.prefix}:similar:{self.tag(self.bucket(item_id))}:{item_id}"

    def item_tags_key(self) -> str:
        return f"{self.prefix}:item-tags"

    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

    def quality_key(self, minute: int | None = None) -> str:
        """Live quality counts: the running totals, or those of one wall-clock minute (``int(time // 60)``)."""
        return f"{self.prefix}:quality" if minute is None else f"{self.prefix}:quality:{minute}"

    def variant_users_key(self, experiment: str, variant: str) -> str:
        """The HyperLogLog of the users an experiment's variant served."""
        return f"{self.prefix}:experiment:{experiment}:users:{variant}"

    def meta_key(self) -> str:
        return f"{self.prefix}:meta"

    def freshness_key(self) -> str:
        return f"{self.prefix}:freshness"

    def offsets_key(self) -> str:
        return f"{self.prefix}:offsets"

    def pattern(self) -> str:
        return f"{self.prefix}:*"


@dataclass(frozen=True)
class RecList:
    """One user's ranked list as stored in Redis."""

    user_id: str
    model: str
    items: list[str]
    scores: list[float]
    computed_at: float = field(default_factory=time.time)
    event_ts: float | None = None
    ingest_ts: float | None = None
    reasons: list[str | None] | None = None
    fallback: bool = False
    #: each item's tags when the list was written (the read step filters categories with them)
    tags: list[list[str]] | None = None
    #: items a read took from a filler list (the fallback or category lists) to reach ``k``
    filled: int = 0
    #: the experiment's variant this list serves (:mod:`streamrec.experiments`), on the plain key of a user in one
    variant: str | None = None

    def to_json(self) -> bytes:
        """The document's bytes (orjson: 2x the standard library here; a NaN score is written as ``null``)."""
        doc: dict[str, Any] = {
            "user_id": self.user_id,
            "model": self.model,
            "items": self.items,
            "scores": np.asarray(self.scores, dtype=np.float32),  # shortest float32 text: 7 digits, no rounding loop
            "computed_at": self.computed_at,
        }
        if self.event_ts is not None:
            doc["event_ts"] = self.event_ts
        if self.ingest_ts is not None:
            doc["ingest_ts"] = self.ingest_ts
        if self.reasons is not None:
            doc["reasons"] = self.reasons
        if self.tags is not None:
            doc["tags"] = [join_tags(t) for t in self.tags]
        if self.variant is not None:
            doc["variant"] = self.variant
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes | str, fallback: bool = False) -> RecList:
        doc = orjson.loads(raw)
        return cls(
            user_id=doc.get("user_id", ""),
            model=doc["model"],
            items=list(doc["items"]),
            scores=[math.nan if s is None else float(s) for s in doc["scores"]],
            computed_at=float(doc["computed_at"]),
            event_ts=doc.get("event_ts"),
            ingest_ts=doc.get("ingest_ts"),
            reasons=doc.get("reasons"),
            fallback=fallback,
            tags=None if doc.get("tags") is None else [split_tags(t) for t in doc["tags"]],
            variant=doc.get("variant"),
        )


class RecsClient:
    """Read recommendations from Redis (what an application does).

    Every read goes through the one read step of :mod:`streamrec.serving.read_step`
    (a Redis Function, one round trip): hidden and expired items, the user's
    "not interested" and excluded items and the request's ``exclude`` never
    come back, and a short answer is filled from the fallback (or, with
    ``categories``, from the category lists) through the same filter.

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` for TLS; user and password in the URL).
    prefix
        Key prefix the worker writes under.
    k
        Default number of items a read returns.
    """

    def __init__(
        self, url: str, prefix: str = "streamrec", k: int = 20, exposures: Any = None, **redis_kwargs: Any
    ) -> None:
        self.layout = KeyLayout(prefix)
        self.redis = sync_redis(url, **redis_kwargs)
        self.k = k
        #: where :meth:`record_exposure` sends (a :class:`producers.exposures.ExposureLog`), if anywhere
        self.exposures = exposures

    def record_exposure(
        self,
        user_id: str,
        shown: RecList | Sequence[str],
        variant: str | None = None,
        first_position: int = 0,
        exposure_id: str | None = None,
    ) -> bool:
        """Record what the application showed ``user_id`` (a read's answer, or the ids in order shown).

        Asynchronous: it never blocks or raises into the read path; ``False`` when no exposure log
        was given or the record was dropped (a full buffer). A :class:`RecList` brings its variant.
        """
        if self.exposures is None:
            return False
        if isinstance(shown, RecList):
            items, variant = shown.items, variant or shown.variant
        else:
            items = list(shown)
        return bool(self.exposures.record(user_id, items, variant, first_position, exposure_id))

    def _call(self, call: ReadCall) -> dict[str, Any]:
        try:
            raw = self.redis.fcall_ro(FUNCTION_NAME, *call.arguments())
        except redis.exceptions.ResponseError as exc:
            if not is_missing_function(exc):
                raise
            load_library(self.redis)  # a server the worker has not loaded it on yet (or restarted since)
            raw = self.redis.fcall_ro(FUNCTION_NAME, *call.arguments())
        return orjson.loads(raw)

    def read(
        self,
        user_id: str | None,
        model: str | None = None,
        k: int | None = None,
        *,
        categories: Sequence[str] = (),
        exclude: Sequence[str] = (),
        per_category: int = 0,
        with_fallback: bool = True,
    ) -> RecList | None:
        """What may be served to ``user_id``: their list (or ``model``'s), filtered, filled up to ``k``.

        ``categories`` keeps items tagged with any of them (filled from the
        category lists); ``exclude`` leaves items out of this answer (e.g. the
        cart); ``per_category`` > 0 keeps at most that many items per tag.
        Without a user the answer is the fallback (or category lists) alone.
        Returns ``None`` when nothing is stored to serve.
        """
        call = self.read_call(user_id, model, k, categories, exclude, per_category, with_fallback)
        return self._rec_list(self._call(call), "" if user_id is None else str(user_id))

    def read_call(
        self,
        user_id: str | None,
        model: str | None = None,
        k: int | None = None,
        categories: Sequence[str] = (),
        exclude: Sequence[str] = (),
        per_category: int = 0,
        with_fallback: bool = True,
    ) -> ReadCall:
        """The ``streamrec_read`` call of :meth:`read` (what another language would send)."""
        if user_id is None:  # the fallback or the category lists alone, in bucket 0
            bucket = 0
            list_key = self.layout.category_key(0, categories[0]) if categories else self._fallback_copy(0)
        else:
            bucket = self.layout.bucket(str(user_id))
            list_key = self.layout.user_key(str(user_id), model)
        fillers = [self.layout.category_key(bucket, c) for c in categories]
        if with_fallback:  # after the category lists: its items pass the same category filter
            fillers.append(self._fallback_copy(bucket))
        return ReadCall(
            [list_key, *self.layout.control_keys(bucket, None if user_id is None else str(user_id))],
            fillers,
            k=self.k if k is None else k,
            per_category=per_category,
            categories=list(categories),
            leave_out=[str(i) for i in exclude],
        )

    def _fallback_copy(self, bucket: int) -> str:
        return f"{self.layout.prefix}:fallback:{self.layout.tag(bucket)}"

    @staticmethod
    def _rec_list(reply: Mapping[str, Any], user_id: str) -> RecList | None:
        if reply["model"] is None:
            return None  # neither the list nor any filler exists
        return RecList(
            user_id=user_id,
            model=reply["model"],
            items=list(reply["items"]),
            scores=[math.nan if s is None else float(s) for s in reply["scores"]],
            computed_at=float(reply["computed_at"] or 0.0),
            event_ts=reply.get("event_ts"),
            ingest_ts=reply.get("ingest_ts"),
            reasons=reply["reasons"] if any(r is not None for r in reply["reasons"]) else None,
            fallback=bool(reply["fallback"]),
            filled=int(reply["filled"]),
            variant=reply.get("variant"),
        )

    def get(
        self, user_id: str, model: str | None = None, with_fallback: bool = True, k: int | None = None
    ) -> RecList | None:
        """The list for ``user_id`` (one round trip), else the global fallback list, filtered (see :meth:`read`).

        Returns ``None`` only when neither exists (nothing processed yet).
        """
        return self.read(user_id, model, k, with_fallback=with_fallback)

    def get_many(
        self, user_ids: Sequence[str], model: str | None = None, k: int | None = None
    ) -> dict[str, RecList | None]:
        """Lists for several users, filtered, in one pipeline (no fallback)."""
        users = [str(u) for u in user_ids]
        if not users:
            return {}
        first = self.read(users[0], model, k, with_fallback=False)  # loads the function if the server lacks it
        pipe = self.redis.pipeline(transaction=False)  # a cluster pipeline groups the calls by slot
        for user in users[1:]:
            pipe.fcall_ro(FUNCTION_NAME, *self.read_call(user, model, k, with_fallback=False).arguments())
        replies = pipe.execute() if len(users) > 1 else []
        out = {users[0]: first}
        for user, raw in zip(users[1:], replies, strict=True):
            out[user] = self._rec_list(orjson.loads(raw), user)
        return out

    def similar(
        self,
        item_id: str,
        k: int | None = None,
        *,
        categories: Sequence[str] = (),
        exclude: Sequence[str] = (),
        per_category: int = 0,
        user_id: str | None = None,
    ) -> RecList | None:
        """Items similar to ``item_id`` (its neighbours), filtered like every list; ``None`` when none are stored.

        With ``categories`` the answer keeps items of those categories and is
        filled from the category lists. With ``user_id`` the user's "not
        interested" and excluded items are left out too: their two sets live
        in the user's hash slot, not the item's, so they are read first
        (``SUNION`` of the two, one more round trip) and passed as items to
        leave out.
        """
        item_id = str(item_id)
        if user_id is not None:
            user = str(user_id)
            sets = self.redis.sunion([self.layout.not_interested_key(user), self.layout.excluded_key(user)])
            exclude = [*exclude, *sorted(m.decode() if isinstance(m, bytes) else str(m) for m in sets)]
        bucket = self.layout.bucket(item_id)
        call = ReadCall(
            [self.layout.similar_key(item_id), *self.layout.control_keys(bucket)],
            [self.layout.category_key(bucket, c) for c in categories],
            k=self.k if k is None else k,
            per_category=per_category,
            categories=list(categories),
            leave_out=[item_id, *[str(i) for i in exclude]],
        )
        return self._rec_list(self._call(call), "")

    def quality(self, minutes: int | None = None, now: float | None = None) -> dict[str, float]:
        """Live quality counts of every worker: the running totals, or those of the last ``minutes`` minutes.

        Summarise them with :func:`streamrec.live_quality.summarise`.
        """
        return self.quality_windows({"": minutes}, now)[""]

    def quality_windows(
        self, windows: Mapping[str, int | None], now: float | None = None
    ) -> dict[str, dict[str, float]]:
        """:meth:`quality` of several windows (label -> minutes, ``None``: the totals), each minute read once."""
        longest = max((m for m in windows.values() if m is not None), default=0)
        current = int((time.time() if now is None else now) // 60)
        pipe = self.redis.pipeline(transaction=False)
        for minute in range(current - longest + 1, current + 1):  # the oldest first
            pipe.hgetall(self.layout.quality_key(minute))
        if None in windows.values():
            pipe.hgetall(self.layout.quality_key())
        raw = pipe.execute()
        totals = raw.pop() if None in windows.values() else {}
        out: dict[str, dict[str, float]] = {}
        for label, minutes in windows.items():
            summed: dict[str, float] = {}
            for counts in [totals] if minutes is None else raw[len(raw) - minutes :] if minutes else []:
                for name, value in counts.items():
                    key = name.decode()
                    summed[key] = summed.get(key, 0.0) + float(value)
            out[label] = summed
        return out

    def variant_users(self, experiment: str, variants: Sequence[str]) -> dict[str, int]:
        """Distinct users each variant of ``experiment`` served (HyperLogLog estimates, 0.81% standard error)."""
        return {v: int(self.redis.pfcount(self.layout.variant_users_key(experiment, v))) for v in variants}

    def stats(self) -> dict[str, float]:
        """The worker's counters."""
        return {k.decode(): float(v) for k, v in self.redis.hgetall(self.layout.stats_key()).items()}

    def freshness(self) -> list[float]:
        """The latest freshness samples (seconds from Kafka to Redis), oldest first."""
        return [float(v) for v in self.redis.lrange(self.layout.freshness_key(), 0, -1)]

    def meta(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.layout.meta_key()).items()}

    def offsets(self) -> dict[tuple[str, int], int]:
        """The next offset the worker will process, per ``(topic, partition)``."""
        out = {}
        for key, value in self.redis.hgetall(self.layout.offsets_key()).items():
            topic, _, partition = key.decode().rpartition(":")
            out[(topic, int(partition))] = int(value)
        return out

    def close(self) -> None:
        self.redis.close()


def get_recommendations(user_id: str, url: str, prefix: str = "streamrec", model: str | None = None) -> RecList | None:
    """One-shot read of a user's list (opens and closes a connection)."""
    client = RecsClient(url, prefix)
    try:
        return client.get(user_id, model)
    finally:
        client.close()


@dataclass
class ControlWrites:
    """What controls the served lists, to write with a batch (see the module docstring for the keys).

    ``hidden`` maps items to the time they are hidden from (``None``: served
    again), written through the ``streamrec_hide`` function with the item's
    ``versions`` (the catalogue event's offset: an older one never overwrites a
    newer one; without a version the write always applies); ``tag_overrides`` are tags that changed (written per bucket),
    ``item_tags`` every item's newest tags (written once); ``user_sets`` are
    ``(user, "not-interested" or "excluded", "add" or "remove", items)``;
    ``categories`` the category lists; ``similar`` item -> its similar-items list.

    Examples
    --------
    >>> pending = ControlWrites(hidden={"sku-1": 0.0}, versions={"sku-1": 41})
    >>> pending.merge(ControlWrites(hidden={"sku-1": None}, versions={"sku-1": 42}))   # shown again, later
    >>> pending.hidden, pending.versions, bool(ControlWrites())
    ({'sku-1': None}, {'sku-1': 42}, False)
    """

    hidden: dict[str, float | None] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    tag_overrides: dict[str, tuple[str, ...]] = field(default_factory=dict)
    item_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    user_sets: list[tuple[str, str, str, tuple[str, ...]]] = field(default_factory=list)
    categories: dict[str, RecList] = field(default_factory=dict)
    similar: dict[str, RecList] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.hidden or self.tag_overrides or self.item_tags or self.user_sets or self.categories or self.similar
        )

    def merge(self, newer: ControlWrites) -> None:
        """Add ``newer`` writes after these (``newer`` wins where both name an item, user set or list)."""
        self.hidden.update(newer.hidden)
        for item in newer.hidden:
            if item in newer.versions:
                self.versions[item] = newer.versions[item]
            else:
                self.versions.pop(item, None)
        self.tag_overrides.update(newer.tag_overrides)
        self.item_tags.update(newer.item_tags)
        self.user_sets.extend(newer.user_sets)
        self.categories.update(newer.categories)
        self.similar.update(newer.similar)

    def add(self, pipe: Any, layout: KeyLayout, hides: bool = True) -> None:
        """Queue the writes on a (cluster) pipeline; hides and tag changes go to every bucket's copy.

        ``hides=False`` leaves the hides out (:meth:`add_hides` queues them alone).
        """
        if hides:
            self.add_hides(pipe, layout)
        overrides = {item: join_tags(tags) for item, tags in self.tag_overrides.items()}
        payloads = {cat: doc.to_json() for cat, doc in self.categories.items()}
        for bucket in range(BUCKETS):
            if overrides:
                pipe.hset(layout.tags_key(bucket), mapping=overrides)
            for cat, payload in payloads.items():
                pipe.set(layout.category_key(bucket, cat), payload)
        for user, which, action, items in self.user_sets:
            key = layout.not_interested_key(user) if which == "not-interested" else layout.excluded_key(user)
            (pipe.sadd if action == "add" else pipe.srem)(key, *items)
        for item, doc in self.similar.items():
            pipe.set(layout.similar_key(item), doc.to_json())

    def add_hides(self, pipe: Any, layout: KeyLayout) -> None:
        """Queue the availability writes: one ``streamrec_hide`` call per bucket (versioned, idempotent)."""
        hide: list[str] = []
        for item, until in self.hidden.items():
            version = self.versions.get(item)
            hide += [item, "" if version is None else str(version), "" if until is None else f"{until:.6f}"]
        if hide:
            for bucket in range(BUCKETS):
                pipe.fcall(HIDE_FUNCTION, 2, layout.hidden_key(bucket), layout.hidden_version_key(bucket), *hide)

    def add_item_tags(self, pipe: Any, layout: KeyLayout) -> None:
        """Queue the newest tags of items (once, after the overrides are written)."""
        if self.item_tags:
            pipe.hset(layout.item_tags_key(), mapping={i: orjson.dumps(list(t)) for i, t in self.item_tags.items()})


class AsyncRecSink:
    """Writes a batch of lists, the fallback and counters in one Redis pipeline."""

    def __init__(self, url: str, prefix: str = "streamrec", ttl: int | None = None, **redis_kwargs: Any) -> None:
        self.layout = KeyLayout(prefix)
        self.ttl = ttl
        # a Redis that hangs must raise (and the lists stay pending), not block the worker
        redis_kwargs.setdefault("socket_timeout", 5.0)
        redis_kwargs.setdefault("socket_connect_timeout", 2.0)
        self._url, self._kwargs = url, redis_kwargs
        self.redis: Any = None

    async def _client(self) -> Any:
        """The client, made on first use (finding out whether the server is a cluster needs it to answer)."""
        if self.redis is None:
            self.redis = async_redis(self._url, **self._kwargs)
        return self.redis

    async def check(self) -> None:
        """Fail early when Redis does not answer; load the read function (:mod:`streamrec.serving.read_step`)."""
        client = await self._client()
        await client.ping()
        try:
            await client.function_load(READ_LIBRARY, replace=True)  # a cluster client loads it on every node
        except redis.exceptions.ResponseError as exc:  # Redis < 7, or an ACL user without @scripting
            logging.getLogger("streamrec.store").warning(
                "could not load the read function (%s): readers load it themselves, or cannot read (Redis >= 7)", exc
            )

    async def previous_tags(self, items: Sequence[str]) -> dict[str, tuple[str, ...] | None]:
        """The newest tags written for ``items`` (``None`` for items never written), one round trip."""
        if not items:
            return {}
        raws = await (await self._client()).hmget(self.layout.item_tags_key(), list(items))
        return {i: None if r is None else tuple(orjson.loads(r)) for i, r in zip(items, raws, strict=True)}

    async def write(
        self,
        lists: Iterable[tuple[RecList, bool]],
        fallback: RecList | None = None,
        counters: Mapping[str, float] | None = None,
        meta: Mapping[str, str] | None = None,
        freshness: Sequence[float] | None = None,
        freshness_cap: int = 100_000,
        forget: Mapping[str, Sequence[str]] | None = None,
        offsets: Mapping[tuple[str, int], int] | None = None,
        controls: ControlWrites | None = None,
        quality: Mapping[int, Mapping[str, float]] | None = None,
        experiment: tuple[str, Mapping[str, Sequence[str]]] | None = None,
    ) -> int:
        """Write ``(list, is_default)`` pairs; a default list also goes to the plain key.

        ``freshness`` samples are appended to the capped freshness list.
        ``forget`` maps user ids to the models whose keys are deleted first
        (with the plain key and the user's exclusion sets), for privacy
        requests. ``offsets`` are the next offsets to process per ``(topic,
        partition)``. ``controls`` (hidden items, tags, exclusions, category and
        similar lists) go first: a hide reaches Redis with the lists written
        after it, in the same pipeline. Every write stamps ``updated_at`` in
        the meta hash. ``quality`` holds live quality counts per wall-clock
        minute (:mod:`streamrec.live_quality`), added to the minute's hash and
        to the running totals; ``experiment`` is ``(name, variant -> users)``,
        added to each variant's HyperLogLog of users.
        """
        client = await self._client()
        if controls is not None and controls.hidden:
            await self.write_hides(controls)
        pipe = client.pipeline(transaction=False)  # a cluster pipeline groups commands by slot
        if controls:
            controls.add(pipe, self.layout, hides=False)
        for user, user_models in (forget or {}).items():
            keys = [self.layout.user_key(user), *[self.layout.user_key(user, m) for m in user_models]]
            keys += [self.layout.not_interested_key(user), self.layout.excluded_key(user)]
            for key in keys:
                pipe.delete(key)
        n = 0
        for rec, is_default in lists:
            payload = rec.to_json()
            pipe.set(self.layout.user_key(rec.user_id, rec.model), payload, ex=self.ttl)
            if is_default:
                pipe.set(self.layout.user_key(rec.user_id), payload, ex=self.ttl)
            n += 1
        if fallback is not None:
            payload = fallback.to_json()
            for key in self.layout.fallback_keys():
                pipe.set(key, payload)
        if counters:
            for name, value in counters.items():
                pipe.hincrbyfloat(self.layout.stats_key(), name, value)
        pipe.hset(self.layout.meta_key(), mapping={**(meta or {}), "updated_at": f"{time.time():.3f}"})
        if offsets:
            pipe.hset(self.layout.offsets_key(), mapping={f"{t}:{p}": o for (t, p), o in offsets.items()})
        for minute, counts in (quality or {}).items():
            key = self.layout.quality_key(minute)
            for name, value in counts.items():
                pipe.hincrbyfloat(key, name, value)
                pipe.hincrbyfloat(self.layout.quality_key(), name, value)
            pipe.expire(key, QUALITY_KEEP)
        if experiment is not None:
            name, by_variant = experiment
            for variant, users in by_variant.items():
                if users:
                    pipe.pfadd(self.layout.variant_users_key(name, variant), *users)
        if freshness:
            key = self.layout.freshness_key()
            pipe.rpush(key, *[f"{f:.6f}" for f in freshness])
            pipe.ltrim(key, -freshness_cap, -1)
        await pipe.execute()
        if controls is not None and controls.item_tags:  # after the overrides: never a newest tag without them
            pipe = client.pipeline(transaction=False)
            controls.add_item_tags(pipe, self.layout)
            await pipe.execute()
        return n

    async def write_hides(self, controls: ControlWrites) -> None:
        """The hides of ``controls`` alone, in a pipeline of their own: a Redis that lost the functions (a restart) gets them again, and they are retried.

        Retrying is safe because every write is versioned (or idempotent);
        the main pipeline, which increments counters, is never retried.
        """
        client = await self._client()
        for attempt in (1, 2):
            pipe = client.pipeline(transaction=False)
            controls.add_hides(pipe, self.layout)
            try:
                await pipe.execute()
                return
            except redis.exceptions.ResponseError as exc:
                if attempt == 2 or not is_missing_function(exc):
                    raise
                await client.function_load(READ_LIBRARY, replace=True)

    async def read_lists(
        self, users: Sequence[str], names: Sequence[str]
    ) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
        """The items of each user's stored list under each of ``names`` (absent ones left out), and the fallback's.

        One pipeline (the live quality of users whose lists another worker wrote).
        """
        client = await self._client()
        pipe = client.pipeline(transaction=False)
        for user in users:
            for name in names:
                pipe.get(self.layout.user_key(user, name))
        pipe.get(self.layout.fallback_key())
        raws = await pipe.execute()
        out: dict[str, dict[str, list[str]]] = {}
        for n, user in enumerate(users):
            for j, name in enumerate(names):
                raw = raws[n * len(names) + j]
                if raw is not None:
                    out.setdefault(user, {})[name] = list(orjson.loads(raw)["items"])
        fallback = list(orjson.loads(raws[-1])["items"]) if raws[-1] is not None else []
        return out, fallback

    async def set_stat(self, name: str, value: float) -> None:
        await (await self._client()).hset(self.layout.stats_key(), name, value)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
