"""Live pipeline benchmark: Kafka -> Faust worker -> Redis on this machine.

- **Sustained throughput**: a topic is pre-loaded with synthetic events, then
  the worker drains it; the rate is measured from its first processed batch to
  its last (worker start-up excluded). The same measurement on a bare Faust
  agent that only consumes (``bench/bare_faust.py``) gives the framework's
  ceiling.
- **Freshness at fixed offered loads**: events are published paced at each
  load while the worker runs; freshness is the worker's own per-event sample
  (Kafka record time -> the user's list written to Redis).

Broker, Redis, worker and publisher share this machine's cores. Services are
started in a temporary folder (or the configured ones are used) with topics
and keys of this run only.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.common import md_table, percentiles, target
from producers.publisher import EventPublisher
from producers.synthetic import SyntheticStream
from streamrec.services import LocalServices
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess


@dataclass(frozen=True)
class Config:
    drain_events: int = 200_000
    loads: tuple[int, ...] = (1000, 5000, 20000)
    load_seconds: float = 10.0
    n_users: int = 10_000
    n_items: int = 5_000
    models: tuple[str, ...] = ("popularity", "itemknn")
    default_model: str = "itemknn"
    #: further model sets drained for comparison (targets are judged on ``models``)
    other_models: tuple[tuple[str, ...], ...] = (("popularity", "isgd"),)
    batch_size: int = 1000
    batch_within: float = 0.05


def config(quick: bool = False) -> Config:
    if quick:
        return Config(drain_events=20_000, loads=(1000, 5000), load_seconds=3.0)
    return Config()


def _settings(base: Settings, tag: str, cfg: Config, state: Path) -> Settings:
    return replace(
        base,
        app_id=f"bench-{tag}",
        topic_prefix=f"bench-{tag}",
        key_prefix=f"bench-{tag}",
        models=cfg.models,
        default_model=cfg.default_model,
        batch_size=cfg.batch_size,
        batch_within=cfg.batch_within,
        state_dir=state / tag,
        freshness_cap=5_000_000,
    )


def _drain_rate(client: RecsClient, n: int, alive: Any, timeout: float = 600.0) -> dict[str, float]:
    """Poll the accepted counter; the rate between the first and the last processed batch."""
    deadline = time.monotonic() + timeout
    first_t = first_n = None
    while time.monotonic() < deadline:
        done = client.stats().get("events_accepted", 0.0)
        now = time.perf_counter()
        if done > 0 and first_t is None:
            first_t, first_n = now, done
        if done >= n:
            seconds = now - (first_t or now)
            return {"events": n, "seconds": seconds, "events_per_s": (n - (first_n or 0)) / seconds if seconds else 0.0}
        if not alive():
            raise RuntimeError("the consumer exited while draining")
        time.sleep(0.02)
    raise TimeoutError(f"drained fewer than {n} events in {timeout} s")


def _preload(settings: Settings, stream: SyntheticStream, n: int) -> float:
    ensure_topics(settings)
    with EventPublisher(settings) as publisher:
        return publisher.publish(stream.events(n), total=n, progress=False).events_per_second


def _bare_faust(settings: Settings, n: int, log: Path, consumers: int = 1) -> dict[str, float]:
    """Drain rate of ``consumers`` bare Faust agents (consume only) in one group; logs beside ``log``."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "REDIS_URL": settings.redis_url or "",
        "BENCH_APP_ID": settings.app_id,
        "BENCH_TOPIC": settings.topic("interactions"),
        "BENCH_STATS_KEY": f"{settings.key_prefix}:stats",
        "STREAMREC_BATCH_SIZE": str(settings.batch_size),
        "STREAMREC_BATCH_WITHIN": str(settings.batch_within),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    cmd = [sys.executable, "-m", "faust", "-A", "bench.bare_faust", "worker", "--without-web", "-l", "warn"]
    procs = []
    for j in range(consumers):
        path = log if consumers == 1 else log.with_name(f"{log.stem}-{j}{log.suffix}")
        with open(path, "ab") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        return _drain_rate(client, n, lambda: all(p.poll() is None for p in procs))
    finally:
        client.close()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _worker_drain(settings: Settings, n: int, log: Path) -> dict[str, float]:
    worker = WorkerProcess(settings, log).start()
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        result = _drain_rate(client, n, worker.alive)
        stats = client.stats()
        result["learn_seconds"] = stats.get("learn_seconds", 0.0)
        result["recommend_seconds"] = stats.get("recommend_seconds", 0.0)
        result["batches"] = stats.get("batches", 0.0)
        return result
    finally:
        client.close()
        worker.stop()


def _freshness_at(settings: Settings, stream: SyntheticStream, load: int, seconds: float, log: Path) -> dict[str, Any]:
    ensure_topics(settings)
    worker = WorkerProcess(settings, log).start()
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    n = int(load * seconds)
    try:
        with EventPublisher(settings) as publisher:  # warm the path: the worker joins and processes one event
            publisher.publish(stream.events(1), progress=False)
            worker.wait_processed(1, 120)
            client.redis.delete(client.layout.freshness_key())
            published = publisher.publish(stream.events(n), rate=load, total=n, progress=False)
        worker.wait_processed(n + 1, 300)
        samples = client.freshness()
    finally:
        client.close()
        worker.stop()
    return {
        "offered_events_per_s": load,
        "achieved_events_per_s": published.events_per_second,
        "events": n,
        "samples": len(samples),
        "freshness_ms": percentiles([s * 1000.0 for s in samples], (50, 95, 99)),
    }


@contextlib.contextmanager
def services_for(prefix: str) -> Iterator[tuple[Settings, Path]]:
    """Settings from the environment and a temporary folder; local services started there when none are configured."""
    base = Settings.from_env()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        state = Path(tmp)
        services = None
        if not (base.kafka_bootstrap_servers and base.redis_url):
            services = LocalServices(state / "services")
            endpoints = services.up()
            base = base.with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url)
        try:
            yield base, state
        finally:
            if services is not None:
                services.down()


def run(cfg: Config) -> dict[str, Any]:
    with services_for("bench-live-") as (base, state):
        tag = f"{int(time.time())}"
        stream = SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1)
        bare = _settings(base, f"bare-{tag}", cfg, state)
        publish_rate = _preload(bare, stream, cfg.drain_events)
        ceiling = _bare_faust(bare, cfg.drain_events, state / "bare.log")
        full = _settings(base, f"drain-{tag}", cfg, state)
        _preload(full, SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1), cfg.drain_events)
        drained = _worker_drain(full, cfg.drain_events, state / "drain.log")
        others = []
        for j, names in enumerate(cfg.other_models):
            other = replace(_settings(base, f"drain{j}-{tag}", cfg, state), models=names, default_model=names[-1])
            _preload(other, SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=1), cfg.drain_events)
            others.append({"models": list(names), **_worker_drain(other, cfg.drain_events, state / f"drain{j}.log")})
        loads = [
            _freshness_at(
                _settings(base, f"load{load}-{tag}", cfg, state),
                stream,
                load,
                cfg.load_seconds,
                state / f"load{load}.log",
            )
            for load in cfg.loads
        ]
    ratio = drained["events_per_s"] / ceiling["events_per_s"] if ceiling["events_per_s"] else None
    at_5k = next((x for x in loads if x["offered_events_per_s"] == 5000), None)
    targets = [
        target("live throughput", ">= 20k events/s sustained", f"{drained['events_per_s']:,.0f} events/s",
               drained["events_per_s"] >= 20_000, f"bare Faust {ceiling['events_per_s']:,.0f} events/s"),
        target("share of the bare-Faust ceiling", ">= 50%", f"{ratio:.0%}" if ratio else "n/a", ratio is not None and ratio >= 0.5),
    ]  # fmt: skip
    if at_5k is not None:
        p99 = at_5k["freshness_ms"]["p99"]
        achieved = at_5k["achieved_events_per_s"]
        targets.append(
            target(
                "freshness p99 at 5k events/s",
                "<= 250 ms",
                f"{p99:.0f} ms (offered 5k, achieved {achieved:,.0f}/s)",
                p99 <= 250,
            )
        )
    return {
        "config": {k: v for k, v in cfg.__dict__.items()},
        "publisher_events_per_s": publish_rate,
        "bare_faust": ceiling,
        "worker": drained,
        "other_workers": others,
        "ratio_to_bare_faust": ratio,
        "loads": loads,
        "targets": targets,
    }


def markdown(result: dict[str, Any]) -> str:
    w, b = result["worker"], result["bare_faust"]
    ratio = result.get("ratio_to_bare_faust")
    lines = [
        md_table(
            ["consumer", "events", "events/s (drain)", "share of bare Faust"],
            [
                ["bare Faust agent (consume only)", f"{b['events']:,}", f"{b['events_per_s']:,.0f}", "100%"],
                [
                    f"streamrec worker ({', '.join(result['config']['models'])})",
                    f"{w['events']:,}",
                    f"{w['events_per_s']:,.0f}",
                    f"{ratio:.0%}" if ratio else "n/a",
                ],
                *[
                    [
                        f"streamrec worker ({', '.join(o['models'])})",
                        f"{o['events']:,}",
                        f"{o['events_per_s']:,.0f}",
                        f"{o['events_per_s'] / b['events_per_s']:.0%}" if b["events_per_s"] else "n/a",
                    ]
                    for o in result.get("other_workers", [])
                ],
            ],
        ),
        "",
        f"Worker time in models while draining: learn {w.get('learn_seconds', 0):.1f} s, recommend {w.get('recommend_seconds', 0):.1f} s "
        f"over {w.get('batches', 0):.0f} batches; the publisher reached {result['publisher_events_per_s']:,.0f} events/s.",
        "",
        md_table(
            ["offered events/s", "achieved events/s", "events", "freshness p50 (ms)", "p95 (ms)", "p99 (ms)"],
            [
                [
                    f"{x['offered_events_per_s']:,}",
                    f"{x['achieved_events_per_s']:,.0f}",
                    f"{x['events']:,}",
                    f"{x['freshness_ms']['p50']:.1f}",
                    f"{x['freshness_ms']['p95']:.1f}",
                    f"{x['freshness_ms']['p99']:.1f}",
                ]
                for x in result["loads"]
            ],
        ),
    ]
    return "\n".join(lines) + "\n"
