"""The live worker with real catalogues: capacity and freshness with 10,000 to 1,000,000 items.

For each catalogue size a worker (the default models: ``popularity``,
``sasrec``, ``itemknn``) is started on topics of its own; the catalogue is
published to the items topic first and the worker's models take it in (the
time until ``items_held`` reaches the catalogue size is reported, and the time
until the worker's agent has validated every catalogue message). Then:

- **capacity**: ``drain_events`` clicks of
  :class:`~producers.synthetic.SyntheticStream` over that catalogue are
  published as fast as the publisher goes while the worker consumes; the
  rate is the worker's own, from its first processed batch to its last;
- **paced capacity**: a drain's big batches make lists cheaper per event than
  paced traffic does (a batch of a thousand users is scored at once), so the
  capacity used below is the highest rate, from the drain rate down by 1.5x
  per probe of ``probe_seconds``, at which the worker is done within a second
  of the last click;
- **freshness at half capacity**: clicks paced at half the paced capacity for
  ``load_seconds``; freshness is the worker's per-event sample (Kafka record
  time to the user's list in Redis), p50/p99.

The reference, in the same run: a bare Faust agent that only consumes
(``bench/bare_faust.py``), fed the same way (published while it consumes).
Broker, Redis, worker and publisher share this machine's cores.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import md_table, percentiles, target
from bench.live import _bare_faust, _settings, services_for
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticStream
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

__all__ = ["Config", "config", "markdown", "run"]


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    models: tuple[str, ...] = ("popularity", "sasrec", "itemknn")
    default_model: str = "sasrec"
    n_users: int = 20_000
    drain_events: int = 40_000
    load_seconds: float = 20.0
    probe_seconds: float = 10.0
    batch_size: int = 1000
    batch_within: float = 0.05
    load_timeout: float = 900.0


def config(quick: bool = False) -> Config:
    if quick:
        return Config(sizes=(2_000,), drain_events=3_000, load_seconds=3.0, probe_seconds=2.0)
    return Config()


def _publish_in_background(settings: Settings, stream: SyntheticStream, n: int) -> threading.Thread:
    def publish() -> None:
        with EventPublisher(settings) as publisher:
            publisher.publish(stream.events(n), total=n, progress=False)

    thread = threading.Thread(target=publish, name="publisher", daemon=True)
    thread.start()
    return thread


def _catalogue(settings: Settings, n_items: int) -> None:
    with EventPublisher(settings, linger_ms=20) as publisher:
        for j in range(n_items):
            key = f"i{j}".encode()  # the ids SyntheticStream uses
            publisher.send_raw("item", b'{"item_id": "' + key + b'", "timestamp": 1764000000}', key=key)
        publisher.flush()


def _drain_after(client: RecsClient, before: float, n: int, alive: Any, timeout: float = 900.0) -> dict[str, float]:
    """The worker's rate over ``n`` events counted after ``before``: from its first such batch to its last."""
    deadline = time.monotonic() + timeout
    first_t = first_n = None
    while time.monotonic() < deadline:
        done = client.stats().get("events_accepted", 0.0) - before
        now = time.perf_counter()
        if done > 0 and first_t is None:
            first_t, first_n = now, done
        if done >= n and first_t is not None and now > first_t:
            return {"events": n, "seconds": now - first_t, "events_per_s": (done - first_n) / (now - first_t)}
        if not alive():
            raise RuntimeError("the worker exited while draining")
        time.sleep(0.02)
    raise TimeoutError(f"the worker drained fewer than {n:,} events in {timeout:.0f} s")


def _accepted(client: RecsClient) -> float:
    return client.stats().get("events_accepted", 0.0)


def _wait_accepted(client: RecsClient, count: float, alive: Any, timeout: float) -> float:
    """Wait until the worker has accepted ``count`` events; return the seconds it took."""
    started = time.monotonic()
    while _accepted(client) < count:
        if time.monotonic() - started > timeout or not alive():
            raise TimeoutError(
                f"the worker accepted {_accepted(client):,.0f} of {count:,.0f} events in {timeout:.0f} s"
            )
        time.sleep(0.05)
    return time.monotonic() - started


def _paced_capacity(
    settings: Settings, client: RecsClient, worker: WorkerProcess, stream: SyntheticStream, rate: float, seconds: float
) -> tuple[float, list[dict[str, float]]]:
    """The highest paced rate (from ``rate`` down by 1.5x) at which the worker keeps up: done within 1 s of the last."""
    probes = []
    while rate >= 50:
        n = int(rate * seconds)
        target_count = _accepted(client) + n
        with EventPublisher(settings) as publisher:
            publisher.publish(stream.events(n), rate=rate, total=n, progress=False)
        behind = _wait_accepted(client, target_count, worker.alive, 600)
        probes.append({"events_per_s": rate, "seconds_behind_at_the_end": behind})
        if behind <= 1.0:
            return rate, probes
        time.sleep(1.0)
        rate /= 1.5
    return rate, probes


def _one_size(base: Settings, cfg: Config, n_items: int, state: Path, tag: str) -> dict[str, Any]:
    settings = _settings(base, f"cat{n_items}-{tag}", cfg, state)
    ensure_topics(settings)
    worker = WorkerProcess(settings, state / f"worker-{n_items}.log").start()
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        started = time.monotonic()
        _catalogue(settings, n_items)
        deadline = started + cfg.load_timeout
        while client.stats().get("items_held", 0) < n_items and time.monotonic() < deadline and worker.alive():
            time.sleep(0.5)
        held = client.stats().get("items_held", 0)
        loaded = time.monotonic() - started
        if held < n_items:
            return {"items": n_items, "error": f"the models held {held:,.0f} items after {loaded:.0f} s"}
        # the agent also validates and counts every catalogue message: wait for it before the clicks
        _wait_accepted(client, n_items, worker.alive, cfg.load_timeout)
        validated = time.monotonic() - started
        stream = SyntheticStream(n_users=cfg.n_users, n_items=n_items, seed=1)
        before = _accepted(client)
        thread = _publish_in_background(settings, stream, cfg.drain_events)
        drained = _drain_after(client, before, cfg.drain_events, worker.alive)
        thread.join()
        stats = client.stats()
        _wait_accepted(client, before + cfg.drain_events, worker.alive, 600)
        capacity, probes = _paced_capacity(settings, client, worker, stream, drained["events_per_s"], cfg.probe_seconds)
        rate = 0.5 * capacity
        n = int(rate * cfg.load_seconds)
        count = _accepted(client) + n
        time.sleep(2)
        client.redis.delete(client.layout.freshness_key())
        with EventPublisher(settings) as publisher:
            published = publisher.publish(stream.events(n), rate=rate, total=n, progress=False)
        _wait_accepted(client, count, worker.alive, 300)
        time.sleep(1)  # the last lists are written after their events are accepted
        samples = client.freshness()
        return {
            "items": n_items,
            "catalogue_load_seconds": loaded,
            "catalogue_validated_seconds": validated,
            "worker": drained,
            "learn_seconds": stats.get("learn_seconds", 0.0),
            "recommend_seconds": stats.get("recommend_seconds", 0.0),
            "paced_capacity": {"events_per_s": capacity, "probes": probes},
            "half_capacity": {
                "offered_events_per_s": rate,
                "achieved_events_per_s": published.events_per_second,
                "samples": len(samples),
                "freshness_ms": percentiles([s * 1000.0 for s in samples], (50, 99)),
            },
        }
    finally:
        client.close()
        worker.stop()


def run(cfg: Config) -> dict[str, Any]:
    with services_for("bench-catalogue-live-") as (base, state):
        tag = f"{int(time.time())}"
        bare = _settings(base, f"catbare-{tag}", cfg, state)
        ensure_topics(bare)
        thread = _publish_in_background(
            bare, SyntheticStream(n_users=cfg.n_users, n_items=10_000, seed=1), cfg.drain_events
        )
        ceiling = _bare_faust(bare, cfg.drain_events, state / "bare.log")
        thread.join()
        sizes = [_one_size(base, cfg, n, state, tag) for n in cfg.sizes]
    targets = []
    for fig in sizes:
        if "error" in fig:
            targets.append(target(f"worker with {fig['items']:,} items", "runs", fig["error"], False))
            continue
        ratio = fig["worker"]["events_per_s"] / ceiling["events_per_s"]
        fig["ratio_to_bare_faust"] = ratio
        targets.append(
            target(
                f"worker against bare Faust, {fig['items']:,} catalogue items",
                ">= 60%",
                f"{ratio:.0%} ({fig['worker']['events_per_s']:,.0f} events/s)",
                ratio >= 0.6,
                reference=f"bare Faust: {ceiling['events_per_s']:,.0f} events/s",
            )
        )
        p99 = fig["half_capacity"]["freshness_ms"]["p99"]
        targets.append(
            target(
                f"freshness p99 at half capacity, {fig['items']:,} items",
                "<= 250 ms",
                f"{p99:,.0f} ms at {fig['half_capacity']['achieved_events_per_s']:,.0f} events/s",
                p99 <= 250,
            )
        )
    return {"config": dict(cfg.__dict__), "bare_faust": ceiling, "sizes": sizes, "targets": targets}


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = []
    for fig in result["sizes"]:
        if "error" in fig:
            rows.append([f"{fig['items']:,}", fig["error"], "", "", "", ""])
            continue
        half = fig["half_capacity"]
        rows.append(
            [
                f"{fig['items']:,}",
                f"{fig['catalogue_load_seconds']:.1f} / {fig['catalogue_validated_seconds']:.1f}",
                f"{fig['worker']['events_per_s']:,.0f} ({fig['ratio_to_bare_faust']:.0%})",
                f"{fig['paced_capacity']['events_per_s']:,.0f}",
                f"{half['achieved_events_per_s']:,.0f}",
                f"{half['freshness_ms']['p50']:,.0f} / {half['freshness_ms']['p99']:,.0f}",
            ]
        )
    return (
        f"One worker, models {', '.join(cfg['models'])} (`{cfg['default_model']}` served), "
        f"{cfg['drain_events']:,} clicks published while it consumes; bare Faust fed the same way: "
        f"{result['bare_faust']['events_per_s']:,.0f} events/s.\n\n"
        + md_table(
            [
                "catalogue items",
                "catalogue held / validated after s",
                "worker drain events/s (of bare Faust)",
                "paced capacity events/s",
                "half capacity events/s",
                "freshness p50 / p99 ms",
            ],
            rows,
        )
    )
