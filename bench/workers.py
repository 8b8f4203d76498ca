"""Workers: CPU seconds and state bytes per event as worker processes are added (issue 18's "before").

For each number of worker processes ``n`` (1, 2, 4, 8; all on this machine, with
the broker and Redis, over ``partitions`` partitions), the workers start on
empty topics, take one event of every catalogue item and a warm-up stream
(so that no worker's item arrays grow inside the measured window), and once their group has settled the
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

That fit also charges to ``b`` what a worker process costs per second whatever the
events (heartbeats, fetch loops, commit transactions), which grows with the number of
processes on these two cores, not with the events. So two more measurements:

- **idle**: before the stream, each worker's CPU over ``idle_seconds`` with nothing to
  do; ``net_us_per_event`` subtracts that rate times the run's duration;
- **apply only**: with ``n`` workers, a stream whose users all hash to partition 0, so
  one worker learns every event and the ``n - 1`` others only apply its increments; their
  CPU over the run, net of their idle rate, per event and per worker, is ``b`` measured
  directly in the live system (``apply_only``), and ``a`` is the single worker's net
  figure. The projection is repeated with these two.
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
from streamrec.events import Interaction
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
    idle_seconds: float = 10.0
    apply_only: tuple[int, ...] = (2, 4, 8)
    apply_only_events: int = 20_000
    projected: tuple[int, ...] = (64, 256)
    #: the designs compared: every worker applies every other's increments, or item parts' owners merge them
    item_states: tuple[str, ...] = ("broadcast", "owned")


def config(quick: bool = False) -> Config:
    if quick:
        return Config(
            workers=(1, 2), warmup_events=500, events=3_000, settle_seconds=3.0, idle_seconds=2.0,
            apply_only=(2,), apply_only_events=1_000,
        )  # fmt: skip
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


def partition_of(user: str, partitions: int) -> int:
    """The partition the producer (kafka-python's default partitioner, murmur2 of the key) sends a user to."""
    from kafka.partitioner.default import murmur2

    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


def _idle_rate(workers: list[WorkerProcess], seconds: float) -> dict[int, float]:
    """Each worker's CPU seconds per second while no event comes."""
    before = {w.pid: cpu_seconds(w.pid) for w in workers}  # type: ignore[index]
    time.sleep(seconds)
    return {w.pid: (cpu_seconds(w.pid) - before[w.pid]) / seconds for w in workers}  # type: ignore[index]


def _measure(
    base: Any, cfg: Config, n: int, state: Path, tag: str, apply_only: bool = False, item_state: str = "broadcast"
) -> dict[str, Any]:
    kind = ("a" if apply_only else "w") + ("o" if item_state == "owned" else "")
    settings = replace(
        _settings(base, f"{kind}{n}-{tag}", LiveConfig(models=cfg.models, default_model=cfg.default_model), state),
        topic_partitions=cfg.partitions,
        item_state=item_state,
    )
    ensure_topics(settings)
    stream = SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=5)
    if apply_only:  # warm-up over every partition (every worker joins and has users), then partition 0 only
        warm = list(stream.events(cfg.warmup_events))
        rest = (e for e in stream.events(cfg.apply_only_events * cfg.partitions * 4)
                if partition_of(e.user_id, cfg.partitions) == 0)  # fmt: skip
        events = warm + [e for _, e in zip(range(cfg.apply_only_events), rest, strict=False)]
    else:
        events = list(stream.events(cfg.warmup_events + cfg.events))
    # every item once before the warm-up (a catalogue the workers know): the measured stream then costs what a
    # running system's events cost, without the one-off growth of each worker's item arrays and its switch from a
    # dense to a sparse co-occurrence store (one pass over 4,096 x 4,096 counts) inside the measured window
    catalogue = [
        Interaction(user_id=f"c{k % 64}", item_id=f"i{k}", timestamp=stream.start_time - 1.0, event_type="view")
        for k in range(cfg.n_items)
    ]  # fmt: skip
    events = catalogue + events
    warmup = len(catalogue) + cfg.warmup_events
    n_events = len(events) - warmup
    workers = [
        WorkerProcess(replace(settings, state_dir=state / f"{kind}{n}-{j}"), state / f"{kind}{n}-{j}.log").start()
        for j in range(n)
    ]
    client = RecsClient(settings.redis_url or "", settings.key_prefix)
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events[:warmup], progress=False)
            _wait(client, warmup, workers)
            time.sleep(cfg.settle_seconds)  # every worker joined, the group settled, the first commits made
            idle = _idle_rate(workers, cfg.idle_seconds)
            before = {w.pid: cpu_seconds(w.pid) for w in workers}  # type: ignore[index]
            counted = ("shared_state_bytes_sent", "shared_increment_bytes_sent", "shared_owner_bytes")
            bytes_before = {k: client.stats().get(k, 0.0) for k in counted}
            started = time.perf_counter()
            publisher.publish(events[warmup:], progress=False)
            _wait(client, warmup + n_events, workers)
            time.sleep(2.5)  # the last commits write their increments, the others apply them
            seconds = time.perf_counter() - started
            cpu = {w.pid: cpu_seconds(w.pid) - before[w.pid] for w in workers}  # type: ignore[index]
            stats = client.stats()
    finally:
        client.close()
        for w in workers:
            w.stop()
    total_cpu = sum(cpu.values())
    net = {pid: c - idle[pid] * seconds for pid, c in cpu.items()}
    state_bytes, increment_bytes, merged_bytes = (stats.get(k, 0.0) - bytes_before[k] for k in counted)
    # on the wire: what the workers wrote, and what they read again: every other worker's increments (broadcast),
    # or every part owner's merges, which every worker reads (owned; each piece is read once, by its owner)
    read_again = merged_bytes * n if item_state == "owned" else increment_bytes * (n - 1)
    out = {
        "workers": n,
        "events": n_events,
        "seconds": seconds,
        "events_per_s": n_events / seconds,
        "cpu_seconds_per_worker": sorted(cpu.values()),
        "idle_cpu_per_worker_s": sorted(round(r, 4) for r in idle.values()),
        "cpu_us_per_event": total_cpu / n_events * 1e6,
        "per_worker_us_per_own_event": total_cpu / n_events * 1e6,
        "net_us_per_event": sum(net.values()) / n_events * 1e6,
        "item_state": item_state,
        "state_bytes_per_event": state_bytes / n_events,
        "increment_bytes_per_event": increment_bytes / n_events,
        "merged_bytes_per_event": merged_bytes / n_events,
        "wire_bytes_per_event": (state_bytes + merged_bytes + read_again) / n_events,
        "apply_seconds": stats.get("shared_apply_seconds", 0.0),
    }
    if apply_only:  # the worker that learned the events spent the most; the others only applied
        owner = max(net, key=net.__getitem__)
        others = [c for pid, c in net.items() if pid != owner]
        out["owner_net_us_per_event"] = net[owner] / n_events * 1e6
        out["apply_us_per_event_per_other_worker"] = sum(others) / len(others) / n_events * 1e6
    return out


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
        points: dict[str, list[dict[str, Any]]] = {d: [] for d in cfg.item_states}
        applying: dict[str, list[dict[str, Any]]] = {d: [] for d in cfg.item_states}
        for n in cfg.workers:  # the designs alternate: the machine's drift falls on both
            for design in cfg.item_states:
                points[design].append(_measure(base, cfg, n, state, tag, item_state=design))
        for n in cfg.apply_only:
            for design in cfg.item_states:
                applying[design].append(_measure(base, cfg, n, state, tag, apply_only=True, item_state=design))
    designs = {d: _design(cfg, d, points[d], applying[d]) for d in cfg.item_states}
    return {"config": cfg.__dict__, "designs": designs,
            "targets": [t for d in designs.values() for t in d["targets"]]}  # fmt: skip


_NAMES = {"broadcast": "today's design", "owned": "item state owned by item"}


def _design(cfg: Config, design: str, points: list[dict[str, Any]], applying: list[dict[str, Any]]) -> dict[str, Any]:
    """One design's figures: the fitted and the apply-only cost models, projections and targets."""
    name = _NAMES.get(design, design)
    a, b = fit(points)
    a_net = points[0]["net_us_per_event"]
    b_live = float(np.median([p["apply_us_per_event_per_other_worker"] for p in applying])) if applying else 0.0
    projected_net = [
        {"workers": n, "per_worker_us_per_own_event": a_net + b_live * (n - 1),
         "efficiency": a_net / (a_net + b_live * (n - 1))}
        for n in (*cfg.workers, *cfg.projected)
    ]  # fmt: skip
    one = points[0]["per_worker_us_per_own_event"]
    projected = [
        {"workers": n, "per_worker_us_per_own_event": a + b * (n - 1), "efficiency": a / (a + b * (n - 1))}
        for n in (*cfg.workers, *cfg.projected)
    ]
    eight = next((p for p in points if p["workers"] == 8), points[-1])
    ratio = eight["per_worker_us_per_own_event"] / one
    at_64 = next(p for p in projected if p["workers"] == 64)
    at_64_net = next(p for p in projected_net if p["workers"] == 64)
    targets = [
        target(f"{name}: per-worker CPU per own event, {eight['workers']} workers against 1", "within 1.2x",
               f"{ratio:.2f}x ({eight['per_worker_us_per_own_event']:.0f} against {one:.0f} us)", ratio <= 1.2),
        target(f"{name}: projected efficiency at 64 workers (fitted)", ">= 0.8", f"{at_64['efficiency']:.2f}",
               at_64["efficiency"] >= 0.8, f"fitted a = {a:.0f} us own work, b = {b:.1f} us per other worker"),
        target(f"{name}: projected efficiency at 64 workers (net of idle; b measured applying only)", ">= 0.8",
               f"{at_64_net['efficiency']:.2f}", at_64_net["efficiency"] >= 0.8,
               f"a = {a_net:.0f} us (one worker, net of idle), b = {b_live:.1f} us per other worker"),
    ]  # fmt: skip
    return {"item_state": design, "measured": points, "apply_only": applying, "model": {"a_us": a, "b_us": b},
            "projected": projected, "model_net": {"a_us": a_net, "b_us": b_live}, "projected_net": projected_net,
            "targets": targets}  # fmt: skip


def markdown(result: dict[str, Any]) -> str:
    if "designs" not in result:  # a result from before the designs were compared
        return _design_markdown(result)
    return "\n".join(
        f"\n**{_NAMES.get(d, d).capitalize()}** (`STREAMREC_ITEM_STATE={d}`):\n\n" + _design_markdown(r)
        for d, r in result["designs"].items()
    )


def _design_markdown(result: dict[str, Any]) -> str:
    rows = [
        [p["workers"], f"{p['events']:,}", f"{p['events_per_s']:,.0f}", f"{p['cpu_us_per_event']:.0f}",
         f"{p['per_worker_us_per_own_event']:.0f}", f"{p['state_bytes_per_event']:.0f}",
         f"{p['wire_bytes_per_event']:.0f}" if "wire_bytes_per_event" in p else "",
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
                "bytes on the wire per event",
                "CPU s of each worker",
            ],
            rows,
        )
        + f"\n\nFitted a + b (n - 1): a = {model['a_us']:.0f} us of own work per event, b = {model['b_us']:.1f} us "
        "per other worker:\n\n"
        + md_table(["workers", "per worker, us per own event", "efficiency"], projected)
        + "\n"
        + _net_markdown(result)
    )


def _net_markdown(result: dict[str, Any]) -> str:
    if "model_net" not in result:  # a result from before the idle and apply-only measurements
        return ""
    idle = [
        [
            p["workers"],
            " / ".join(f"{r * 100:.1f}%" for r in p["idle_cpu_per_worker_s"]),
            f"{p['net_us_per_event']:.0f}",
        ]
        for p in result["measured"]
    ]
    applying = [
        [p["workers"], f"{p['events']:,}", f"{p['owner_net_us_per_event']:.0f}",
         f"{p['apply_us_per_event_per_other_worker']:.1f}"]
        for p in result["apply_only"]
    ]  # fmt: skip
    model = result["model_net"]
    projected = [
        [p["workers"], f"{p['per_worker_us_per_own_event']:.0f}", f"{p['efficiency']:.2f}"]
        for p in result["projected_net"]
    ]
    return (
        "\nIdle CPU of each worker (share of a core, nothing to do) and the CPU per event net of it:\n\n"
        + md_table(["workers", "idle CPU of each worker", "net CPU us per event (all workers)"], idle)
        + "\n\nApply only (every event to partition 0: one worker learns, the others apply its increments), "
        "net of idle:\n\n"
        + md_table(["workers", "events", "learning worker, us per event", "each other worker, us per event"], applying)
        + f"\n\nWith a = {model['a_us']:.0f} us (one worker, net of idle) and b = {model['b_us']:.1f} us "
        "(measured applying only, median):\n\n"
        + md_table(["workers", "per worker, us per own event", "efficiency"], projected)
        + "\n"
    )
