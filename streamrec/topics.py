"""Creating and removing the project's Kafka topics (kafka-python admin client)."""

from __future__ import annotations

import time

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from streamrec.settings import Settings

__all__ = [
    "STATE_TOPICS",
    "TOPIC_KINDS",
    "delete_group",
    "delete_topics",
    "ensure_topics",
    "reset_state",
    "topic_names",
]

TOPIC_KINDS = ("interactions", "ratings", "items", "forget", "exclusions", "exposures", "deadletter")
#: Topics of model state (see stream_app.state): kind -> (partitions: "events" = as the event topics, config).
STATE_TOPICS: dict[str, tuple[str | int, dict[str, str]]] = {
    # compacted often: a new owner reads its partitions from the start, and without compaction that is every
    # commit's copy of every user (the soak's 10 minutes at 1,500 events/s wrote ~75 MB per partition)
    "user-state": (
        "events",
        {
            "cleanup.policy": "compact",
            "segment.ms": "60000",
            "segment.bytes": str(16 * 1024 * 1024),
            "min.cleanable.dirty.ratio": "0.1",
            "min.compaction.lag.ms": "0",
        },
    ),
    "model-updates": (
        1,
        {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000), "max.message.bytes": "16777216"},
    ),
    # STREAMREC_ITEM_STATE=owned: every worker's increments cut by item part, and the part owners' merges
    "item-increments": (
        "events",
        {"cleanup.policy": "delete", "retention.ms": str(24 * 3600 * 1000), "max.message.bytes": "16777216"},
    ),
    "item-merged": (
        1,
        {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000), "max.message.bytes": "16777216"},
    ),
    "item-state": (1, {"cleanup.policy": "compact", "segment.ms": "600000", "max.message.bytes": "8388608"}),
}


def topic_names(settings: Settings) -> list[str]:
    """Every topic of this prefix: events, dead letters and model state."""
    return [settings.topic(k) for k in TOPIC_KINDS] + [settings.state_topic(k) for k in STATE_TOPICS]


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(client_id="streamrec-admin", **settings.kafka_config())


def ensure_topics(settings: Settings, wait: float = 30.0) -> list[str]:
    """Create the topics that are missing; return the names of those created.

    Waits (at most ``wait`` seconds) until every created topic has its
    partitions in the cluster's metadata: a KRaft broker answers the creation
    before clients can see the topic, and a producer sending at once logged a
    "not found in cluster metadata" error a few times a second meanwhile.
    """
    admin = _admin(settings)
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1)
            for name in (settings.topic(k) for k in TOPIC_KINDS)
            if name not in existing
        ]
        for kind, (partitions, config) in STATE_TOPICS.items():
            name = settings.state_topic(kind)
            if name not in existing:
                n = settings.topic_partitions if partitions == "events" else int(partitions)
                wanted.append(NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=config))
        if wanted:
            try:
                admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                pass
            _wait_visible(settings, [t.name for t in wanted], wait)
        return [t.name for t in wanted]
    finally:
        admin.close()


def _wait_visible(settings: Settings, names: list[str], wait: float) -> None:
    """Wait until a client's metadata shows a leader for every partition of ``names`` (or ``wait`` passes)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(client_id="streamrec-admin", **settings.kafka_config())
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            visible = consumer.topics()  # a fresh metadata request each call
            if all(name in visible and consumer.partitions_for_topic(name) for name in names):
                return
            time.sleep(0.1)
    finally:
        consumer.close()


def delete_topics(settings: Settings, wait: float = 30.0) -> None:
    """Delete the project's topics (and wait until the broker forgets them)."""
    admin = _admin(settings)
    try:
        present = [n for n in topic_names(settings) if n in set(admin.list_topics())]
        if present:
            try:
                admin.delete_topics(present)
            except UnknownTopicOrPartitionError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and set(present) & set(admin.list_topics()):
            time.sleep(0.2)
    finally:
        admin.close()


def delete_group(settings: Settings, wait: float = 30.0) -> None:
    """Delete the consumer group ``settings.app_id`` and wait until it holds no committed offset.

    The broker may refuse while it is still loading its groups (just started on
    an old log) or while a member has not left; kafka-python 3 reports that in
    its return value rather than raising. A group that survived would keep its
    committed offsets, and a worker would start reading recreated topics at
    them: past every new event (the demo once processed nothing that way).
    Raises ``RuntimeError`` when the group still holds offsets after ``wait`` seconds.
    """
    admin = _admin(settings)
    # kafka-python 3 calls them delete_groups and list_group_offsets, 2.x *_consumer_groups / *_consumer_group_offsets
    delete = getattr(admin, "delete_groups", None) or admin.delete_consumer_groups
    offsets = getattr(admin, "list_group_offsets", None) or admin.list_consumer_group_offsets
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                delete([settings.app_id])
            except KafkaError:  # no such group, or not now: the offsets below say which
                pass
            try:
                held = offsets(settings.app_id)
            except KafkaError:
                held = None  # the coordinator is not ready: try again
            if isinstance(held, dict) and settings.app_id in held:  # kafka-python 3: one entry per group asked
                held = held[settings.app_id]
            if held is not None and not held:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the consumer group {settings.app_id!r} could not be deleted in {wait:.0f} s "
                    f"(a worker of it still running?); its committed offsets: {held}"
                )
            time.sleep(0.5)
    finally:
        admin.close()


def reset_state(settings: Settings) -> None:
    """Start from nothing: topics, consumer group, the worker's checkpoints, Redis keys of this prefix."""
    import shutil

    from streamrec.store import RecsClient

    shutil.rmtree(settings.checkpoint_dir, ignore_errors=True)
    delete_topics(settings)
    delete_group(settings)
    client = RecsClient(settings.redis_url or "", settings.key_prefix, **settings.redis_kwargs())
    try:
        keys = list(client.redis.scan_iter(match=client.layout.pattern(), count=10_000))
        for start in range(0, len(keys), 10_000):
            client.redis.delete(*keys[start : start + 10_000])
    finally:
        client.close()
