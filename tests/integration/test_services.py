"""The local services: idempotent start, status, stop by PID only."""

from __future__ import annotations

import pytest
import redis

from streamrec.cli import main
from streamrec.services import LocalServices, resolve_kafka_version
from streamrec.settings import cache_dir
from streamrec.store import KeyLayout, RecList

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_down_stops_only_its_own(tmp_path, service_settings) -> None:
    services = LocalServices(tmp_path / "svc")
    first = services.up()
    status = services.status()
    assert status["kafka"]["running"] and status["redis"]["running"]
    second = services.up()  # nothing new is started
    assert second == first
    assert services.status()["kafka"]["pid"] == status["kafka"]["pid"]
    assert redis.Redis.from_url(first.redis_url).ping()
    stopped = services.down()
    assert stopped == {"kafka": True, "redis": True}
    after = services.status()
    assert not after["kafka"]["running"] and not after["redis"]["running"]
    assert services.down() == {"kafka": False, "redis": False}
    # the session's own services were not touched
    assert redis.Redis.from_url(service_settings.redis_url).ping()


def test_read_commands_find_the_services_left_running(tmp_path, monkeypatch, capsys) -> None:
    """``streamrec recs`` and ``status`` use what ``services up`` (or the demo) started, from its state file."""
    jars = cache_dir() / f"kafka-{resolve_kafka_version()}"  # STREAMREC_KAFKA_VERSION, else the default
    cache = tmp_path / "cache"
    cache.mkdir()
    if jars.is_dir():  # reuse the fetched broker jars instead of fetching them again
        (cache / jars.name).symlink_to(jars)
    monkeypatch.setenv("STREAMREC_CACHE_DIR", str(cache))
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "STREAMREC_KEY_PREFIX", "STREAMREC_APP_ID"):
        monkeypatch.delenv(name, raising=False)
    services = LocalServices()  # the default state folder, under the cache
    endpoints = services.up()
    try:
        fallback = RecList("", "popularity", ["i7", "i3"], [2.0, 1.0], computed_at=5.0)
        redis.Redis.from_url(endpoints.redis_url).set(KeyLayout("streamrec").fallback_key("u257"), fallback.to_json())
        assert main(["recs", "u257"]) == 0
        out = capsys.readouterr().out
        assert "user u257: global fallback" in out and "i7" in out
        assert main(["status"]) == 0
        assert "consumer lag" in capsys.readouterr().out
    finally:
        services.down()
    assert main(["recs", "u257"]) == 2
    assert "run `streamrec services up` or `streamrec demo` first" in capsys.readouterr().err


def test_reset_state_leaves_the_consumer_group_no_committed_offset(isolated_settings) -> None:
    """A group that survived a reset would start a worker at its old offsets: past every event of the new topics."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from streamrec.topics import ensure_topics, reset_state

    ensure_topics(isolated_settings)
    topic = TopicPartition(isolated_settings.topic("interactions"), 0)
    consumer = KafkaConsumer(group_id=isolated_settings.app_id, enable_auto_commit=False,
                             **isolated_settings.kafka_config())  # fmt: skip
    try:
        consumer.commit({topic: OffsetAndMetadata(20_000, "", -1)})  # what the previous run left
        assert consumer.committed(topic) == 20_000
    finally:
        consumer.close()
    reset_state(isolated_settings)
    ensure_topics(isolated_settings)
    consumer = KafkaConsumer(group_id=isolated_settings.app_id, enable_auto_commit=False,
                             **isolated_settings.kafka_config())  # fmt: skip
    try:
        assert consumer.committed(topic) is None
    finally:
        consumer.close()
