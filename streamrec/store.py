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
>>> layout.bucket("196")
22
>>> layout.user_key("196"), layout.user_key("196", model="isgd"), layout.fallback_key("196")
('streamrec:recs:{22}:196', 'streamrec:model:isgd:recs:{22}:196', 'streamrec:fallback:{22}')
>>> doc = RecList("196", "isgd", ["1", "2"], [0.5, 0.25], computed_at=10.0, event_ts=9.0)
>>> RecList.from_json(doc.to_json()) == doc
True
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
import redis
import redis.asyncio as aioredis

__all__ = ["BUCKETS", "AsyncRecSink", "KeyLayout", "RecList", "RecsClient", "is_cluster", "sync_redis"]


def is_cluster(url: str, **redis_kwargs: Any) -> bool:
    """Whether the server at ``url`` runs in cluster mode (``INFO cluster``)."""
    probe = redis.Redis.from_url(url, **{"socket_connect_timeout": 2.0, "socket_timeout": 5.0, **redis_kwargs})
    try:
        return bool(probe.info("cluster").get("cluster_enabled"))
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


#: Number of user buckets (hash tags), hence of fallback copies.
BUCKETS = 64


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
            "scores": np.asarray(self.scores, dtype=np.float32),  # shortest float32 text: 7 digits, no rounding loop
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
        self.redis = sync_redis(url, **redis_kwargs)

    def get(self, user_id: str, model: str | None = None, with_fallback: bool = True) -> RecList | None:
        """The list for ``user_id`` (one round trip), else the global fallback list.

        Returns ``None`` only when neither exists (nothing processed yet).
        """
        user_key = self.layout.user_key(str(user_id), model)
        if not with_fallback:
            raw = self.redis.get(user_key)
            return None if raw is None else RecList.from_json(raw)
        raw, fallback = self.redis.mget([user_key, self.layout.fallback_key(str(user_id))])  # one slot
        if raw is not None:
            return RecList.from_json(raw)
        if fallback is not None:
            doc = RecList.from_json(fallback, fallback=True)
            return RecList(**{**asdict(doc), "user_id": str(user_id)})
        return None

    def get_many(self, user_ids: Sequence[str], model: str | None = None) -> dict[str, RecList | None]:
        """Lists for several users in one round trip (no fallback)."""
        keys = [self.layout.user_key(str(u), model) for u in user_ids]
        mget = getattr(self.redis, "mget_nonatomic", self.redis.mget)  # a cluster splits keys by slot
        raws = mget(keys) if keys else []
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
        self._url, self._kwargs = url, redis_kwargs
        self.redis: Any = None

    async def _client(self) -> Any:
        """The client, made on first use (finding out whether the server is a cluster needs it to answer)."""
        if self.redis is None:
            self.redis = async_redis(self._url, **self._kwargs)
        return self.redis

    async def check(self) -> None:
        """Fail early, with the URL's host in the message, when Redis does not answer."""
        await (await self._client()).ping()

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
        pipe = (await self._client()).pipeline(transaction=False)  # a cluster pipeline groups commands by slot
        for user, user_models in (forget or {}).items():
            for key in [self.layout.user_key(user), *[self.layout.user_key(user, m) for m in user_models]]:
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
        if freshness:
            key = self.layout.freshness_key()
            pipe.rpush(key, *[f"{f:.6f}" for f in freshness])
            pipe.ltrim(key, -freshness_cap, -1)
        await pipe.execute()
        return n

    async def set_stat(self, name: str, value: float) -> None:
        await (await self._client()).hset(self.layout.stats_key(), name, value)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
