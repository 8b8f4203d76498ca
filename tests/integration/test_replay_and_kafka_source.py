"""Live replay through the real path, and the offline backtest reading a real Kafka topic."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from producers.publisher import EventPublisher
from streamrec.backtest.sources import read_kafka_topic
from streamrec.eventlog import read_movielens_items, read_movielens_ratings
from streamrec.events import Interaction
from streamrec.replay import compare_offline, run_replay
from streamrec.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_short_live_replay_scores_served_lists_and_measures_freshness(
    isolated_settings, movielens_format_dir, tmp_path
) -> None:
    settings = replace(isolated_settings, models=("popularity", "itemknn"), default_model="itemknn")
    ratings = sorted(read_movielens_ratings(movielens_format_dir / "u.data"), key=lambda e: e.timestamp)[:4000]
    events = [*read_movielens_items(movielens_format_dir / "u.item"), *ratings]
    result = run_replay(settings, events, k=10, rate=1500, progress=False, log_path=tmp_path / "w.log")
    assert result.events == result.scored == len(ratings)
    assert result.freshness_samples == len(ratings)
    assert 0 < result.freshness_ms["p50"] <= result.freshness_ms["p99"] < 30_000
    assert 0.0 < result.hit_rate < 0.5
    assert result.served_fallback > 0  # newcomers read the fallback list
    offline = compare_offline(events, "itemknn", 10, result.publish_times, result.offline_freshness_s)
    assert abs(offline["hit_rate"] - result.hit_rate) < 0.02


def test_backtest_reads_a_kafka_topic_from_the_beginning_and_from_a_time(isolated_settings) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    early = [Interaction(f"u{n}", f"i{n}", 100.0 + n) for n in range(50)]
    late = [Interaction(f"v{n}", f"i{n}", 200.0 + n) for n in range(30)]
    with EventPublisher(settings) as publisher:
        publisher.publish(early, progress=False)
        time.sleep(1.5)
        cut = time.time()
        publisher.publish(late, progress=False)
        publisher.send_raw("interaction", b"not json")
        publisher.flush()
    topic = settings.topic("interactions")
    everything = list(read_kafka_topic(settings.kafka_bootstrap_servers, topic, "interaction", idle_timeout=10))
    assert [e.user_id for e in everything] == [e.user_id for e in early + late]
    since = list(
        read_kafka_topic(settings.kafka_bootstrap_servers, topic, "interaction", from_timestamp=cut, idle_timeout=10)
    )
    assert [e.user_id for e in since] == [e.user_id for e in late]
