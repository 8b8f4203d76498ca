"""Publishing events to Kafka with kafka-python, at a chosen rate or as fast as possible."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaProducer
from tqdm import tqdm

from streamrec.events import Event, encode
from streamrec.settings import Settings

__all__ = ["EventPublisher", "PublishStats"]

TOPIC_OF_KIND = {
    "interaction": "interactions",
    "rating": "ratings",
    "item": "items",
    "forget": "forget",
    "exclusion": "exclusions",
    "exposure": "exposures",
}


@dataclass(frozen=True)
class PublishStats:
    """How many events were sent and how long it took (flush included)."""

    events: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")


class EventPublisher:
    """Sends events to the topic of their kind, keyed by user id (items by item id).

    Parameters
    ----------
    settings
        Broker address and topic names.
    acks
        Kafka producer ``acks`` (``"all"`` by default, with idempotence: no
        duplicates and per-partition order kept across retries).
    """

    def __init__(self, settings: Settings, acks: int | str = "all", **producer_config: object) -> None:
        self.settings = settings
        config = {
            **settings.kafka_config(),
            "acks": acks,
            "linger_ms": 5,
            "batch_size": 256 * 1024,
            "client_id": "streamrec-producer",
            **producer_config,
        }
        self.producer = KafkaProducer(**config)

    def send(self, event: Event) -> None:
        """Queue one event (returns at once; :meth:`flush` waits for delivery)."""
        topic = self.settings.topic(TOPIC_OF_KIND[event.kind])
        self.producer.send(topic, key=event.key.encode(), value=encode(event))

    def send_raw(self, kind_or_topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Queue raw bytes (e.g. a malformed event) to a kind's topic or a named topic."""
        topic = self.settings.topic(TOPIC_OF_KIND[kind_or_topic]) if kind_or_topic in TOPIC_OF_KIND else kind_or_topic
        self.producer.send(topic, key=key, value=value)

    def publish(
        self,
        events: Iterable[Event],
        rate: float | None = None,
        total: int | None = None,
        progress: bool = True,
        description: str = "publishing",
    ) -> PublishStats:
        """Send every event, paced at ``rate`` events/s (``None``: as fast as possible), then flush."""
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        start = time.perf_counter()
        n = 0
        with tqdm(total=total, unit="ev", desc=description, disable=not progress, mininterval=0.5) as bar:
            for event in events:
                if rate is not None:
                    ahead = n / rate - (time.perf_counter() - start)
                    if ahead > 0.002:
                        time.sleep(ahead)
                self.send(event)
                n += 1
                if n % 1000 == 0:
                    bar.update(1000)
            bar.update(n % 1000)
        self.producer.flush()
        return PublishStats(n, time.perf_counter() - start)

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
