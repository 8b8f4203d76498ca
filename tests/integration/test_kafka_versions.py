"""Broker versions: the default is a Kafka 4 release; Kafka 3.9.1 still runs one short end-to-end pass.

The rest of the integration suite runs against the default version (or
``STREAMREC_KAFKA_VERSION``); this module starts its own 3.9.1 broker, so the
older release stays checked whatever the session's broker is.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from producers.publisher import EventPublisher
from streamrec.eventlog import read_movielens_ratings
from streamrec.services import KAFKA_VERSION, LocalServices, resolve_kafka_version
from streamrec.settings import Settings
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess
from tests.integration.served import seen_by_user, served_lists

pytestmark = pytest.mark.integration

OLD_VERSION = "3.9.1"
N_EVENTS = 400
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def kafka_3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServices, Settings]]:
    """A Kafka 3.9.1 broker and a Redis of this module only, and settings pointing at them."""
    services = LocalServices(tmp_path_factory.mktemp(f"kafka-{OLD_VERSION}"), kafka_version=OLD_VERSION)
    try:  # a failed start may leave one of the two running: down() stops it
        endpoints = services.up()
        yield services, Settings.from_env().with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url)
    finally:
        services.down()


def test_default_version_is_a_kafka_4_release(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMREC_KAFKA_VERSION", raising=False)
    assert resolve_kafka_version() == KAFKA_VERSION
    assert KAFKA_VERSION.split(".")[0] == "4"
    monkeypatch.setenv("STREAMREC_KAFKA_VERSION", OLD_VERSION)
    assert LocalServices("unused").kafka_version == OLD_VERSION
    assert LocalServices("unused", kafka_version="4.1.1").kafka_version == "4.1.1"  # the argument wins


def test_kafka_3_broker_logs_to_its_file_through_log4j_1(kafka_3) -> None:
    services, _ = kafka_3
    kafka = services.status()["kafka"]
    assert kafka["running"] and kafka["version"] == OLD_VERSION
    kdir = services.state_dir / "kafka"
    assert (kdir / "log4j.properties").exists() and not (kdir / "log4j2.properties").exists()
    assert "Kafka Server started" in Path(kafka["log"]).read_text(errors="replace")
    assert (kdir / "logs" / "stdout.log").read_text(errors="replace") == ""  # nothing on stdout


def test_kafka_3_end_to_end(kafka_3, movielens_format_dir: Path, tmp_path: Path) -> None:
    _, base = kafka_3
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = replace(
        base,
        app_id=f"streamrec-{tag}",
        topic_prefix=f"streamrec-{tag}",
        key_prefix=f"streamrec-{tag}",
        state_dir=tmp_path / "worker",
        batch_size=500,
        batch_within=0.05,
        models=("popularity", "itemknn"),
        default_model="itemknn",
    )
    ratings = sorted(read_movielens_ratings(movielens_format_dir / "u.data"), key=lambda e: e.timestamp)[:N_EVENTS]
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    with EventPublisher(settings) as publisher:
        publisher.publish(ratings, progress=False)
    stats = worker.wait_processed(len(ratings), TIMEOUT)
    assert stats["events_accepted"] == len(ratings)
    seen = seen_by_user(ratings)
    lists = served_lists(settings, seen)
    code = worker.stop()
    assert code in (0, None, -15), f"worker exited with {code}:\n{worker.log_tail()}"
    assert all(lists.values()), f"users without a list: {[u for u, v in lists.items() if v is None][:10]}"
    for user, rec in lists.items():
        assert rec.model == "itemknn"
        assert not seen[user] & set(rec.items), f"user {user} was recommended seen items"
