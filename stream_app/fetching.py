"""How long the worker's consumer lets the broker hold a fetch open: 50 ms, not Faust's 1.5 s.

aiokafka keeps one fetch in flight per broker and leaves out of it every
partition whose records the application has not consumed yet. When a
micro-batch is still being handled as the next fetch goes out, that fetch asks
only for the partitions with nothing new (the catalogue topic, the idle event
topics), and the broker holds it for ``fetch_max_wait_ms`` before answering
empty; the busy partition cannot be fetched until then. Faust fixes that wait at
1,500 ms (``faust.transport.drivers.aiokafka``, not a setting), so under steady
load a worker fell 1.5 s behind and stayed there: measured on a local broker at
1,500 events/s, lists were written 1.3-1.5 s after their event (p50) while a
plain consumer of the same topic saw each event within 10 ms. With 50 ms the
worst case of that race is 50 ms, and an idle worker sends 20 empty fetches a
second per broker.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FETCH_MAX_WAIT_MS", "shorten_fetch_wait"]

#: The longest the broker may hold the worker consumer's fetch when it has no new records.
FETCH_MAX_WAIT_MS = 50


def shorten_fetch_wait(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make the consumers Faust creates for its workers use ``max_wait_ms`` (idempotent).

    Examples
    --------
    >>> from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    >>> shorten_fetch_wait()
    >>> AIOKafkaConsumerThread._create_worker_consumer.fetch_max_wait_ms
    50
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    current = AIOKafkaConsumerThread._create_worker_consumer
    original = getattr(current, "original", current)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by the consumer's fetcher when it starts
        return consumer

    create_worker_consumer.original = original  # type: ignore[attr-defined]
    create_worker_consumer.fetch_max_wait_ms = max_wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
