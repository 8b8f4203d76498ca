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
worst case of that race is 50 ms.

A fetch that leaves no assigned partition out has no such race: a record on any
of its partitions answers it at once. Such a fetch (the worker has consumed
everything it was given: an idle worker, or one between batches) waits up to
``IDLE_FETCH_WAIT_MS`` instead. At 50 ms an idle worker sent 20 empty fetches a
second per broker, which cost it 2.7% of a core doing nothing: the fixed cost
of each worker process that the workers benchmark charges to every event.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FETCH_MAX_WAIT_MS", "IDLE_FETCH_WAIT_MS", "fetch_wait", "set_fetch_waits", "shorten_fetch_wait"]

#: The longest the broker may hold the worker consumer's fetch when it has no new records.
FETCH_MAX_WAIT_MS = 50
#: The same when the fetch asks for every assigned partition (nothing left out waits behind it).
IDLE_FETCH_WAIT_MS = 500


def fetch_wait(asked: int, assigned: int, busy_ms: int = FETCH_MAX_WAIT_MS, idle_ms: int = IDLE_FETCH_WAIT_MS) -> int:
    """How long the broker may hold a fetch that asks for ``asked`` of the ``assigned`` partitions.

    >>> fetch_wait(8, 8), fetch_wait(7, 8), fetch_wait(0, 0)
    (500, 50, 50)
    """
    return idle_ms if asked and asked == assigned else busy_ms


def shorten_fetch_wait(max_wait_ms: int = FETCH_MAX_WAIT_MS) -> None:
    """Make the consumers Faust creates for its workers use ``max_wait_ms`` (idempotent).

    Examples
    --------
    >>> from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    >>> shorten_fetch_wait()
    >>> AIOKafkaConsumerThread._create_worker_consumer.fetch_max_wait_ms
    50
    >>> from aiokafka.consumer.fetcher import Fetcher
    >>> hasattr(Fetcher._get_actions_per_node, "original")  # fetches that leave nothing out wait longer
    True
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    current = AIOKafkaConsumerThread._create_worker_consumer
    original = getattr(current, "original", current)

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = max_wait_ms  # read by the consumer's fetcher when it starts
        start = consumer.start

        async def start_waiting_longer_when_idle() -> None:
            await start()
            consumer._fetcher._streamrec_wait = (max_wait_ms, IDLE_FETCH_WAIT_MS)  # this consumer's fetcher only

        consumer.start = start_waiting_longer_when_idle
        return consumer

    create_worker_consumer.original = original  # type: ignore[attr-defined]
    create_worker_consumer.fetch_max_wait_ms = max_wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer
    _wait_longer_when_idle()


def set_fetch_waits(requests: list[tuple[int, Any]], assigned: int, busy_ms: int, idle_ms: int) -> None:
    """Set the wait of the fetch ``requests`` (``(node, FetchRequest)``, one per broker) by :func:`fetch_wait`.

    >>> from aiokafka.protocol.fetch import FetchRequest
    >>> requests = [(0, FetchRequest(50, 1, 1 << 20, 1, [("events", [(0, 10, 1 << 20), (1, 7, 1 << 20)])]))]
    >>> set_fetch_waits(requests, 2, 50, 500); requests[0][1]._max_wait_ms
    500
    >>> set_fetch_waits(requests, 3, 50, 500); requests[0][1]._max_wait_ms  # a partition left out: its records wait
    50
    """
    asked = sum(len(partitions) for _, request in requests for _, partitions in request.topics)
    wait = fetch_wait(asked, assigned, busy_ms, idle_ms)
    for _, request in requests:
        request._max_wait_ms = wait


def _wait_longer_when_idle() -> None:
    """Let a marked fetcher's fetches that ask for every assigned partition wait ``IDLE_FETCH_WAIT_MS`` (idempotent)."""
    from aiokafka.consumer.fetcher import Fetcher

    current = Fetcher._get_actions_per_node
    original = getattr(current, "original", current)

    def get_actions_per_node(self: Any, assignment: Any) -> Any:
        actions = original(self, assignment)
        waits = getattr(self, "_streamrec_wait", None)
        if waits is not None:
            set_fetch_waits(actions[0], len(assignment.tps), *waits)
        return actions

    get_actions_per_node.original = original  # type: ignore[attr-defined]
    Fetcher._get_actions_per_node = get_actions_per_node
