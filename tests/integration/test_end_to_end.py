"""Events in Kafka -> Faust worker -> fresh top-N in Redis, on a real broker and Redis."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from kafka import KafkaConsumer

from producers.publisher import EventPublisher
from streamrec.eventlog import read_movielens_items, read_movielens_ratings
from streamrec.events import Interaction
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

SLICE = 3000
TIMEOUT = 180.0


@pytest.fixture
def running_worker(isolated_settings, tmp_path):
    settings = replace(isolated_settings, models=("popularity", "itemknn", "isgd"), default_model="itemknn")
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    yield settings, worker
    code = worker.stop()
    assert code == 0 or code is None or code == -15, f"worker exited with {code}:\n{worker.log_tail()}"


def test_movielens_format_slice_gets_fresh_lists_without_seen_items(running_worker, movielens_format_dir) -> None:
    settings, worker = running_worker
    ratings = sorted(read_movielens_ratings(movielens_format_dir / "u.data"), key=lambda e: e.timestamp)[:SLICE]
    items = list(read_movielens_items(movielens_format_dir / "u.item"))
    with EventPublisher(settings) as publisher:
        publisher.publish([*items, *ratings], progress=False)
    stats = worker.wait_processed(len(items) + len(ratings), TIMEOUT)
    assert stats["events_accepted"] == len(items) + len(ratings)
    assert stats.get("events_deadlettered", 0) == 0

    seen: dict[str, set[str]] = {}
    newest: dict[str, float] = {}
    for r in ratings:
        seen.setdefault(r.user_id, set()).add(r.item_id)
        newest[r.user_id] = max(newest.get(r.user_id, 0.0), r.timestamp)
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        lists = client.get_many(sorted(seen))
        per_model = {m: client.get_many(sorted(seen), model=m) for m in settings.models}
        fallback = client.get("someone-who-never-came")
        raw = client.redis.get(client.layout.user_key(ratings[-1].user_id))
        freshness = client.freshness()
    finally:
        client.close()
    assert all(lists.values()), f"users without a list: {[u for u, v in lists.items() if v is None][:10]}"
    for user, rec in lists.items():
        assert rec.model == settings.default_model
        assert len(rec.items) == settings.top_n
        assert not seen[user] & set(rec.items), f"user {user} was recommended seen items"
        assert rec.event_ts == newest[user], f"user {user}: list reflects {rec.event_ts}, newest event {newest[user]}"
        assert rec.ingest_ts is not None and rec.computed_at >= rec.ingest_ts
    for model, recs in per_model.items():
        assert all(r is not None and r.model == model for r in recs.values()), model
    assert fallback is not None and fallback.fallback and len(fallback.items) == settings.top_n
    # one freshness sample (Kafka record time -> list written) per accepted event
    assert len(freshness) == len(items) + len(ratings)
    assert all(0 <= f < TIMEOUT for f in freshness)
    doc = json.loads(raw)  # the documented layout, readable from any language
    assert {"user_id", "model", "items", "scores", "computed_at", "event_ts", "ingest_ts"} <= set(doc)


def test_list_follows_a_users_newest_event(running_worker) -> None:
    settings, worker = running_worker
    history = [Interaction(f"u{n % 20}", f"i{(n * 7) % 50}", 1000.0 + n, "click") for n in range(400)]
    with EventPublisher(settings) as publisher:
        publisher.publish(history, progress=False)
        worker.wait_processed(len(history), TIMEOUT)
        publisher.publish([Interaction("u3", "i49", 5000.0, "purchase")], progress=False)
    worker.wait_processed(len(history) + 1, TIMEOUT)
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        rec = client.get("u3", with_fallback=False)
    finally:
        client.close()
    assert rec is not None and rec.event_ts == 5000.0
    assert "i49" not in rec.items


def test_malformed_events_are_deadlettered_and_good_ones_processed(running_worker) -> None:
    settings, worker = running_worker
    bad = [
        b"\xff\xfe not utf8",
        b"{not json",
        b'{"user_id": "", "item_id": "i", "timestamp": 1}',
        b'{"user_id": "u", "item_id": "i", "timestamp": NaN}',
        b'{"user_id": "u", "item_id": "i", "timestamp": 1, "event_type": "teleport"}',
        b'{"user_id": "u", "item_id": "' + b"x" * 1000 + b'", "timestamp": 1}',
        b"[]",
        None,
        b'{"user_id": "\\ud800", "item_id": "i", "timestamp": 1}',  # a lone surrogate: no UTF-8 key can hold it
    ]
    bad_ratings = [
        b'{"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 1e400}',
        b'{"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 11}',
    ]
    good = [Interaction(f"good{n % 7}", f"item{n % 13}", 100.0 + n, "view") for n in range(200)]
    with EventPublisher(settings) as publisher:
        for n, event in enumerate(good):
            publisher.send(event)
            if n % 20 == 0:
                publisher.send_raw("interaction", bad[(n // 20) % len(bad)], key=b"k")
        for payload in bad_ratings:
            publisher.send_raw("rating", payload, key=b"k")
        publisher.flush()
    n_bad = 10 + len(bad_ratings)
    stats = worker.wait_processed(len(good) + n_bad, TIMEOUT)
    assert stats["events_accepted"] == len(good)
    assert stats["events_deadlettered"] == n_bad
    assert worker.alive()

    consumer = KafkaConsumer(
        settings.topic("deadletter"),
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        group_id=None,
    )
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) >= n_bad:
                break
    finally:
        consumer.close()
    assert len(records) == n_bad
    reasons = [dict(r.headers)["streamrec-reason"].decode() for r in records]
    assert any("not UTF-8" in r for r in reasons) and any("not JSON" in r for r in reasons)
    assert any("more than the limit" in r for r in reasons) and any("outside" in r for r in reasons)
    originals = {r.value for r in records}
    assert b"{not json" in originals and b"\xff\xfe not utf8" in originals  # original bytes kept
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        assert all(client.get_many([f"good{n}" for n in range(7)]).values())
    finally:
        client.close()
