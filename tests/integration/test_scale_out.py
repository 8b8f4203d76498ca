"""Scale-out on a real broker and Redis: several worker processes over the partitions of the event topics.

Every check of the models' state reads what Kafka holds (the changelog, the
updates topic) through :func:`stream_app.state.rebuild_models`: what a worker
that took over every partition would start from.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

import models
from producers.publisher import EventPublisher
from stream_app.state import rebuild_models
from streamrec.eventlog import read_movielens_ratings
from streamrec.events import Rating, to_interactions
from streamrec.redis_cluster import LocalRedisCluster
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess
from tests.integration.kafka_state import (
    assert_equals_an_uninterrupted_run,
    assert_same_state,
    rebuilt,
    wait_committed,
)
from tests.integration.publishing import PacedPublisher

pytestmark = pytest.mark.integration

TIMEOUT = 240.0
#: Seconds within which a moved user's list must be written again after ``kill -9`` of their worker: the
#: session timeout (6 s), the rebalance and the restore, on a machine that may be loaded (the soak measures it).
RESUME_BOUND = 30.0


def scale_settings(base: Settings, tag: str, partitions: int, **changes: object) -> Settings:
    return replace(
        base,
        app_id=f"{base.app_id}-{tag}",
        topic_prefix=f"{base.topic_prefix}-{tag}",
        key_prefix=f"{base.key_prefix}-{tag}",
        topic_partitions=partitions,
        **{"models": ("popularity", "itemknn"), "default_model": "itemknn", **changes},  # type: ignore[arg-type]
        checkpoint_interval=0.5,
        batch_size=200,
    )


def start_worker(settings: Settings, folder: Path, name: str) -> WorkerProcess:
    """A worker with a state folder of its own (no shared disk between workers)."""
    return WorkerProcess(replace(settings, state_dir=folder / name), folder / f"{name}.log").start()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers.split(","))
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        return {tp.partition: o for tp, o in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def owned_partitions(log: Path) -> set[int]:
    """The partitions a worker held last, from its log (restored on assignment, handed off on revocation)."""
    owned: set[int] = set()
    for line in log.read_text(errors="replace").splitlines():
        if m := re.search(r"partition (\d+) restored", line):
            owned.add(int(m.group(1)))
        elif m := re.search(r"partitions \[([\d, ]*)\] handed off", line):
            owned -= {int(p) for p in m.group(1).split(",") if p.strip()}
    return owned


def wait_each_owns_partitions(folder: Path, names: list[str], timeout: float = 60.0) -> None:
    """Wait until every named worker holds partitions (by its log), so that stopping one moves some."""
    deadline = time.monotonic() + timeout
    while not all(owned_partitions(folder / f"{n}.log") for n in names) and time.monotonic() < deadline:
        time.sleep(0.2)


def partition_of(settings: Settings, user: str) -> int:
    """The partition the producer (kafka-python's default partitioner, murmur2 of the key) sends a user to."""
    from kafka.partitioner.default import murmur2

    return (murmur2(user.encode()) & 0x7FFFFFFF) % settings.topic_partitions


def ratings_of(folder: Path, n: int) -> list[Rating]:
    return sorted(read_movielens_ratings(folder / "u.data"), key=lambda e: e.timestamp)[:n]


def assert_every_user_has_a_list_without_seen_items(settings: Settings, ratings: list[Rating]) -> None:
    """Every user of ``ratings`` has a list in Redis, and no list holds an item its user rated."""
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        lists = client.get_many(sorted({r.user_id for r in ratings}))
    finally:
        client.close()
    seen: dict[str, set[str]] = {}
    for r in ratings:
        seen.setdefault(r.user_id, set()).add(r.item_id)
    assert all(lists.values()), [u for u, v in lists.items() if v is None][:5]
    with_seen = {u: sorted(set(rec.items) & seen[u]) for u, rec in lists.items() if rec is not None}
    assert not {u: s for u, s in with_seen.items() if s}, "lists holding items their user has seen"


#: How workers share item state: every worker adds every other's increments, or item parts' owners merge them.
ITEM_STATES = ["broadcast", "owned"]


@pytest.mark.parametrize("item_state", ITEM_STATES)
def test_three_workers_over_six_partitions_hold_what_one_worker_holds(
    isolated_settings, movielens_format_dir, tmp_path, item_state
) -> None:
    ratings = ratings_of(movielens_format_dir, 6000)
    held = {}
    for n in (1, 3):
        settings = scale_settings(isolated_settings, f"{n}w-{item_state}", partitions=6, item_state=item_state)
        ensure_topics(settings)
        workers = [start_worker(settings, tmp_path, f"{n}w-{j}") for j in range(n)]
        with EventPublisher(settings) as publisher:
            publisher.publish(ratings, rate=1500, progress=False)  # while the workers join and rebalance
        workers[0].wait_processed(len(ratings), TIMEOUT)  # counters add up over the workers
        topic = settings.topic("ratings")
        wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
        if n == 3:  # every user got a list from the worker that owns them, without seen items
            assert_every_user_has_a_list_without_seen_items(settings, ratings)
            deadline = time.monotonic() + 30  # the last assignment's restores are logged after the commits
            while time.monotonic() < deadline:
                owned = [owned_partitions(tmp_path / f"3w-{j}.log") for j in range(3)]
                if all(len(o) == 2 for o in owned):
                    break
                time.sleep(0.5)
            assert all(len(o) == 2 for o in owned), owned
        for worker in workers:
            assert worker.stop() == 0, worker.log_tail()
        held[n] = rebuilt(settings)
    assert_equals_an_uninterrupted_run(held[1], ratings)
    assert_same_state(held[3], held[1], sorted({r.user_id for r in ratings}))


@pytest.mark.parametrize("item_state", ITEM_STATES)
def test_kill_9_of_one_of_two_workers_moves_its_partitions_without_loss(
    isolated_settings, movielens_format_dir, tmp_path, item_state
) -> None:
    settings = scale_settings(isolated_settings, f"failover-{item_state}", partitions=4, item_state=item_state)
    ensure_topics(settings)
    ratings = ratings_of(movielens_format_dir, 6000)
    first, second = ratings[:3000], ratings[3000:]
    workers = [start_worker(settings, tmp_path, f"w{j}") for j in range(2)]
    with EventPublisher(settings) as publisher:
        publisher.publish(first, rate=600, progress=False)
    workers[0].wait_processed(len(first), TIMEOUT)
    wait_each_owns_partitions(tmp_path, ["w0", "w1"])
    moved = owned_partitions(tmp_path / "w1.log")
    assert moved and moved != set(range(4)), moved
    workers[1].kill()
    killed_at = time.time()
    resumed: list[float] = []
    moved_users = sorted({r.user_id for r in second if partition_of(settings, r.user_id) in moved})
    client = RecsClient(settings.redis_url, settings.key_prefix)

    def watch() -> None:  # the first list written for a moved user after the kill
        deadline = time.monotonic() + 60
        while not resumed and time.monotonic() < deadline:
            for rec in client.get_many(moved_users).values():
                if rec is not None and rec.computed_at > killed_at:
                    resumed.append(rec.computed_at - killed_at)
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with EventPublisher(settings) as publisher:
        publisher.publish(second, rate=600, progress=False)
    watcher.join(90)
    topic = settings.topic("ratings")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    # the soak (bench/soak.py) measures how soon; here a loaded machine only has to get there
    assert resumed and resumed[0] <= RESUME_BOUND, f"lists of moved users resumed after {resumed} s"
    # moved users' next lists come from their restored history, not a cold start
    now = time.time()  # newer than every rating, and not in the future (the worker refuses those)
    probe = [Rating(u, "probe-item", 5.0, now + n * 0.001) for n, u in enumerate(moved_users[:20])]
    with EventPublisher(settings) as publisher:
        publisher.publish(probe, progress=False)
    # the counters may count twice what the killed worker handled but had not committed: wait for the lists
    wanted = {p.user_id: p.timestamp for p in probe}
    deadline = time.monotonic() + TIMEOUT
    while True:
        lists = client.get_many(list(wanted))
        if all(rec is not None and rec.event_ts == wanted[u] for u, rec in lists.items()):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    client.close()
    seen: dict[str, set[str]] = {}
    for r in ratings:
        seen.setdefault(r.user_id, set()).add(r.item_id)
    for user, rec in lists.items():
        assert rec is not None and rec.event_ts == max(p.timestamp for p in probe if p.user_id == user)
        assert rec.items and not set(rec.items) & seen[user]
        assert any(reason in seen[user] for reason in rec.reasons or []), f"{user}: no reason from their history"
    assert workers[0].stop() == 0, workers[0].log_tail()
    assert_equals_an_uninterrupted_run(rebuilt(settings), ratings + probe)


@pytest.mark.parametrize("item_state", ITEM_STATES)
def test_workers_join_and_leave_while_events_flow(
    isolated_settings, movielens_format_dir, tmp_path, item_state
) -> None:
    """A worker joins and the first one leaves cleanly, each while events are being published and handled.

    The stream is cut where the memberships change, not by the clock: the
    second worker starts once the first part is published, the first worker
    is stopped while the third part is being published, and the last part
    is published after it left. However slow the machine, events arrive before,
    during and after each change.
    """
    settings = scale_settings(isolated_settings, f"elastic-{item_state}", partitions=4, item_state=item_state)
    ensure_topics(settings)
    ratings = ratings_of(movielens_format_dir, 6000)
    parts = [ratings[:1500], ratings[1500:3000], ratings[3000:4500], ratings[4500:]]
    first = start_worker(settings, tmp_path, "a")
    publishing = PacedPublisher(settings, parts[0] + parts[1], rate=400).start()
    publishing.wait_sent(len(parts[0]))
    second = start_worker(settings, tmp_path, "b")  # scale out while the second part flows
    deadline = time.monotonic() + TIMEOUT
    while not owned_partitions(tmp_path / "b.log") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned_partitions(tmp_path / "b.log"), second.log_tail()
    publishing.join()
    publishing = PacedPublisher(settings, parts[2], rate=400).start()
    publishing.wait_sent(len(parts[2]) // 4)
    assert first.stop() == 0, first.log_tail()  # scale in, cleanly, while the third part flows
    publishing.join()
    with EventPublisher(settings) as publisher:
        publisher.publish(parts[3], rate=400, progress=False)
    topic = settings.topic("ratings")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    deadline = time.monotonic() + 30  # the assignment after the scale-in is logged once its restore is done
    while owned_partitions(tmp_path / "b.log") != set(range(4)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned_partitions(tmp_path / "b.log") == set(range(4)), second.log_tail()
    assert second.stop() == 0, second.log_tail()
    assert_equals_an_uninterrupted_run(rebuilt(settings), ratings)


@pytest.mark.parametrize("item_state", ITEM_STATES)
def test_a_worker_that_starts_from_a_snapshot_holds_what_the_others_hold(
    isolated_settings, movielens_format_dir, tmp_path, item_state
) -> None:
    """Snapshots every second while events flow: a late worker starts from one, then alone writes the last.

    The last snapshot is the late worker's item state (plus, with item owners,
    the pieces it holds that no merge had returned yet), so the state rebuilt
    from it equals one model of every event only if that worker's state did.
    """
    settings = scale_settings(
        isolated_settings, f"snap-{item_state}", partitions=6, item_state=item_state, snapshot_interval=1.0
    )
    ensure_topics(settings)
    ratings = ratings_of(movielens_format_dir, 6000)
    parts = [ratings[:2500], ratings[2500:5000], ratings[5000:]]
    early = [start_worker(settings, tmp_path, f"e{j}") for j in range(2)]  # 3 each; then 2 each with the late one
    with EventPublisher(settings) as publisher:
        publisher.publish(parts[0], rate=800, progress=False)
    early[0].wait_processed(len(parts[0]), TIMEOUT)
    late = start_worker(settings, tmp_path, "late")
    publishing = PacedPublisher(settings, parts[1], rate=400).start()  # while the late worker joins
    deadline = time.monotonic() + TIMEOUT
    while not owned_partitions(tmp_path / "late.log") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned_partitions(tmp_path / "late.log"), late.log_tail()
    publishing.join()
    topic = settings.topic("ratings")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    assert "item state from snapshot" in late.log_path.read_text(errors="replace"), late.log_tail()
    for worker in early:
        assert worker.stop() == 0, worker.log_tail()
    deadline = time.monotonic() + TIMEOUT
    while owned_partitions(tmp_path / "late.log") != set(range(6)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert owned_partitions(tmp_path / "late.log") == set(range(6)), late.log_tail()
    time.sleep(1.5)  # a snapshot is due at the next commit
    with EventPublisher(settings) as publisher:
        publisher.publish(parts[2], rate=800, progress=False)
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    assert late.stop() == 0, late.log_tail()
    last = [line for line in late.log_path.read_text(errors="replace").splitlines() if "item-state snapshot" in line]
    assert last, late.log_tail()
    assert_equals_an_uninterrupted_run(rebuilt(settings), ratings)


def sessions(model) -> dict[str, list[str]]:
    """Each user's session window in a session kNN model (item ids, oldest first), as its replica holds it."""
    out = {}
    for row, user in enumerate(model.user_index.ids):
        if user is not None and model._n_pos[row] > 0:
            window, _ = model._session_of(row)
            out[user] = [model.item_index.ids[i] for i in window.tolist() if i >= 0]
    return out


def test_session_and_torch_models_share_through_item_owners(isolated_settings, movielens_format_dir, tmp_path) -> None:
    """Session kNN, two-tower and a hybrid of them share with item state owned by item, nothing lost or doubled.

    Three workers over six partitions. Read back from the merges on Kafka
    (without the users' own state in the changelog), every user's session
    is one model's, for session kNN and the hybrid's session member, and the
    additive per-item event counts of the hybrid and its two-tower member are
    one model's.
    """
    settings = scale_settings(
        isolated_settings,
        "owned-models",
        partitions=6,
        item_state="owned",
        models=("sknn", "hybrid"),
        default_model="hybrid",
        model_params={"hybrid": {"components": ["itemknn", "sknn", "two_tower"]}},
    )
    ensure_topics(settings)
    ratings = ratings_of(movielens_format_dir, 3000)
    workers = [start_worker(settings, tmp_path, f"m{j}") for j in range(3)]
    with EventPublisher(settings) as publisher:
        publisher.publish(ratings, rate=1000, progress=False)
    workers[0].wait_processed(len(ratings), TIMEOUT)
    topic = settings.topic("ratings")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    assert_every_user_has_a_list_without_seen_items(settings, ratings)
    for worker in workers:
        assert worker.stop() == 0, worker.log_tail()
    # the item side only (the merges, and increments not merged yet): no user state from the changelog
    held = asyncio.run(rebuild_models(settings, settings.models, partitions=0))
    one = models.create("sknn")
    one.learn(to_interactions(ratings))
    assert sessions(held["sknn"]) == sessions(one)
    hybrid = held["hybrid"]
    assert sessions(hybrid._models[1]) == sessions(one)
    counts: dict[str, int] = {}
    for r in ratings:
        counts[r.item_id] = counts.get(r.item_id, 0) + 1
    ids = sorted(counts)
    for model in (hybrid, hybrid._models[2]):  # the hybrid's and the two-tower member's event counts
        rows = model.item_index.lookup(ids)
        assert (rows >= 0).all()
        assert model._item_events[rows].tolist() == [counts[i] for i in ids], model.name


def test_end_to_end_with_a_redis_cluster(isolated_settings, movielens_format_dir, tmp_path) -> None:
    with LocalRedisCluster(tmp_path / "cluster") as cluster:
        settings = replace(scale_settings(isolated_settings, "cluster", partitions=2), redis_url=cluster.url)
        ensure_topics(settings)
        ratings = ratings_of(movielens_format_dir, 2000)
        worker = start_worker(settings, tmp_path, "w")
        with EventPublisher(settings) as publisher:
            publisher.publish(ratings, progress=False)
        stats = worker.wait_processed(len(ratings), TIMEOUT)
        assert stats["events_accepted"] == len(ratings)
        client = RecsClient(settings.redis_url, settings.key_prefix)
        try:
            assert type(client.redis).__name__ == "RedisCluster"
            users = sorted({r.user_id for r in ratings})
            got = {u: client.get(u) for u in users}  # one MGET per user: the user's key and its bucket's fallback
            cold = client.get("someone-new")
            slots = {client.redis.keyslot(client.layout.user_key(u)) for u in users}
        finally:
            client.close()
        assert all(rec is not None and not rec.fallback for rec in got.values())
        assert cold is not None and cold.fallback and cold.items
        assert len(slots) > 10  # the users' keys spread over the cluster
        assert worker.stop() == 0, worker.log_tail()
