"""Redis ACL user with a password, secrets kept out of logs, services bound to loopback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis

from producers.publisher import EventPublisher
from streamrec.events import Interaction
from streamrec.security import Security
from streamrec.services import LocalServices
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-battery-staple-9321"
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}  # 127.0.0.1, and as IPv4-mapped IPv6 (Java)


def test_worker_writes_with_a_least_privilege_acl_user_and_logs_no_secret(isolated_settings, tmp_path) -> None:
    admin = redis.Redis.from_url(isolated_settings.redis_url)
    user = f"{isolated_settings.key_prefix}-writer"
    prefix = isolated_settings.key_prefix
    admin.acl_setuser(user, enabled=True, passwords=[f"+{PASSWORD}"], keys=[f"{prefix}:*"],
                      commands=["+@read", "+@write", "+@connection", "+client",
                                "+fcall", "+fcall_ro", "+function|load", "+time"])  # fmt: skip
    try:
        host_port = isolated_settings.redis_url.split("://", 1)[1]
        settings = replace(
            isolated_settings,
            redis_url=f"redis://{host_port}",
            security=Security(redis_username=user, redis_password=PASSWORD),
        )
        ensure_topics(settings)
        log = tmp_path / "worker.log"
        worker = WorkerProcess(settings, log).start()
        try:
            with EventPublisher(settings) as publisher:
                publisher.publish([Interaction(f"u{n % 5}", f"i{n % 9}", 1.0 + n) for n in range(100)], progress=False)
            worker.wait_processed(100, 120)
        finally:
            assert worker.stop() == 0
        client = RecsClient(settings.redis_url, prefix, **settings.redis_kwargs())
        try:
            assert client.get("u1", with_fallback=False) is not None
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.redis.set("someone-elses-key", "x")  # the ACL confines it to its prefix
        finally:
            client.close()
        without = redis.Redis.from_url(settings.redis_url, username=user, password="wrong")
        with pytest.raises(redis.exceptions.AuthenticationError):
            without.ping()
        assert PASSWORD not in log.read_text()
    finally:
        admin.acl_deluser(user)


def _listening(port: int) -> set[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(addr)
    return found


def test_local_services_listen_on_loopback_only(tmp_path) -> None:
    services = LocalServices(tmp_path / "svc")
    services.up()
    try:
        status = services.status()
        ports = [status["kafka"]["port"], status["kafka"]["controller_port"], status["redis"]["port"]]
        for port in ports:
            addresses = _listening(port)
            assert addresses, f"nothing listens on {port}"
            assert addresses <= LOOPBACK, f"port {port} listens on {addresses}, not only 127.0.0.1"
    finally:
        services.down()
