"""Scale-out benchmark: 1 to 8 workers over the partitions of the event topics, against bare Faust.

For each number of workers ``n`` (all processes on this machine, with the
broker, Redis and the publisher):

- **bare-Faust ceiling**: ``n`` consume-only agents (``bench/bare_faust.py``) in
  one consumer group drain a pre-loaded topic of ``partitions`` partitions;
- **streamrec workers**: ``n`` worker processes (each with its own state folder,
  state in Kafka) drain the same pre-loaded stream; the rate is measured from
  the first processed batch to the last, and the workers' counters give what
  sharing cost: seconds collecting and committing state, applying the other
  workers' item increments, and bytes written to the state topics;
- **freshness at half the measured capacity**: events published paced at half
  the drain rate while the ``n`` workers run; the workers' own per-event
  samples (Kafka record time -> list written).

From those measured costs, a **model on paper** of 8 and 32 workers: each
worker spends ``t_own`` per event of its own partitions and ``t_apply`` per
event of the others' (their increments), so ``n`` workers drain at most
``n / (t_own + (n - 1) t_apply)`` events/s (on machines of their own, not this
2-core one); the updates topic carries ``b`` bytes per event; every worker
holds the whole item state and ``1/n`` of the users.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.common import md_table, percentiles, target
from bench.live import _bare_faust, _drain_rate, _preload, _settings
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticStream
from streamrec.services import LocalServices
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

__all__ = ["Config", "config", "markdown", "run"]


@dataclass(frozen=True)
class Config:
    drain_events: int = 100_000
    workers: tuple[int, ...] = (1, 2, 4, 8)
    partitions: int = 8
    n_users: int = 10_000
    n_items: int = 5_000
    models: tuple[str, ...] = ("popularity", "itemknn")
    default_model: str = "itemknn"
    other_models: tuple[tuple[str, ...], ...] = ()
    batch_size: int = 1000
    batch_within: float = 0.05
    freshness_seconds: float = 20.0
    paper_workers: tuple[int, ...] = (8, 32)


def config(quick: bool = False) -> Config:
    if quick:
        return Config(drain_events=10_000, freshness_seconds=4.0)
    return Config()


def _workers(settings: Settings, n: int, folder: Path, tag: str) -> list[WorkerProcess]:
    return [
        WorkerProcess(replace(settings, state_dir=folder / f"{tag}-{j}"), folder / f"{tag}-{j}.log").start()
        for j in range(n)
    ]


def _drain(settings: Settings, n: int, n_events: int, folder: Path, tag: str) -> dict[str, Any]:
    workers = _workers(settings, n, folder, tag)
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        result: dict[str, Any] = _drain_rate(client, n_events, lambda: all(w.alive() for w in workers))
        time.sleep(2 * settings.checkpoint_interval + 0.5)  # the last commits and increments land
        stats = client.stats()
    finally:
        client.close()
        for w in workers:
            w.stop()
    result["counters"] = {k: v for k, v in stats.items() if k.startswith(("shared_", "learn", "recommend", "check"))}
    return result


def _freshness(settings: Settings, n: int, load: float, seconds: float, folder: Path, tag: str) -> dict[str, Any]:
    ensure_topics(settings)
    stream = SyntheticStream(n_users=10_000, n_items=5_000, seed=3)
    workers = _workers(settings, n, folder, tag)
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    total = int(load * seconds)
    try:
        with EventPublisher(settings) as publisher:  # warm up: every worker joined and processed something
            publisher.publish(stream.events(200), progress=False)
            workers[0].wait_processed(200, 180)
            time.sleep(3)
            client.redis.delete(client.layout.freshness_key())
            published = publisher.publish(stream.events(total), rate=load, total=total, progress=False)
        workers[0].wait_processed(200 + total, 600)
        samples = client.freshness()
    finally:
        client.close()
        for w in workers:
            w.stop()
    return {
        "offered_events_per_s": load,
        "achieved_events_per_s": published.events_per_second,
        "events": total,
        "samples": len(samples),
        "freshness_ms": percentiles([s * 1000.0 for s in samples], (50, 95, 99)),
    }


def _costs(drained: dict[str, Any]) -> dict[str, float]:
    """Seconds (and bytes) per event of the costs the paper model uses, from one run's counters."""
    c, events = drained["counters"], float(drained["events"])
    model_s = c.get("learn_seconds", 0.0) + c.get("recommend_seconds", 0.0)
    commit_s = c.get("checkpoint_seconds", 0.0)  # wall time of the commits, which run beside processing
    commits = max(c.get("shared_commits", 0.0), 1.0)
    apply_s = c.get("shared_apply_seconds", 0.0)
    return {
        "seconds_per_event_wall": 1.0 / drained["events_per_s"] if drained["events_per_s"] else float("nan"),
        "model_seconds_per_event": model_s / events,
        "commit_seconds_per_event": commit_s / events,
        "commit_wall_seconds_each": commit_s / commits,
        "collect_seconds_per_event": c.get("shared_collect_seconds", 0.0) / events,
        "apply_seconds_per_event": apply_s / events,
        "state_bytes_per_event": c.get("shared_state_bytes_sent", 0.0) / events,
    }


def paper_model(one: dict[str, Any], two: dict[str, Any] | None, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    """Throughput and volumes of ``sizes`` workers on machines of their own, from the measured costs."""
    costs = _costs(one)
    t_own = costs["seconds_per_event_wall"]  # everything one worker spends per event, Faust included
    # applying another worker's increments costs what the 2-worker run measured per event it did not own
    t_apply = 0.0
    if two is not None:
        applied = two["counters"].get("shared_apply_seconds", 0.0)
        t_apply = applied / max(float(two["events"]) / 2.0, 1.0)
    rows = []
    for n in sizes:
        rate = n / (t_own + (n - 1) * t_apply) if t_own > 0 else float("nan")
        rows.append(
            {
                "workers": n,
                "events_per_s": rate,
                "efficiency": rate / (n / t_own) if t_own > 0 else float("nan"),
                "updates_topic_bytes_per_s": rate * costs["state_bytes_per_event"],
                "apply_share_of_worker_time": (n - 1) * t_apply / (t_own + (n - 1) * t_apply) if t_own else 0.0,
            }
        )
    return rows


def run(cfg: Config) -> dict[str, Any]:
    base = Settings.from_env()
    out: dict[str, Any] = {"config": {k: v for k, v in cfg.__dict__.items()}, "runs": [], "targets": []}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        folder = Path(tmp)
        services = None
        if not (base.kafka_bootstrap_servers and base.redis_url):
            services = LocalServices(folder / "services")
            endpoints = services.up()
            base = base.with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url)
        base = replace(base, topic_partitions=cfg.partitions, state="kafka", checkpoint_interval=1.0)
        try:
            tag = f"{int(time.time())}"
            for n in cfg.workers:
                stream = SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1)
                bare_settings = _settings(base, f"bare{n}-{tag}", cfg, folder)
                _preload(bare_settings, stream, cfg.drain_events)
                bare = _bare_faust(
                    bare_settings, cfg.drain_events, folder / f"bare-{bare_settings.app_id}.log", consumers=n
                )
                work_settings = _settings(base, f"work{n}-{tag}", cfg, folder)
                _preload(
                    work_settings, SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1), cfg.drain_events
                )
                drained = _drain(work_settings, n, cfg.drain_events, folder, f"work{n}")
                half = 0.5 * drained["events_per_s"]
                fresh = _freshness(
                    _settings(base, f"fresh{n}-{tag}", cfg, folder), n, half, cfg.freshness_seconds,
                    folder, f"fresh{n}",
                )  # fmt: skip
                out["runs"].append(
                    {
                        "workers": n,
                        "bare_faust": bare,
                        "worker": drained,
                        "share_of_bare": drained["events_per_s"] / bare["events_per_s"]
                        if bare["events_per_s"]
                        else None,
                        "costs": _costs(drained),
                        "freshness_at_half_capacity": fresh,
                    }
                )
        finally:
            if services is not None:
                services.down()
    by_n = {r["workers"]: r for r in out["runs"]}
    out["paper"] = paper_model(by_n[min(by_n)]["worker"], by_n.get(2, {}).get("worker"), cfg.paper_workers)
    for r in out["runs"]:
        share = r["share_of_bare"]
        out["targets"].append(
            target(
                f"per-worker efficiency, {r['workers']} worker(s), {cfg.partitions} partitions",
                ">= 60% of the bare-Faust ceiling",
                f"{share:.0%} ({r['worker']['events_per_s']:,.0f} of {r['bare_faust']['events_per_s']:,.0f} events/s)",
                share is not None and share >= 0.6,
            )
        )
        p99 = r["freshness_at_half_capacity"]["freshness_ms"]["p99"]
        out["targets"].append(
            target(
                f"freshness p99 at half capacity, {r['workers']} worker(s)",
                "<= 250 ms",
                f"{p99:.0f} ms at {r['freshness_at_half_capacity']['achieved_events_per_s']:,.0f} events/s",
                p99 <= 250,
            )
        )
    return out


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rows = []
    for r in result["runs"]:
        c = r["costs"]
        fresh = r["freshness_at_half_capacity"]
        rows.append(
            [
                str(r["workers"]),
                f"{r['bare_faust']['events_per_s']:,.0f}",
                f"{r['worker']['events_per_s']:,.0f}",
                f"{r['share_of_bare']:.0%}" if r["share_of_bare"] else "n/a",
                f"{c['model_seconds_per_event'] * 1e6:.0f}",
                f"{c.get('collect_seconds_per_event', 0.0) * 1e6:.1f}",
                f"{c.get('commit_wall_seconds_each', 0.0) * 1e3:.0f}",
                f"{c['apply_seconds_per_event'] * 1e6:.1f}",
                f"{c['state_bytes_per_event']:.0f}",
                f"{fresh['achieved_events_per_s']:,.0f}: "
                f"{fresh['freshness_ms']['p50']:.0f} / {fresh['freshness_ms']['p95']:.0f} / {fresh['freshness_ms']['p99']:.0f}",
            ]
        )
    paper = [
        [
            str(p["workers"]),
            f"{p['events_per_s']:,.0f}",
            f"{p['efficiency']:.0%}",
            f"{p['updates_topic_bytes_per_s'] / 1e6:.1f} MB/s",
            f"{p['apply_share_of_worker_time']:.0%}",
        ]
        for p in result.get("paper", [])
    ]
    return (
        f"Synthetic stream ({cfg['n_users']:,} users, {cfg['n_items']:,} items), {cfg['partitions']} partitions, models "
        f"{', '.join(cfg['models'])}, state in Kafka (commits every second); every process on this machine.\n\n"
        + md_table(
            [
                "workers",
                "bare Faust events/s",
                "streamrec events/s",
                "share",
                "model µs/event",
                "collect µs/event (blocks learning)",
                "commit ms (wall, beside processing)",
                "apply others' µs/event",
                "state bytes/event",
                "freshness at half capacity (events/s: p50/p95/p99 ms)",
            ],
            rows,
        )
        + "\n\nOn paper (each worker on a machine of its own, costs as measured above):\n\n"
        + md_table(["workers", "events/s", "efficiency", "updates + changelog volume", "time applying others"], paper)
        + "\n"
    )
