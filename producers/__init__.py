"""Publishing events to Kafka: from logs, from MovieLens, or generated."""

from producers.publisher import EventPublisher, PublishStats
from producers.synthetic import SyntheticStream

__all__ = ["EventPublisher", "PublishStats", "SyntheticStream"]
