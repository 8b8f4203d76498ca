"""One bad or hostile producer must not take over what everybody is served (real broker and Redis).

Every test publishes through Kafka to worker processes and reads what Redis
serves and what Kafka's state holds, as an application would.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import pytest
from kafka import KafkaConsumer

from producers.hostile import hostile_stream
from producers.publisher import EventPublisher
from streamrec.events import Interaction
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess
from tests.integration.kafka_state import assert_equals_an_uninterrupted_run, rebuilt

pytestmark = pytest.mark.integration

TIMEOUT = 240.0


def settings_for(base: Settings, tag: str, **changes: object) -> Settings:
    return replace(
        base,
        app_id=f"{base.app_id}-{tag}",
        topic_prefix=f"{base.topic_prefix}-{tag}",
        key_prefix=f"{base.key_prefix}-{tag}",
        models=("popularity", "itemknn"),
        default_model="itemknn",
        checkpoint_interval=0.5,
        **changes,  # type: ignore[arg-type]
    )


def run_worker(settings: Settings, events: list, folder, name: str, handled_before: int = 0) -> dict[str, float]:
    """Publish ``events`` to a worker of their own, wait until all are handled; return the app's counters.

    The counters add up over every worker of the app: ``handled_before`` events were handled before.
    """
    ensure_topics(settings)
    worker = WorkerProcess(replace(settings, state_dir=folder / name), folder / f"{name}.log").start()
    with EventPublisher(settings) as publisher:
        publisher.publish(events, progress=False)
    worker.wait_processed(handled_before + len(events), TIMEOUT)
    assert worker.stop() == 0, worker.log_tail()  # the final commit also writes the last counters
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        return client.stats()
    finally:
        client.close()


def deadletters(settings: Settings, n: int) -> list[tuple[bytes, str]]:
    """The first ``n`` records of the dead-letter topic: (original bytes, reason)."""
    consumer = KafkaConsumer(
        settings.topic("deadletter"),
        bootstrap_servers=settings.kafka_bootstrap_servers.split(","),
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        group_id=None,
    )
    try:
        out = []
        for record in consumer:
            out.append((record.value, dict(record.headers)["streamrec-reason"].decode()))
            if len(out) >= n:
                break
        return out
    finally:
        consumer.close()


def fallback_items(settings: Settings) -> list[str]:
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        rec = client.get("someone-new")
        assert rec is not None and rec.fallback
        return rec.items
    finally:
        client.close()


def test_a_future_dated_event_is_refused_and_the_fallback_keeps_following(isolated_settings, tmp_path) -> None:
    settings = settings_for(isolated_settings, "future")
    now = time.time()
    before = [Interaction(f"u{n % 200}", f"old{n % 5}", now - 300 + n * 0.01, "click") for n in range(2000)]
    bomb = Interaction("evil", "spam", 4_102_444_800.0, "purchase")  # the year 2100
    after = [Interaction(f"v{n % 400}", f"new{n % 3}", now - 100 + n * 0.01, "click") for n in range(5000)]
    stats = run_worker(settings, [*before, bomb, *after], tmp_path, "w")
    assert stats["events_deadlettered"] == 1
    [(value, reason)] = deadletters(settings, 1)
    assert b'"spam"' in value and "ahead of its arrival" in reason and "skew of 300 s" in reason
    top = fallback_items(settings)
    assert "spam" not in top
    assert set(top[:3]) == {"new0", "new1", "new2"}  # the later events lead the fallback


def test_a_future_dated_event_is_clamped_when_so_configured(isolated_settings, tmp_path) -> None:
    settings = settings_for(isolated_settings, "clamp", future_events="clamp")
    now = time.time()
    events = [Interaction(f"u{n % 50}", f"i{n % 7}", now - 60 + n * 0.01, "click") for n in range(500)]
    events.insert(250, Interaction("evil", "spam", 4_102_444_800.0, "click"))
    stats = run_worker(settings, events, tmp_path, "w")
    assert stats["events_accepted"] == len(events) and stats.get("events_deadlettered", 0) == 0
    pop = rebuilt(settings)["popularity"]
    row = pop.item_index.lookup(["spam"])[0]
    assert pop.item_scores()[row] <= 2.0 * 1.001  # one click, at the time it arrived, not in 2100


def test_one_users_flood_stays_out_of_everybody_elses_lists(isolated_settings, tmp_path) -> None:
    """5,000 ordinary events of 500 users, and one user clicking one item 1,500 times among them."""
    settings = settings_for(isolated_settings, "flood")
    stream = hostile_stream(time.time(), n_future=0, n_past=0, retries=0, shared_ids=0, seed=3)
    stats = run_worker(settings, stream.mixed, tmp_path, "w")
    assert stats["events_accepted"] == len(stream.mixed)  # no rate limit configured: every event is learned
    assert stream.bot_item not in fallback_items(settings)[:10]
    users = sorted({e.user_id for e in stream.ordinary})
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        lists = client.get_many(users, model="popularity")
    finally:
        client.close()
    assert all(rec is not None for rec in lists.values())
    holding = [u for u, rec in lists.items() if rec is not None and stream.bot_item in rec.items]
    assert not holding, f"{len(holding)} users get the flooded item, e.g. {holding[:3]}"
    bot = rebuilt(settings)["itemknn"]
    assert bot.history(stream.bot_user) == [stream.bot_item]  # the user's own model still learned their clicks


def test_a_retried_batch_with_event_ids_is_learned_once_across_a_restart(isolated_settings, tmp_path) -> None:
    settings = settings_for(isolated_settings, "retry", topic_partitions=2)
    events = [Interaction(f"u{n % 40}", f"i{n % 60}", 1000.0 + n, "click", event_id=f"e{n}") for n in range(1500)]
    first = run_worker(settings, events, tmp_path, "first")
    assert first["events_accepted"] == len(events)
    # a producer retries the second half after a timeout; a new worker process (state from Kafka) gets it
    retried = events[750:]
    stats = run_worker(settings, retried, tmp_path, "second", handled_before=len(events))
    assert stats["events_duplicate"] == len(retried) and stats["events_accepted"] == len(events)
    assert_equals_an_uninterrupted_run(rebuilt(settings), events)


def overlap(a: list[str], b: list[str], k: int = 10) -> float:
    return len(set(a[:k]) & set(b[:k])) / k


def test_a_hostile_stream_moves_nothing_that_ordinary_users_are_served(isolated_settings, tmp_path) -> None:
    """Ordinary traffic alone, against the same traffic mixed with future and past timestamps, a bot,
    retries, ids reused by other users and out-of-order events: what ordinary users are served, and why
    every refused event was refused."""
    stream = hostile_stream(time.time(), seed=5)
    plain = settings_for(isolated_settings, "plain")
    mixed = settings_for(
        isolated_settings, "mixed", max_event_age=30 * 86400.0, user_rate_limit=(300, 60.0), topic_partitions=2
    )
    run_worker(plain, stream.ordinary, tmp_path, "plain")
    stats = run_worker(mixed, stream.mixed, tmp_path, "mixed")
    # what was refused, and why
    refused = deadletters(mixed, int(stats["events_deadlettered"]))
    causes = Counter(
        "future" if "ahead of its arrival" in r else "past" if "before its arrival" in r else "rate" for _, r in refused
    )
    assert causes["future"] == stream.counts["future"]
    assert causes["past"] == stream.counts["past"]
    # the bot's burst beyond 300 events (tokens come back at 5 a second while the stream is published)
    assert stream.counts["bot"] - 400 <= causes["rate"] <= stream.counts["bot"] - 300
    assert all(b"bot-1" in value for value, r in refused if "rate limit" in r)
    assert stats["events_duplicate"] == stream.counts["retries"]  # the retries, not the ids other users reused
    # what ordinary users and newcomers are served
    fallback_overlap = overlap(fallback_items(mixed), fallback_items(plain))
    users = sorted({e.user_id for e in stream.ordinary})
    got, want = rebuilt(mixed), rebuilt(plain)
    means, identical = {}, {}
    for name in ("popularity", "itemknn"):
        a, b = got[name].recommend(users, k=10), want[name].recommend(users, k=10)
        pairs = list(zip(a.items, b.items, strict=True))
        means[name] = sum(overlap(x, y) for x, y in pairs) / len(users)
        identical[name] = sum(x == y for x, y in pairs) / len(users)
        assert not any(stream.bot_item in x for x in a.items)
    print(f"\nhostile stream {stream.counts}: dead-lettered {dict(causes)}, duplicates {stats['events_duplicate']:.0f}; "
          f"fallback top-10 overlap {fallback_overlap:.2f}; ordinary users' top-10 overlap {means}, identical {identical}")  # fmt: skip
    assert fallback_overlap >= 0.9
    assert all(m >= 0.95 for m in means.values()), means
