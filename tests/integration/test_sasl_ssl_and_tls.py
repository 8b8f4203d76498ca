"""End to end through Kafka over SASL_SSL (SCRAM-SHA-512) and Redis over TLS with an ACL user.

The broker and redis-server are started here, configured as a production
cluster would be (certificates made by the test with openssl and keytool), and
the producer, the Faust worker, ``streamrec status`` and ``RecsClient`` talk
to them only through the secured listeners.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from producers.publisher import EventPublisher
from streamrec.events import Interaction
from streamrec.secure_services import SecureLocalServices
from streamrec.security import Security
from streamrec.settings import Settings
from streamrec.status import collect_status
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

KAFKA_PASSWORD = "scram-secret-5581-tango"
REDIS_PASSWORD = "redis-secret-2297-lima"
PREFIX = "secure"
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureLocalServices, Settings]]:
    services = SecureLocalServices(
        tmp_path_factory.mktemp("secure-services"),
        kafka_user="streamrec-app",
        kafka_password=KAFKA_PASSWORD,
        redis_user="streamrec-app",
        redis_password=REDIS_PASSWORD,
        redis_keys=f"{PREFIX}:*",
    )
    try:
        endpoints = services.up()
        base = Settings.from_env({})
        settings = replace(
            base.with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url),
            security=services.client_security(),
            app_id=PREFIX,
            topic_prefix=PREFIX,
            key_prefix=PREFIX,
            batch_size=200,
            checkpoint_interval=1.0,
        )
        yield services, settings
    finally:
        services.down()


def test_publish_process_read_and_status_through_sasl_ssl_and_tls(secure, tmp_path: Path) -> None:
    _, settings = secure
    settings = replace(settings, state_dir=tmp_path / "state")
    assert settings.redis_url.startswith("rediss://")
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    worker = WorkerProcess(settings, log).start()
    events = [Interaction(f"u{n % 11}", f"i{(n * 7) % 97}", 1000.0 + n, "click") for n in range(600)]
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events, progress=False)
        stats = worker.wait_processed(len(events), 180)
        assert stats["events_accepted"] == len(events)
        status = collect_status(settings)  # end offsets and the group's offsets over SASL_SSL, Redis over TLS
        assert sum(p.end for p in status.partitions) == len(events)
        assert status.total_lag == 0
        assert status.freshness["samples"] == len(events)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    client = RecsClient(settings.redis_url, settings.key_prefix, **settings.redis_kwargs())
    try:
        recs = client.get_many([f"u{n}" for n in range(11)])
    finally:
        client.close()
    assert all(rec is not None and rec.items for rec in recs.values())
    text = log.read_text()
    assert KAFKA_PASSWORD not in text and REDIS_PASSWORD not in text


def _admin(settings: Settings, security: Security) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        request_timeout_ms=5000,
        bootstrap_timeout_ms=5000,  # a refused client gives up after 5 s, not 30
        client_id="streamrec-refused",
        **security.kafka_python_config(),
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


def _broker_log_since(services: SecureLocalServices, start: int) -> str:
    return Path(services.status()["kafka"]["log"]).read_text(errors="replace")[start:]


def test_kafka_refuses_plaintext_wrong_password_and_unknown_ca(secure) -> None:
    services, settings = secure
    good = settings.security
    _admin(settings, good)  # the right credentials work
    log_start = len(Path(services.status()["kafka"]["log"]).read_text(errors="replace"))
    with pytest.raises((KafkaError, OSError)):
        _admin(settings, Security())  # plaintext to a SASL_SSL listener
    assert "(SSL handshake failed)" in _broker_log_since(services, log_start)
    log_start = len(Path(services.status()["kafka"]["log"]).read_text(errors="replace"))
    with pytest.raises((KafkaError, OSError)):
        _admin(settings, replace(good, kafka_sasl_password="not-the-password"))
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in _broker_log_since(services, log_start)
    # the broker's certificate verifies against our CA only, and names 127.0.0.1
    host, port = settings.kafka_bootstrap_servers.split(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ssl.create_default_context(cafile=good.kafka_ssl_cafile).wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.getpeercert()["subjectAltName"][0] == ("IP Address", "127.0.0.1")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        ssl.create_default_context().wrap_socket(raw, server_hostname=host)


def test_redis_refuses_plaintext_anonymous_and_keys_outside_the_acl(secure) -> None:
    _, settings = secure
    kwargs = settings.redis_kwargs()
    credentials = {"username": kwargs["username"], "password": kwargs["password"]}
    plain = redis.Redis.from_url(settings.redis_url.replace("rediss://", "redis://"), socket_timeout=3, **credentials)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()  # no plaintext port at all
    anonymous = redis.Redis.from_url(settings.redis_url, ssl_ca_certs=kwargs["ssl_ca_certs"], socket_timeout=3)
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.ping()  # the default user is off
    wrong = redis.Redis.from_url(settings.redis_url, **{**kwargs, "password": "not-the-password"})
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
    app = redis.Redis.from_url(settings.redis_url, **kwargs)
    try:
        assert app.set(f"{PREFIX}:probe", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.set("someone-elses-key", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            app.flushdb()
    finally:
        app.close()


def _listening(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


def test_secure_services_listen_on_loopback_only(secure) -> None:
    services, _ = secure
    status = services.status()
    for port in (status["kafka"]["port"], status["kafka"]["controller_port"], status["redis"]["port"]):
        addresses = _listening(port)
        assert addresses and addresses <= LOOPBACK, f"port {port} listens on {addresses}"
