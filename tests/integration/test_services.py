"""The local services: idempotent start, status, stop by PID only."""

from __future__ import annotations

import pytest
import redis

from streamrec.services import LocalServices

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
