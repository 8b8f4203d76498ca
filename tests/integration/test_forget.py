"""A forget-user event removes the user from every model and their keys from Redis."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from producers.publisher import EventPublisher
from streamrec.checkpoint import CheckpointStore
from streamrec.events import ForgetUser, Interaction
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration


def test_forget_user_removes_the_user_everywhere(isolated_settings, tmp_path) -> None:
    settings = replace(
        isolated_settings, models=("popularity", "itemknn", "isgd"), default_model="itemknn", checkpoint_interval=0.5
    )
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    events = [Interaction(f"u{n % 10}", f"i{(n * 3) % 40}", 1.0 + n, "click") for n in range(300)]
    secret_user = "user-to-forget@example.com"
    events += [Interaction(secret_user, f"i{n}", 400.0 + n, "purchase") for n in range(5)]
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events, progress=False)
            worker.wait_processed(len(events), 120)
            keys = [client.layout.user_key(secret_user)] + [
                client.layout.user_key(secret_user, m) for m in settings.models
            ]
            assert client.redis.exists(*keys) == len(keys)
            publisher.publish([ForgetUser(secret_user, 1000.0)], progress=False)
        stats = worker.wait_processed(len(events) + 1, 120)
        deadline = time.monotonic() + 30
        while client.redis.exists(*keys) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.redis.exists(*keys) == 0, "the user's lists are still in Redis"
        assert stats.get("users_forgotten", 0) >= 1 or client.stats().get("users_forgotten", 0) >= 1
        assert client.get("u3", with_fallback=False) is not None  # others untouched
        fallback = client.get(secret_user)
        assert fallback is not None and fallback.fallback  # a forgotten user reads the global list
    finally:
        client.close()
        assert worker.stop() == 0
    ckpt = CheckpointStore(settings.checkpoint_dir).load_latest()
    assert ckpt is not None
    for name, model in ckpt.models.items():
        assert not model.has_history(secret_user), name
    for path in ckpt.path.rglob("*.json"):
        assert secret_user not in path.read_text(), f"{path} still names the user"
