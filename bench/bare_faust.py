"""A bare Faust agent that only consumes (the framework's ceiling for bench/live.py).

It takes the same micro-batches as the worker (``stream.take_events``) and
adds their size to a Redis counter, nothing else. Configured by environment:
``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``, ``BENCH_APP_ID``, ``BENCH_TOPIC``,
``BENCH_STATS_KEY``, ``STREAMREC_BATCH_SIZE``, ``STREAMREC_BATCH_WITHIN``.
"""

from __future__ import annotations

import os
import tempfile

import faust
import redis.asyncio as aioredis

app = faust.App(
    os.environ.get("BENCH_APP_ID", "bench-bare"),
    broker=f"kafka://{os.environ.get('KAFKA_BOOTSTRAP_SERVERS', '127.0.0.1:9092')}",
    store="memory://",
    datadir=os.path.join(tempfile.gettempdir(), "{conf.name}-data"),  # not the working folder
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    web_enabled=False,
    autodiscover=False,
    topic_replication_factor=1,
    stream_buffer_maxsize=max(4096, 4 * int(os.environ.get("STREAMREC_BATCH_SIZE", "1000"))),
)
topic = app.topic(
    os.environ.get("BENCH_TOPIC", "bench"), value_type=bytes, value_serializer="raw", key_serializer="raw"
)


@app.agent(topic)
async def count(stream):  # type: ignore[no-untyped-def]
    r = aioredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    key = os.environ.get("BENCH_STATS_KEY", "bench:stats")
    batch = int(os.environ.get("STREAMREC_BATCH_SIZE", "1000"))
    within = float(os.environ.get("STREAMREC_BATCH_WITHIN", "0.05"))
    async for events in stream.take_events(batch, within=within):
        await r.hincrbyfloat(key, "events_accepted", len(events))
