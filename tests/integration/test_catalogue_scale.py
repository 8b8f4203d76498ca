"""A worker with a 1,000,000-item catalogue, end to end on a real broker and Redis.

The worker runs its default models (popularity, SASRec served, item-kNN): popularity
keeps its top list, item-kNN ranks the items its co-occurrences reach, SASRec the
candidates of its item index, so no list costs a pass over the million items
(``bench/catalogue.py`` measures what each costs).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from producers.publisher import EventPublisher
from streamrec.events import Interaction
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration

N_ITEMS = int(__import__("os").environ.get("N_ITEMS_TEST", "1000000"))
TIMEOUT = 300.0


def test_a_worker_serves_a_million_item_catalogue(isolated_settings, tmp_path) -> None:
    settings = replace(isolated_settings, models=("popularity", "sasrec", "itemknn"), default_model="sasrec")
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    started = time.monotonic()
    with EventPublisher(settings, linger_ms=20) as publisher:
        for j in range(N_ITEMS):
            key = f"i{j}".encode()
            publisher.send_raw("item", b'{"item_id": "' + key + b'", "timestamp": 1764000000}', key=key)
        publisher.flush()
    published = time.monotonic() - started
    client = RecsClient(settings.redis_url, settings.key_prefix)
    try:
        deadline = time.monotonic() + TIMEOUT
        while client.stats().get("items_held", 0) < N_ITEMS and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.stats().get("items_held", 0) == N_ITEMS, worker.log_tail()
        loaded = time.monotonic() - started
        rng = np.random.default_rng(0)
        p = 1.0 / np.arange(1, N_ITEMS + 1) ** 1.1
        items = rng.choice(N_ITEMS, size=3000, p=p / p.sum())
        now = time.time()
        clicks = [Interaction(f"u{n % 300}", f"i{items[n]}", now - 60 + n * 0.01, "click") for n in range(3000)]
        t0 = time.monotonic()
        with EventPublisher(settings) as publisher:
            publisher.publish(clicks, progress=False)
        newest = {c.user_id: c.timestamp for c in clicks}
        users = sorted(newest)
        while time.monotonic() - t0 < TIMEOUT:  # every user's list reflects their last click
            lists = client.get_many(users)
            if all(rec is not None and rec.event_ts == newest[u] for u, rec in lists.items()):
                break
            time.sleep(0.2)
        drained = time.monotonic() - t0
        fallback = client.get("someone-new")
        per_model = {m: client.get_many(users, model=m) for m in ("sasrec", "itemknn")}
    finally:
        client.close()
    seen: dict[str, set[str]] = {}
    for c in clicks:
        seen.setdefault(c.user_id, set()).add(c.item_id)
    assert all(rec is not None and rec.event_ts == newest[u] for u, rec in lists.items())
    assert all(rec is not None and len(rec.items) == settings.top_n for rec in lists.values())
    assert not any(set(rec.items) & seen[u] for u, rec in lists.items() if rec is not None)
    assert fallback is not None and fallback.fallback and fallback.items[0] == "i0"  # the Zipf head
    for name, by_user in per_model.items():  # every model's own list: full, fresh, nothing already seen
        assert all(rec is not None and rec.event_ts == newest[u] for u, rec in by_user.items()), name
        assert all(len(rec.items) == settings.top_n and not set(rec.items) & seen[u] for u, rec in by_user.items())
    assert worker.stop() == 0, worker.log_tail()
    print(f"\n1M-item catalogue: published in {published:.1f} s, held by the models {loaded:.1f} s after the first "
          f"update; every clicking user's list reflected their last click {drained:.1f} s after the clicks were sent "
          f"(the agent also validates the million catalogue messages)")  # fmt: skip
