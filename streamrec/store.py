"""The Redis layout of recommendation lists, and the code that writes and reads it.

One key per user holds a JSON document (one ``GET`` from any language):

``{prefix}:recs:{user_id}``
    the default model's list;
``{prefix}:model:{model}:recs:{user_id}``
    each configured model's list;
``{prefix}:fallback``
    the global list (time-decayed popularity) for users with no key;
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

A list document::

    {"user_id": "196", "model": "itemknn", "items": ["242", "302"],
     "scores": [0.93, 0.88], "reasons": ["51", "51"],
     "computed_at": 1763870000.123, "event_ts": 881250949.0,
     "ingest_ts": 1763869999.98}

``computed_at`` is when the list was written (seconds since the epoch);
``event_ts`` is the timestamp of the newest event of this user that the list
reflects; ``ingest_ts`` is when that event reached Kafka (its record time).

Examples
--------
>>> layout = KeyLayout("streamrec")
>>> layout.user_key("196"), layout.user_key("196", model="isgd"), layout.fallback_key()
('streamrec:recs:196', 'streamrec:model:isgd:recs:196', 'streamrec:fallback')
>>> doc = RecList("196", "isgd", ["1", "2"], [0.5, 0.25], computed_at=10.0, event_ts=9.0)
>>> RecList.from_json(doc.to_json()) == doc
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

__all__ = ["AsyncRecSink", "KeyLayout", "RecList", "RecsClient"]


@dataclass(frozen=True)
class KeyLayout:
    """Names of the Redis keys under one prefix."""

    prefix: str = "streamrec"

    def user_key(self, user_id: str, model: str | None = None) -> str:
        if model is None:
            return f"{self.prefix}:recs:{user_id}"
        return f"{self.prefix}:model:{model}:recs:{user_id}"

    def fallback_key(self) -> str:
        return f"{self.prefix}:fallback"

    def stats_key(self) -> str:
        return f"{self.prefix}:stats"

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

    def to_json(self) -> bytes:
        """The document's bytes (orjson: 2x the standard library here; a NaN score is written as ``null``)."""
        doc: dict[str, Any] = {
            "user_id": self.user_id,
            "model": self.model,
            "items": self.items,
            "scores": [round(s, 6) for s in self.scores],
            "computed_at": self.computed_at,
        }
        if self.event_ts is not None:
            doc["event_ts"] = self.event_ts
        if self.ingest_ts is not None:
            doc["ingest_ts"] = self.ingest_ts
        if self.reasons is not None:
            doc["reasons"] = self.reasons
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
        )


class RecsClient:
    """Read recommendations from Redis (what an application does).

    Parameters
    ----------
    url
        ``redis://host:port/db`` (``rediss://`` for TLS; user and password in the URL).
    prefix
        Key prefix the worker writes under.
    """

    def __init__(self, url: str, prefix: str = "streamrec", **redis_kwargs: Any) -> None:
        self.layout = KeyLayout(prefix)
        self.redis = redis.Redis.from_url(url, **redis_kwargs)

    def get(self, user_id: str, model: str | None = None, with_fallback: bool = True) -> RecList | None:
        """The list for ``user_id`` (one round trip), else the global fallback list.

        Returns ``None`` only when neither exists (nothing processed yet).
        """
        user_key = self.layout.user_key(str(user_id), model)
        if not with_fallback:
            raw = self.redis.get(user_key)
            return None if raw is None else RecList.from_json(raw)
        raw, fallback = self.redis.mget([user_key, self.layout.fallback_key()])
        if raw is not None:
            return RecList.from_json(raw)
        if fallback is not None:
            doc = RecList.from_json(fallback, fallback=True)
            return RecList(**{**asdict(doc), "user_id": str(user_id)})
        return None

    def get_many(self, user_ids: Sequence[str], model: str | None = None) -> dict[str, RecList | None]:
        """Lists for several users in one round trip (no fallback)."""
        keys = [self.layout.user_key(str(u), model) for u in user_ids]
        raws = self.redis.mget(keys) if keys else []
        return {str(u): (None if r is None else RecList.from_json(r)) for u, r in zip(user_ids, raws, strict=True)}

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


class AsyncRecSink:
    """Writes a batch of lists, the fallback and counters in one Redis pipeline."""

    def __init__(self, url: str, prefix: str = "streamrec", ttl: int | None = None, **redis_kwargs: Any) -> None:
        self.layout = KeyLayout(prefix)
        self.ttl = ttl
        # a Redis that hangs must raise (and the lists stay pending), not block the worker
        redis_kwargs.setdefault("socket_timeout", 5.0)
        redis_kwargs.setdefault("socket_connect_timeout", 2.0)
        self.redis = aioredis.Redis.from_url(url, **redis_kwargs)

    async def check(self) -> None:
        """Fail early, with the URL's host in the message, when Redis does not answer."""
        await self.redis.ping()

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
    ) -> int:
        """Write ``(list, is_default)`` pairs; a default list also goes to the plain key.

        ``freshness`` samples are appended to the capped freshness list.
        ``forget`` maps user ids to the models whose keys are deleted first
        (with the plain key), for privacy requests. ``offsets`` are the next
        offsets to process per ``(topic, partition)``. Every write stamps
        ``updated_at`` in the meta hash.
        """
        pipe = self.redis.pipeline(transaction=False)
        for user, user_models in (forget or {}).items():
            pipe.delete(self.layout.user_key(user), *[self.layout.user_key(user, m) for m in user_models])
        n = 0
        for rec, is_default in lists:
            payload = rec.to_json()
            pipe.set(self.layout.user_key(rec.user_id, rec.model), payload, ex=self.ttl)
            if is_default:
                pipe.set(self.layout.user_key(rec.user_id), payload, ex=self.ttl)
            n += 1
        if fallback is not None:
            pipe.set(self.layout.fallback_key(), fallback.to_json())
        if counters:
            for name, value in counters.items():
                pipe.hincrbyfloat(self.layout.stats_key(), name, value)
        pipe.hset(self.layout.meta_key(), mapping={**(meta or {}), "updated_at": f"{time.time():.3f}"})
        if offsets:
            pipe.hset(self.layout.offsets_key(), mapping={f"{t}:{p}": o for (t, p), o in offsets.items()})
        if freshness:
            key = self.layout.freshness_key()
            pipe.rpush(key, *[f"{f:.6f}" for f in freshness])
            pipe.ltrim(key, -freshness_cap, -1)
        await pipe.execute()
        return n

    async def set_stat(self, name: str, value: float) -> None:
        await self.redis.hset(self.layout.stats_key(), name, value)

    async def close(self) -> None:
        await self.redis.aclose()
