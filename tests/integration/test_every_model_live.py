"""The worker runs every model of the registry at once; each writes its own keys."""

from __future__ import annotations

from dataclasses import replace

import pytest

import models
from producers.publisher import EventPublisher
from streamrec.eventlog import read_movielens_items, read_movielens_ratings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration


def test_worker_runs_every_model(isolated_settings, movielens_format_dir, tmp_path) -> None:
    names = tuple(models.available())
    settings = replace(isolated_settings, models=names, default_model="hybrid", checkpoint_interval=2.0)
    ensure_topics(settings)
    ratings = sorted(read_movielens_ratings(movielens_format_dir / "u.data"), key=lambda e: e.timestamp)[:1500]
    items = list(read_movielens_items(movielens_format_dir / "u.item"))
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish([*items, *ratings], progress=False)
        stats = worker.wait_processed(len(items) + len(ratings), 300)
        assert stats["events_accepted"] == len(items) + len(ratings)
    finally:
        assert worker.stop() == 0
    seen: dict[str, set[str]] = {}
    for r in ratings:
        seen.setdefault(r.user_id, set()).add(r.item_id)
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        for name in names:
            lists = client.get_many(sorted(seen), model=name)
            assert all(rec is not None and rec.items for rec in lists.values()), name
            assert all(not seen[u] & set(rec.items) for u, rec in lists.items()), name
    finally:
        client.close()
