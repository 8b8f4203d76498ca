"""The topics the worker reads and writes, as Faust topic objects.

Values travel as raw bytes: the worker validates them itself so that a bad
message can be dead-lettered with its original bytes and a reason.
"""

from __future__ import annotations

from stream_app.app import app, settings

#: Kafka topic name -> kind of event it carries.
KIND_BY_TOPIC: dict[str, str] = {
    settings.topic("interactions"): "interaction",
    settings.topic("ratings"): "rating",
    settings.topic("items"): "item",
    settings.topic("forget"): "forget",
    settings.topic("exclusions"): "exclusion",
    settings.topic("exposures"): "exposure",
}

#: Topics keyed by user, partitioned alike: a worker owns the users of its partitions.
USER_TOPICS: tuple[str, ...] = tuple(t for t, kind in KIND_BY_TOPIC.items() if kind != "item")
# The agent reads every topic (it validates, counts and dead-letters what its partitions hold); with state in
# Kafka the models also get the whole catalogue from stream_app.shared.CatalogueFollower in every worker.
events_topic = app.topic(*KIND_BY_TOPIC, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
deadletter_topic = app.topic(
    settings.topic("deadletter"), key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
