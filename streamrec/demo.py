"""The main job: MovieLens 100K through Kafka and the worker, lists read back from Redis."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace

from tqdm import tqdm

from producers.publisher import EventPublisher
from producers.synthetic import SyntheticStream
from streamrec.datasets import MOVIELENS_URL, find_movielens
from streamrec.eventlog import movielens_events
from streamrec.events import Event
from streamrec.services import resolve_services
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics, reset_state
from streamrec.workerproc import WorkerProcess

__all__ = ["run_demo"]


def _most_active(events: list[Event], n: int = 3) -> list[str]:
    from collections import Counter

    counts = Counter(getattr(e, "user_id", None) for e in events)
    counts.pop(None, None)
    return [u for u, _ in counts.most_common(n)]


def _events(limit: int | None) -> tuple[list[Event], dict[str, str], str]:
    folder = find_movielens()
    if folder is None:
        print(
            f"MovieLens 100K was not found in $STREAMREC_DATA_DIR/ml-100k or the cache, and downloading {MOVIELENS_URL} failed;\n"
            "running on 100,000 synthetic events instead.",
            file=sys.stderr,
        )
        n = limit or 100_000
        return list(SyntheticStream(n_users=1000, n_items=2000, seed=0).events(n)), {}, "synthetic events"
    items, ratings = movielens_events(folder, limit)
    titles = {i.item_id: i.title or i.item_id for i in items}
    return [*items, *ratings], titles, f"MovieLens 100K from {folder}"


def run_demo(
    settings: Settings, limit: int | None = None, users: str = "1,196,405,new-user", timeout: float = 600.0
) -> int:
    t_start = time.perf_counter()
    settings = replace(settings, batch_within=min(settings.batch_within, 0.05))
    print(
        "1/5 services: using configured ones"
        if settings.kafka_bootstrap_servers and settings.redis_url
        else "1/5 services: starting local Kafka and Redis (first run fetches the broker jars)"
    )
    settings = resolve_services(settings)
    print(f"    {settings.describe()}")
    events, titles, source = _events(limit)
    print(f"2/5 data: {len(events):,} events ({source})")
    if not titles:  # synthetic ids: show the most active users and a newcomer
        users = ",".join([*_most_active(events), "new-user"])
    reset_state(settings)
    ensure_topics(settings)
    worker = WorkerProcess(settings, settings.state_dir / "demo-worker.log")
    print(f"3/5 worker: models {', '.join(settings.models)} (default {settings.default_model}); log {worker.log_path}")
    worker.start()
    try:
        print("4/5 publishing to Kafka and processing")
        t_publish = time.perf_counter()
        with EventPublisher(settings) as publisher:
            published = publisher.publish(events, total=len(events), description="published")
        with tqdm(total=len(events), unit="ev", desc="processed", mininterval=0.5) as bar:
            stats = worker.wait_processed(len(events), timeout, progress=lambda done: bar.update(int(done) - bar.n))
        t_done = time.perf_counter()
    finally:
        worker.stop()
    pipeline_s = t_done - t_publish
    print(
        f"    published {published.events:,} events in {published.seconds:.1f} s ({published.events_per_second:,.0f}/s); "
        f"all processed {pipeline_s:.1f} s after the first was sent: {len(events) / pipeline_s:,.0f} events/s end to end"
    )
    print(
        f"    worker: {stats.get('events_accepted', 0):,.0f} accepted, {stats.get('events_deadlettered', 0):,.0f} dead-lettered, "
        f"{stats.get('batches', 0):,.0f} batches; model time learn {stats.get('learn_seconds', 0):.1f} s, recommend {stats.get('recommend_seconds', 0):.1f} s"
    )
    print("5/5 recommendations read back from Redis:")
    client = RecsClient(settings.redis_url or "", settings.key_prefix, **settings.redis_kwargs())
    try:
        for user in [u.strip() for u in users.split(",") if u.strip()]:
            rec = client.get(user)
            if rec is None:
                print(f"  user {user}: nothing in Redis")
                continue
            what = (
                "no history: global fallback"
                if rec.fallback
                else f"model {rec.model}, newest event at {rec.event_ts:.0f}"
            )
            print(f"  user {user} ({what}):")
            for rank, item in enumerate(rec.items[:5], start=1):
                reason = ""
                if rec.reasons and rec.reasons[rank - 1]:
                    reason = f"   <- because of {titles.get(rec.reasons[rank - 1], rec.reasons[rank - 1])}"
                print(f"    {rank}. {titles.get(item, item)}{reason}")
        first = users.split(",")[0].strip()
        key = client.layout.user_key(first)
    finally:
        client.close()
    port = (settings.redis_url or "").rsplit(":", 1)[-1].split("/")[0]
    prog = os.environ.get("STREAMREC_PROG") or "streamrec"  # how the user called us (scripts/streamrec sets it)
    print(f"\nTry: redis-cli -p {port} GET {key}  |  {prog} recs {first}  |  {prog} status  |  {prog} services down")
    print(f"demo finished in {time.perf_counter() - t_start:.1f} s")
    return 0
