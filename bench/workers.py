"""Workers: CPU seconds and state bytes per event as worker processes are added (issue 18's "before").

For each number of worker processes ``n`` (1, 2, 4, 8; all on this machine, with
the broker and Redis, over ``partitions`` partitions), the workers start on
empty topics, take a warm-up stream, and once their group has settled the
**CPU time of every worker process** (user + system, from ``/proc``) is read
before and after a stream of ``events`` synthetic events. CPU time, unlike a
rate, holds on two cores shared by eight workers:

- ``cpu_us_per_event``: all workers' CPU over the events (what the cluster spends per event);
- ``per_worker_us_per_own_event``: a worker's CPU over the events of its own partitions
  (``n`` times the first, divided by ``n``: the same figure; named as the issue names it);
- ``state_bytes_per_event``: bytes the workers wrote to the state topics (increments and
  the changelog) per event; each worker also reads every other worker's increments, so
  ``(n - 1)`` times the increments' share travels again (the model's bytes on the wire).

**Cost model**: today every worker applies every other worker's item increments, so a
worker's CPU per event of its own partitions is ``a + b (n - 1)``: ``a`` its own work,
``b`` applying one other worker's increments for one of that worker's events. ``a`` and
``b`` are fitted (least squares) to the measured points; the projection to 64 and 256
workers gives the efficiency ``a / (a + b (n - 1))`` and the cluster's ceiling
``n / (a + b (n - 1))`` events per CPU-second of each worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import cpu_seconds, md_table, target
from bench.live import Config as LiveConfig
from bench.live import _settings, services_for
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticStream
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

__all__ = ["Config", "config", "markdown", "run"]


@dataclass(frozen=True)
class Config:
    workers: tuple[int, ...] = (1, 2, 4, 8)
    partitions: int = 8
    warmup_events: int = 4_000
    events: int = 40_000
    n_users: int = 10_000
    n_items: int = 5_000
    models: tuple[str, ...] = ("popularity", "itemknn")
    default_model: str = "itemknn"
    settle_seconds: float = 8.0
    projected: tuple[int, ...] = (64, 256)


def config(quick: bool = False) -> Config:
    if quick:
        return Config(workers=(1, 2), warmup_events=500, events=3_000, settle_seconds=3.0)
    return Config()


def _processed(client: RecsClient) -> float:
    stats = client.stats()
    return stats.get("events_accepted", 0.0) + stats.get("events_deadlettered", 0.0)


def _wait(client: RecsClient, n: float, workers: list[WorkerProcess], timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while _processed(client) < n:
        if time.monotonic() > deadline or not all(w.alive() for w in workers):
            raise RuntimeError(f"the workers processed {_processed(client):,.0f} of {n:,.0f} events")
        time.sleep(0.2)


def _measure(base: Any, cfg: Config, n: int, state: Path, tag: str) -> dict[str, Any]:
    settings = replace(
        _settings(base, f"w{n}-{tag}", LiveConfig(models=cfg.models, default_model=cfg.default_model), state),
        topic_partitions=cfg.partitions,
    )
    ensure_topics(settings)
    stream = SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=5)
    events = list(stream.events(cfg.warmup_events + cfg.events))
    workers = [
        WorkerProcess(replace(settings, state_dir=state / f"w{n}-{j}"), state / f"w{n}-{j}.log").start()
        for j in range(n)
    ]
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events[: cfg.warmup_events], progress=False)
            _wait(client, cfg.warmup_events, workers)
            time.sleep(cfg.settle_seconds)  # every worker joined, the group settled, the first commits made
            before = {w.pid: cpu_seconds(w.pid) for w in workers}  # type: ignore[index]
            bytes_before = client.stats().get("shared_state_bytes_sent", 0.0)
            started = time.perf_counter()
            publisher.publish(events[cfg.warmup_events :], progress=False)
            _wait(client, cfg.warmup_events + cfg.events, workers)
            seconds = time.perf_counter() - started
            time.sleep(2.5)  # the last commits write their increments
            cpu = {w.pid: cpu_seconds(w.pid) - before[w.pid] for w in workers}  # type: ignore[index]
            stats = client.stats()
    finally:
        client.close()
        for w in workers:
            w.stop()
    total_cpu = sum(cpu.values())
    state_bytes = stats.get("shared_state_bytes_sent", 0.0) - bytes_before
    return {
        "workers": n,
        "events": cfg.events,
        "seconds": seconds,
        "events_per_s": cfg.events / seconds,
        "cpu_seconds_per_worker": sorted(cpu.values()),
        "cpu_us_per_event": total_cpu / cfg.events * 1e6,
        "per_worker_us_per_own_event": total_cpu / n / (cfg.events / n) * 1e6,
        "state_bytes_per_event": state_bytes / cfg.events,
        "apply_seconds": stats.get("shared_apply_seconds", 0.0),
    }


def fit(points: list[dict[str, Any]]) -> tuple[float, float]:
    """``a`` and ``b`` (us) of ``a + b (n - 1)`` fitted to the measured CPU per own event.

    >>> fit([{"workers": 1, "per_worker_us_per_own_event": 100.0}, {"workers": 3, "per_worker_us_per_own_event": 120.0}])
    (100.0, 10.0)
    """
    n = np.array([p["workers"] for p in points], dtype=np.float64)
    y = np.array([p["per_worker_us_per_own_event"] for p in points], dtype=np.float64)
    if len(points) == 1:
        return float(y[0]), 0.0
    b, a = np.polyfit(n - 1.0, y, 1)
    return round(float(a), 6), round(float(max(b, 0.0)), 6)


def run(cfg: Config) -> dict[str, Any]:
    with services_for("bench-workers-") as (base, state):
        tag = f"{int(time.time())}"
        points = [_measure(base, cfg, n, state, tag) for n in cfg.workers]
    a, b = fit(points)
    one = points[0]["per_worker_us_per_own_event"]
    projected = [
        {"workers": n, "per_worker_us_per_own_event": a + b * (n - 1), "efficiency": a / (a + b * (n - 1))}
        for n in (*cfg.workers, *cfg.projected)
    ]
    eight = next((p for p in points if p["workers"] == 8), points[-1])
    ratio = eight["per_worker_us_per_own_event"] / one
    at_64 = next(p for p in projected if p["workers"] == 64)
    targets = [
        target(f"per-worker CPU per own event, {eight['workers']} workers against 1", "within 1.2x",
               f"{ratio:.2f}x ({eight['per_worker_us_per_own_event']:.0f} against {one:.0f} us)", ratio <= 1.2),
        target("projected efficiency at 64 workers (today's design)", ">= 0.8", f"{at_64['efficiency']:.2f}",
               at_64["efficiency"] >= 0.8, f"fitted a = {a:.0f} us own work, b = {b:.1f} us per other worker"),
    ]  # fmt: skip
    return {"config": cfg.__dict__, "measured": points, "model": {"a_us": a, "b_us": b}, "projected": projected,
            "targets": targets}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    rows = [
        [p["workers"], f"{p['events']:,}", f"{p['events_per_s']:,.0f}", f"{p['cpu_us_per_event']:.0f}",
         f"{p['per_worker_us_per_own_event']:.0f}", f"{p['state_bytes_per_event']:.0f}",
         " / ".join(f"{c:.1f}" for c in p["cpu_seconds_per_worker"])]
        for p in result["measured"]
    ]  # fmt: skip
    model = result["model"]
    projected = [
        [p["workers"], f"{p['per_worker_us_per_own_event']:.0f}", f"{p['efficiency']:.2f}"] for p in result["projected"]
    ]
    return (
        md_table(
            [
                "workers",
                "events",
                "events/s (shared cores)",
                "CPU us per event (all workers)",
                "per worker, us per own event",
                "state bytes per event",
                "CPU s of each worker",
            ],
            rows,
        )
        + f"\n\nToday's design (every worker applies every other worker's increments), fitted: a = {model['a_us']:.0f} us "
        f"of own work per event, b = {model['b_us']:.1f} us per other worker:\n\n"
        + md_table(["workers", "per worker, us per own event", "efficiency"], projected)
        + "\n"
    )
