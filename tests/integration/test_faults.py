"""Faults injected for real: kill -9 of the worker, Redis stopped, broker restarted, bad input.

These tests run against services of their own (started here, in a temporary
folder), since they stop and restart them.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from kafka import KafkaConsumer, TopicPartition

from producers.publisher import EventPublisher
from streamrec.checkpoint import CheckpointStore
from streamrec.eventlog import read_movielens_ratings
from streamrec.events import Interaction
from streamrec.services import LocalServices
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess
from tests.integration.kafka_state import (
    assert_equals_an_uninterrupted_run,
    committed_offsets,
    rebuilt,
    wait_committed,
)
from tests.integration.publishing import PacedPublisher

pytestmark = pytest.mark.integration

TIMEOUT = 240.0


@pytest.fixture(scope="module")
def own_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServices, Settings]]:
    services = LocalServices(tmp_path_factory.mktemp("fault-services"))
    try:  # a failed start may leave one of the two running: down() stops it
        endpoints = services.up()
        base = Settings.from_env()
        yield services, base.with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url)
    finally:
        services.down()


def settings_for(base: Settings, tmp_path: Path, tag: str, **changes: object) -> Settings:
    return replace(
        base,
        app_id=f"fault-{tag}",
        topic_prefix=f"fault-{tag}",
        key_prefix=f"fault-{tag}",
        state_dir=tmp_path / "state",
        models=("popularity", "itemknn"),
        default_model="itemknn",
        batch_size=500,
        **changes,  # type: ignore[arg-type]
    )


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {tp.partition: off for tp, off in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def stale_lists(settings: Settings, events: list[Interaction]) -> list[str]:
    """The users of ``events`` whose list in Redis is missing or not that of their newest event among them."""
    newest = {e.user_id: e.timestamp for e in events}
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        lists = client.get_many(sorted(newest))
    finally:
        client.close()
    return [u for u, rec in lists.items() if rec is None or rec.event_ts != newest[u]]


def wait_checkpoint_covers(store: CheckpointStore, topic: str, wanted: dict[int, int], timeout: float) -> None:
    """Wait until the newest local checkpoint holds every offset up to ``wanted`` (``STREAMREC_STATE=local``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        complete = sorted(store.directory.glob("ckpt-*/checkpoint.json"))
        if complete:
            offsets = json.loads(complete[-1].read_text())["offsets"].get(topic, {})
            if all(int(offsets.get(str(p), 0)) >= o for p, o in wanted.items()):
                return
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint covers {topic} up to {wanted} after {timeout} s")


def test_kill_9_repeatedly_loses_nothing_and_learns_nothing_twice(own_services, movielens_format_dir, tmp_path) -> None:
    """Three ``kill -9`` at random points of the stream, each while a part of it is being published.

    Each kill waits, on events and offsets rather than the clock, until this
    incarnation of the worker has restored, learned and committed something
    and a random share of the current part has been sent.
    """
    _, base = own_services
    settings = settings_for(base, tmp_path, "kill", checkpoint_interval=1.0, topic_partitions=2)
    ensure_topics(settings)
    ratings = sorted(read_movielens_ratings(movielens_format_dir / "u.data"), key=lambda e: e.timestamp)[:20_000]
    parts = [ratings[:4000], ratings[4000:8000], ratings[8000:12_000], ratings[12_000:]]
    log = tmp_path / "worker.log"
    worker = WorkerProcess(settings, log).start()
    rng = random.Random(11)
    topic = settings.topic("ratings")
    for part in parts[:3]:
        before = sum(committed_offsets(settings, topic).values())
        publishing = PacedPublisher(settings, part, rate=500).start()
        deadline = time.monotonic() + TIMEOUT
        while sum(committed_offsets(settings, topic).values()) <= before and time.monotonic() < deadline:
            time.sleep(0.2)  # this incarnation has restored, consumed and committed something
        assert sum(committed_offsets(settings, topic).values()) > before, worker.log_tail()
        publishing.wait_sent(int(len(part) * rng.uniform(0.2, 0.8)))
        worker.kill()  # kill -9 mid-part: events published, some learned, some committed
        worker = WorkerProcess(settings, log).start()
        publishing.join()
    with EventPublisher(settings) as publisher:
        publisher.publish(parts[3], rate=500, progress=False)
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    assert worker.stop() == 0, worker.log_tail()
    # every published event is in the state Kafka holds, none twice
    assert_equals_an_uninterrupted_run(rebuilt(settings), ratings)
    assert log.read_text().count("restored:") >= 3 * settings.topic_partitions


def test_redis_stopped_mid_stream_then_every_active_list_is_fresh(own_services, tmp_path) -> None:
    services, base = own_services
    settings = settings_for(base, tmp_path, "redis", checkpoint_interval=1.0)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    events = [Interaction(f"u{n % 300}", f"i{(n * 13) % 400}", 1000.0 + n, "click") for n in range(9000)]
    with EventPublisher(settings) as publisher:
        publisher.publish(events[:3000], progress=False)
        worker.wait_processed(3000, TIMEOUT)
        redis.Redis.from_url(settings.redis_url).save()  # this Redis has no persistence of its own
        services.stop_redis()
        down_at = time.monotonic()
        publisher.publish(events[3000:6000], rate=1000, progress=False)  # ~3 s with Redis down
        time.sleep(max(0.0, 5.0 - (time.monotonic() - down_at)))
        assert worker.alive()
        services.start_redis()
        publisher.publish(events[6000:], progress=False)
    stats = worker.wait_processed(len(events), TIMEOUT)
    assert stats["redis_errors"] >= 1
    stale = stale_lists(settings, events[3000:])
    assert not stale, f"{len(stale)} active users without a fresh list, e.g. {stale[:5]}"
    assert worker.stop() == 0


def test_offsets_wait_for_their_lists_so_a_kill_with_redis_away_loses_no_list(own_services, tmp_path) -> None:
    """A commit makes its events' offsets durable only once their lists are in Redis.

    With Redis stopped the worker keeps learning but commits nothing; killed
    then, the next worker replays those events and writes their lists. Before,
    the offsets moved on while the lists waited for Redis, and the kill lost
    them for good (the chaos soak found 3 stale lists that way).
    """
    services, base = own_services
    settings = settings_for(base, tmp_path, "lists-first", checkpoint_interval=0.5, topic_partitions=1)
    ensure_topics(settings)
    topic = settings.topic("interactions")
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    events = [Interaction(f"u{n % 200}", f"i{(n * 7) % 300}", 1000.0 + n, "click") for n in range(4000)]
    with EventPublisher(settings) as publisher:
        publisher.publish(events[:2000], progress=False)
        worker.wait_processed(2000, TIMEOUT)
        wait_committed(settings, topic, {0: 2000}, TIMEOUT)
        redis.Redis.from_url(settings.redis_url).save()  # this Redis has no persistence of its own
        services.stop_redis()
        publisher.publish(events[2000:], progress=False)
    time.sleep(6)  # the worker learns them and a commit comes due every 0.5 s
    held_back = committed_offset(settings, topic)
    worker.kill()
    services.start_redis()
    assert held_back == 2000, "offsets were committed while their events' lists could not be written"
    assert "the commit waits for them" in (tmp_path / "worker.log").read_text()
    again = WorkerProcess(settings, tmp_path / "worker-again.log").start()
    again.wait_processed(len(events), TIMEOUT)
    wait_committed(settings, topic, {0: len(events)}, TIMEOUT)
    stale = stale_lists(settings, events)
    assert not stale, f"{len(stale)} users without the list of their newest event, e.g. {stale[:5]}"
    assert again.stop() == 0
    assert_equals_an_uninterrupted_run(rebuilt(settings), events)


def test_broker_restart_mid_stream_resumes_and_loses_nothing(own_services, tmp_path) -> None:
    services, base = own_services
    settings = settings_for(base, tmp_path, "broker", checkpoint_interval=1.0)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    first = [Interaction(f"u{n % 50}", f"i{n % 70}", 10.0 + n, "view") for n in range(2000)]
    second = [Interaction(f"v{n % 50}", f"i{n % 70}", 5000.0 + n, "view") for n in range(2000)]
    with EventPublisher(settings) as publisher:
        publisher.publish(first, progress=False)
    worker.wait_processed(len(first), TIMEOUT)
    pid = worker.pid
    services.restart_kafka()
    with EventPublisher(settings) as publisher:
        publisher.publish(second, progress=False)
    topic = settings.topic("interactions")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    assert worker.alive() and worker.pid == pid  # the same process resumed
    assert worker.stop() == 0
    assert_equals_an_uninterrupted_run(rebuilt(settings), first + second)
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        assert all(rec is not None for rec in client.get_many([f"v{n}" for n in range(50)]).values())
    finally:
        client.close()


def test_thousands_of_malformed_events_all_deadlettered_all_good_learned(own_services, tmp_path) -> None:
    _, base = own_services
    settings = settings_for(base, tmp_path, "fuzz", checkpoint_interval=1.0)
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(settings, log).start()
    rng = random.Random(5)
    good = [Interaction(f"u{n % 97}", f"i{n % 211}", 100.0 + n, "purchase") for n in range(3000)]

    def malformed(n: int) -> bytes:
        choices = [
            lambda: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 40))),
            lambda: b'{"user_id": "u", "item_id": "i", "timestamp": "' + str(n).encode() + b'"}',
            lambda: json.dumps({"user_id": "", "item_id": "i", "timestamp": n}).encode(),
            lambda: json.dumps({"user_id": "u", "item_id": ["i"], "timestamp": n}).encode(),
            lambda: json.dumps({"user_id": "u", "item_id": "i", "timestamp": n, "event_type": "???"}).encode(),
            lambda: b'{"user_id": "u", "item_id": "i", "timestamp": Infinity}',
            lambda: json.dumps([n]).encode(),
            lambda: b"{" * 2000,
        ]
        return rng.choice(choices)()

    n_bad = 0
    with EventPublisher(settings) as publisher:
        for n, event in enumerate(good):
            publisher.send(event)
            publisher.send_raw("interaction", malformed(n), key=b"x")
            n_bad += 1
        publisher.flush()
    stats = worker.wait_processed(len(good) + n_bad, TIMEOUT)
    assert stats["events_accepted"] == len(good)
    assert stats["events_deadlettered"] == n_bad
    pid = worker.pid
    assert worker.alive() and worker.pid == pid
    dlq = end_offsets(settings, settings.topic("deadletter"))
    assert sum(dlq.values()) == n_bad
    assert "Crashed reason" not in log.read_text()
    assert worker.stop() == 0


def committed_offset(settings: Settings, topic: str) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","), group_id=settings.app_id)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


def test_offsets_are_committed_only_with_the_state(own_services, tmp_path) -> None:
    """Kafka state: offsets move only in the transaction that writes the state they include."""
    _, base = own_services
    settings = settings_for(base, tmp_path, "txn", checkpoint_interval=3600.0)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    topic = settings.topic("interactions")
    events = [Interaction(f"u{n % 9}", f"i{n % 31}", 1.0 + n, "view") for n in range(500)]
    with EventPublisher(settings) as publisher:
        publisher.publish(events, progress=False)
    worker.wait_processed(len(events), TIMEOUT)
    time.sleep(4)  # Faust's own commit timer fires every second: it must commit nothing
    assert committed_offset(settings, topic) in (None, 0)
    assert worker.stop() == 0  # a clean stop commits state and offsets together
    assert committed_offset(settings, topic) == len(events)
    assert_equals_an_uninterrupted_run(rebuilt(settings), events)


def test_offsets_are_committed_only_after_checkpoints(own_services, tmp_path) -> None:
    """Local state (one worker, models that cannot share): offsets follow the checkpoint on disk."""
    _, base = own_services
    settings = settings_for(base, tmp_path, "commits", checkpoint_interval=3600.0, state="local")
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    topic = settings.topic("interactions")
    events = [Interaction(f"u{n % 9}", f"i{n % 31}", 1.0 + n, "view") for n in range(500)]
    with EventPublisher(settings) as publisher:
        publisher.publish(events, progress=False)
    worker.wait_processed(len(events), TIMEOUT)
    time.sleep(4)  # Faust's own commit timer fires every second: it must commit nothing
    assert committed_offset(settings, topic) in (None, 0)
    assert worker.stop() == 0  # a clean stop writes a final checkpoint, then commits
    ckpt = CheckpointStore(settings.checkpoint_dir).load_latest()
    assert ckpt is not None and ckpt.offsets[topic][0] == len(events)
    assert committed_offset(settings, topic) == len(events)
