"""Record what an application showed, without slowing its reads: a bounded buffer and a sending thread.

:meth:`ExposureLog.record` encodes one exposure and puts it in a bounded
in-memory queue; it never blocks and never raises (a full buffer drops the
record and counts it in :attr:`ExposureLog.dropped`). A daemon thread hands
the records to a Kafka producer, keyed by user id, on the exposures topic
(``{STREAMREC_TOPIC_PREFIX}.exposures``), where the worker joins them with the
user's later events (:mod:`streamrec.exposures`).

The record is a JSON object (any language can write it)::

    {"user_id": "42", "item_ids": ["a", "b", "c"], "timestamp": 1733230000.25,
     "variant": "knn", "first_position": 0, "exposure_id": "page-7f3e"}

``item_ids`` in the order shown; ``first_position`` the position of the first
(0 = the top, 20 for the second page of 20); ``variant`` the read's
``variant`` (optional); ``exposure_id`` optional, a repeated one counts once.

Examples
--------
>>> from streamrec.events import decode
>>> record = encode_exposure("42", ["a", "b"], variant="knn", timestamp=10.0)
>>> decode(record, "exposure").item_ids
('a', 'b')
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from streamrec.events import Exposure, encode
from streamrec.settings import Settings

__all__ = ["ExposureLog", "encode_exposure"]

log = logging.getLogger("streamrec.exposures")


def encode_exposure(
    user_id: str,
    item_ids: Sequence[str],
    variant: str | None = None,
    first_position: int = 0,
    exposure_id: str | None = None,
    timestamp: float | None = None,
) -> bytes:
    """The record's bytes (``timestamp`` defaults to now)."""
    event = Exposure(
        str(user_id),
        tuple(str(i) for i in item_ids),
        time.time() if timestamp is None else timestamp,
        variant,
        first_position,
        exposure_id,
    )
    return encode(event)


_STOP = object()


class ExposureLog:
    """Sends exposure records to Kafka from a thread of its own; recording never waits.

    Parameters
    ----------
    settings
        Broker address, security and the topic prefix.
    max_buffer
        Records waiting to be sent at most; beyond, new records are dropped (and counted).
    producer
        A ``KafkaProducer``-like object (tests); one is made from ``settings`` by default.
    """

    def __init__(self, settings: Settings, max_buffer: int = 10_000, producer: Any = None, **config: Any) -> None:
        self.topic = settings.topic("exposures")
        self.recorded = 0
        self.dropped = 0
        self.failed = 0
        self._queue: queue.Queue[Any] = queue.Queue(max_buffer)
        if producer is None:
            from kafka import KafkaProducer

            producer = KafkaProducer(
                **{**settings.kafka_config(), "acks": 1, "linger_ms": 20, "client_id": "streamrec-exposures", **config}
            )
        self._producer = producer
        self._thread = threading.Thread(target=self._send_loop, name="streamrec-exposures", daemon=True)
        self._thread.start()

    def record(
        self,
        user_id: str,
        item_ids: Sequence[str],
        variant: str | None = None,
        first_position: int = 0,
        exposure_id: str | None = None,
        timestamp: float | None = None,
    ) -> bool:
        """Queue one exposure; ``False`` when it was dropped (full buffer, or a record that cannot be encoded)."""
        try:
            value = encode_exposure(user_id, item_ids, variant, first_position, exposure_id, timestamp)
            self._queue.put_nowait((str(user_id).encode(), value))
        except queue.Full:
            self.dropped += 1
            return False
        except Exception:  # never into the read path
            self.dropped += 1
            return False
        self.recorded += 1
        return True

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            key, value = item
            try:
                self._producer.send(self.topic, key=key, value=value).add_errback(self._failed)
            except Exception as exc:  # a closed or broken producer: count, go on
                self._failed(exc)
            finally:
                self._queue.task_done()

    def _failed(self, exc: BaseException) -> None:
        self.failed += 1
        if self.failed in (1, 10, 100) or self.failed % 1000 == 0:
            log.warning("exposure records not sent: %d (%s)", self.failed, exc)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until the queued records are handed to Kafka and delivered."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued, then stop the thread and the producer."""
        self.flush(timeout)
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._producer.close(timeout=timeout)

    def __enter__(self) -> ExposureLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
