"""Soak under chaos: workers killed, stopped and started at random while events flow; nothing lost.

``python -m bench --live --only soak`` (or ``python -m bench.soak --minutes 10``) runs
``workers`` worker processes over ``partitions`` partitions for ``duration`` seconds
while a publisher sends about ``rate`` events/s and, every 5 to 15 seconds, one
random worker slot changes: a running worker is killed with ``kill -9`` or
stopped cleanly (SIGTERM), or a stopped one is started again on its own state
folder. A CPU-bound neighbour process runs beside everything unless told not to.

Then the publisher stops, the workers catch up, and the state Kafka holds (the
snapshot, the item increments and every partition's changelog, rebuilt by
:func:`stream_app.state.rebuild_models`) is compared **exactly** with one model that
learned every published event once, in order:

- **events lost / learned twice** (items): each event is a click of weight 2; the
  popularity score of every item, divided by one event's contribution, says how
  many of its events Kafka holds more or fewer than published;
- **events lost / extra** (users): every user clicks at most ``items_per_user``
  distinct items, fewer than item-kNN's window, so a user's history in Kafka
  names every event of theirs that was learned;
- the item-kNN counts and co-occurrences, equal array for array;
- **every user's list** in Redis reflects their newest event (``event_ts``) and
  holds none of the items they clicked;
- **time to resume** after every membership change: until the lists of every
  partition reflect an event published after the change began (the workers'
  ``{prefix}:offsets`` in Redis, written with the lists).

The same code runs in the test suite with a two-minute configuration
(``tests/integration/test_soak.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import md_table, percentiles, target
from producers.publisher import EventPublisher
from streamrec.events import Interaction, to_interactions
from streamrec.settings import Settings
from streamrec.status import wait_committed
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

__all__ = ["ClickStream", "Config", "Soak", "config", "markdown", "passed", "run"]

#: A CPU-bound neighbour: one core busy for as long as the soak runs.
NEIGHBOUR = [sys.executable, "-c", "while True: pass"]


@dataclass(frozen=True)
class Config:
    duration: float = 600.0  # seconds of chaos while events flow
    rate: float = 1500.0  # events/s offered
    workers: int = 3  # worker slots (each with a state folder of its own)
    partitions: int = 6
    change_every: tuple[float, float] = (5.0, 15.0)  # seconds between membership changes
    actions: tuple[str, ...] = ("kill", "stop", "start")
    min_running: int = 1  # never fewer running workers than this
    n_items: int = 5_000
    active_users: int = 3_000  # users clicking at any one time
    items_per_user: int = 12  # distinct items per user (< item-kNN's window of 20)
    neighbour: bool = True  # a CPU-bound process beside the soak
    resume_timeout: float = 120.0
    drain_timeout: float = 600.0
    checkpoint_interval: float = 1.0
    batch_size: int = 1000
    seed: int = 0
    models: tuple[str, ...] = ("popularity", "itemknn")
    out: str | None = None  # folder for worker logs (a temporary one when None)


def config(quick: bool = False) -> Config:
    """The issue's soak (10 minutes at 1,500 events/s), or a two-minute one (``quick``)."""
    logs = os.environ.get("STREAMREC_SOAK_LOGS")  # keep the workers' logs there (to read after a failed soak)
    if quick:
        return Config(duration=120.0, rate=600.0, change_every=(3.0, 8.0), out=logs)
    return Config(out=logs)


class ClickStream:
    """Clicks of users who each click up to ``items_per_user`` distinct items, then leave.

    ``active_users`` users click at any time, items drawn by a Zipf-like law;
    a user who reached ``items_per_user`` clicks is replaced by a new one. Every
    event is a ``click`` (weight 2) stamped with the time it is made.

    Examples
    --------
    >>> stream = ClickStream(n_items=50, active_users=5, items_per_user=3, seed=1)
    >>> events = [stream.next(1000.0 + n) for n in range(40)]
    >>> per_user = {}
    >>> for e in events:
    ...     per_user.setdefault(e.user_id, []).append(e.item_id)
    >>> all(len(v) == len(set(v)) <= 3 for v in per_user.values())
    True
    """

    def __init__(self, n_items: int, active_users: int, items_per_user: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
        self.cdf = np.cumsum(weights / weights.sum())
        self.items_per_user = items_per_user
        self.next_user = 0
        self.active: list[tuple[str, set[int]]] = [self._new_user() for _ in range(active_users)]
        self._draws = np.empty(0)
        self._slots = np.empty(0, dtype=np.int64)

    def _new_user(self) -> tuple[str, set[int]]:
        self.next_user += 1
        return f"s{self.next_user}", set()

    def _draw(self) -> float:
        if not len(self._draws):
            self._draws = self.rng.random(4096)
            self._slots = self.rng.integers(0, len(self.active), 4096)
        value, self._draws = float(self._draws[0]), self._draws[1:]
        return value

    def _slot(self) -> int:
        if not len(self._slots):
            self._draw()
        value, self._slots = int(self._slots[0]), self._slots[1:]
        return value

    def next(self, timestamp: float) -> Interaction:
        slot = self._slot()
        user, clicked = self.active[slot]
        item = int(np.searchsorted(self.cdf, self._draw()))
        while item in clicked:
            item = int(np.searchsorted(self.cdf, self._draw()))
        clicked.add(item)
        if len(clicked) >= self.items_per_user:
            self.active[slot] = self._new_user()
        return Interaction(user, f"i{item}", timestamp, "click")


@dataclass
class Change:
    at: float  # seconds since the soak started
    action: str
    slot: int
    running_after: int
    resume_seconds: float | None = None  # until every partition's lists reflect an event sent after it


@dataclass
class Soak:
    """One soak: the workers, the publisher, the chaos, and what was measured."""

    settings: Settings
    cfg: Config
    folder: Path
    events: list[Interaction] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    published_by_partition: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.slots: list[WorkerProcess | None] = [None] * self.cfg.workers
        self.starts = [0] * self.cfg.workers
        self.rng = random.Random(self.cfg.seed)
        self._lock = threading.Lock()
        self._stop_publishing = threading.Event()
        self._trackers: list[threading.Thread] = []
        self.started_at = time.monotonic()

    # -- workers ------------------------------------------------------------------------

    def start(self, slot: int) -> None:
        self.starts[slot] += 1
        log = self.folder / f"worker-{slot}-{self.starts[slot]}.log"  # one per incarnation
        settings = replace(self.settings, state_dir=self.folder / f"state-{slot}")
        self.slots[slot] = WorkerProcess(settings, log).start()

    def running(self) -> list[int]:
        return [n for n, w in enumerate(self.slots) if w is not None and w.alive()]

    def change(self) -> Change | None:
        """One random membership change that keeps at least ``min_running`` workers."""
        running = self.running()
        stopped = [n for n in range(self.cfg.workers) if n not in running]
        choices = []
        if "start" in self.cfg.actions and stopped:
            choices += [("start", n) for n in stopped]
        if len(running) > self.cfg.min_running:
            choices += [(a, n) for a in ("kill", "stop") if a in self.cfg.actions for n in running]
        if not choices:
            return None
        action, slot = self.rng.choice(choices)
        offsets = self.published_offsets()
        at = time.monotonic() - self.started_at
        worker = self.slots[slot]
        if action == "start":
            self.start(slot)
        elif action == "kill":
            assert worker is not None
            worker.kill()
        else:
            assert worker is not None
            ready = "worker ready" in worker.log_tail(1_000_000)
            code = worker.stop(timeout=60)
            if code != 0 and ready:  # before it was ready, SIGTERM ends a worker still importing: nothing to lose
                raise RuntimeError(f"worker {slot} did not stop cleanly (exit {code}):\n{worker.log_tail()}")
            if not ready:
                action = "stop-while-starting"
        change = Change(at, action, slot, len(self.running()))
        self.changes.append(change)
        tracker = threading.Thread(target=self._track_resume, args=(change, offsets), daemon=True)
        tracker.start()
        self._trackers.append(tracker)
        return change

    # -- events -------------------------------------------------------------------------

    def partition_of(self, user: str) -> int:
        from kafka.partitioner.default import murmur2

        return (murmur2(user.encode()) & 0x7FFFFFFF) % self.settings.topic_partitions

    def published_offsets(self) -> dict[int, int]:
        """Per partition, how many events the publisher has handed to Kafka (flushed each 0.1 s)."""
        with self._lock:
            return dict(self.published_by_partition)

    def publish(self) -> None:
        """Send clicks at ``rate`` until told to stop; every event is kept for the reference."""
        stream = ClickStream(self.cfg.n_items, self.cfg.active_users, self.cfg.items_per_user, self.cfg.seed)
        interval = 0.1
        per_tick = self.cfg.rate * interval
        with EventPublisher(self.settings) as publisher:
            next_tick = time.monotonic()
            owed = 0.0
            while not self._stop_publishing.is_set():
                owed += per_tick
                n = int(owed)
                owed -= n
                now = time.time()
                sent: dict[int, int] = {}
                for k in range(n):
                    event = stream.next(now + k * 1e-6)
                    publisher.send(event)
                    self.events.append(event)
                    p = self.partition_of(event.user_id)
                    sent[p] = sent.get(p, 0) + 1
                publisher.flush()  # what counts as published has reached the broker
                with self._lock:
                    for p, k in sent.items():
                        self.published_by_partition[p] = self.published_by_partition.get(p, 0) + k
                next_tick += interval
                time.sleep(max(0.0, next_tick - time.monotonic()))

    def _track_resume(self, change: Change, published: dict[int, int]) -> None:
        """Seconds until, on every partition, the lists reflect an event published after ``change``.

        ``published`` holds what had reached the broker when the change began;
        the workers write the next offset they will process with the lists
        (``{prefix}:offsets``), so ``written > published`` means an event sent
        after the change is in its user's list.
        """
        client = RecsClient(self.settings.redis_url or "", self.settings.key_prefix)
        topic = self.settings.topic("interactions")
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.cfg.resume_timeout:
                written = client.offsets()
                if all(written.get((topic, p), 0) > o for p, o in published.items()):
                    change.resume_seconds = time.monotonic() - started
                    return
                time.sleep(0.1)
        finally:
            client.close()

    # -- the run ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        neighbour = subprocess.Popen(NEIGHBOUR) if cfg.neighbour else None
        try:
            for slot in range(cfg.workers):
                self.start(slot)
            publisher = threading.Thread(target=self.publish, daemon=True)
            publisher.start()
            self.started_at = time.monotonic()
            while time.monotonic() - self.started_at < cfg.duration:
                time.sleep(self.rng.uniform(*cfg.change_every))
                if time.monotonic() - self.started_at >= cfg.duration:
                    break
                self.change()
                if not publisher.is_alive():
                    raise RuntimeError("the publisher stopped")
            self._stop_publishing.set()
            publisher.join(60)
            chaos_seconds = time.monotonic() - self.started_at
            for slot in range(cfg.workers):  # every slot runs again for the drain
                if slot not in self.running():
                    self.start(slot)
            drained = self._drain()
            for tracker in self._trackers:
                tracker.join(cfg.resume_timeout)
            for slot, worker in enumerate(self.slots):
                if worker is not None and worker.alive():
                    code = worker.stop(timeout=60)
                    if code != 0:
                        raise RuntimeError(f"worker {slot} did not stop cleanly (exit {code}):\n{worker.log_tail()}")
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait(10)
            for worker in self.slots:
                if worker is not None:
                    worker.kill()
        verdict = self.verify()
        resumes = [c.resume_seconds for c in self.changes]
        config = asdict(cfg)
        config["out"] = "kept" if cfg.out else None  # where is this machine's business, not the report's
        return {
            "config": config,
            "chaos_seconds": chaos_seconds,
            "events": len(self.events),
            "events_per_second": len(self.events) / chaos_seconds if chaos_seconds else 0.0,
            "changes": [asdict(c) for c in self.changes],
            "membership_changes": len(self.changes),
            "by_action": {
                a: sum(c.action == a for c in self.changes) for a in ("kill", "stop", "stop-while-starting", "start")
            },
            "resume_seconds": {
                "max": max((r for r in resumes if r is not None), default=None),
                "not_resumed": sum(r is None for r in resumes),
                **({"percentiles": percentiles([r for r in resumes if r is not None])} if any(resumes) else {}),
            },
            "drain_seconds": drained,
            **verdict,
        }

    def _drain(self) -> float:
        """Wait until the group's committed offsets (committed with the state) reach every published event."""
        started = time.monotonic()
        wanted = self.published_offsets()
        wait_committed(self.settings, self.settings.topic("interactions"), wanted, self.cfg.drain_timeout)
        return time.monotonic() - started

    # -- the verdict --------------------------------------------------------------------

    def verify(self) -> dict[str, Any]:
        """Kafka's state against one model that learned every event once; Redis' lists against the events."""
        import asyncio

        import models
        from stream_app.state import rebuild_models

        held = asyncio.run(rebuild_models(self.settings, self.settings.models, self.settings.topic_partitions))
        batch = to_interactions(self.events)
        reference = {name: models.create(name) for name in self.settings.models}
        for model in reference.values():
            model.learn(batch)
        pop, pop_ref = held["popularity"], reference["popularity"]
        ids = [i for i in pop_ref.item_index.ids if i is not None]
        got_rows = pop.item_index.lookup(ids)
        ref_scores = pop_ref.item_scores()[pop_ref.item_index.lookup(ids)]
        got_scores = np.where(got_rows >= 0, pop.item_scores()[np.maximum(got_rows, 0)], 0.0)
        per_item = np.bincount(pop_ref.item_index.lookup([e.item_id for e in self.events]), minlength=len(ids))
        unit = ref_scores / np.maximum(per_item[pop_ref.item_index.lookup(ids)], 1)
        extra = np.rint((got_scores - ref_scores) / np.where(unit > 0, unit, 1.0)).astype(np.int64)
        knn, knn_ref = held["itemknn"], reference["itemknn"]
        users: dict[str, list[str]] = {}
        last: dict[str, float] = {}
        for e in self.events:
            users.setdefault(e.user_id, []).append(e.item_id)
            last[e.user_id] = e.timestamp
        user_lost = user_extra = users_wrong = 0
        for user, items in users.items():
            history = knn.history(user)
            missing, more = set(items) - set(history), set(history) - set(items)
            user_lost += len(missing)
            user_extra += len(more)
            users_wrong += bool(missing or more or history != knn_ref.history(user))
        mine = knn.item_index.lookup(knn_ref.item_index.ids)
        counts_equal = bool((mine >= 0).all()) and np.array_equal(knn.item_counts()[mine], knn_ref.item_counts())
        cooc_equal = counts_equal and _same_cooccurrence(knn, knn_ref, mine)
        lists = self._check_lists(users, last)
        return {
            "items_lost_events": int(-extra[extra < 0].sum()),
            "items_twice_events": int(extra[extra > 0].sum()),
            "items_differing": int((extra != 0).sum()),
            "popularity_max_rel_error": float(np.max(np.abs(got_scores - ref_scores) / np.maximum(ref_scores, 1e-12))),
            "users": len(users),
            "user_events_lost": user_lost,
            "user_events_extra": user_extra,
            "users_differing": users_wrong,
            "itemknn_counts_equal": counts_equal,
            "itemknn_cooccurrence_equal": cooc_equal,
            **lists,
        }

    def _check_lists(self, users: dict[str, list[str]], last: dict[str, float]) -> dict[str, Any]:
        client = RecsClient(self.settings.redis_url or "", self.settings.key_prefix)
        missing = stale = with_seen = 0
        try:
            names = sorted(users)
            for start in range(0, len(names), 1000):
                chunk = names[start : start + 1000]
                for user, rec in client.get_many(chunk).items():
                    if rec is None or rec.fallback:
                        missing += 1
                        continue
                    if rec.event_ts != last[user]:
                        stale += 1
                    if set(rec.items) & set(users[user]):
                        with_seen += 1
        finally:
            client.close()
        return {"lists_missing": missing, "lists_stale": stale, "lists_with_seen_items": with_seen}


def _same_cooccurrence(knn: Any, ref: Any, mine: np.ndarray) -> bool:
    got = knn.cooccurrence().tocsr()[mine][:, mine]
    want = ref.cooccurrence().tocsr()
    return (got != want).nnz == 0


def passed(result: dict[str, Any]) -> bool:
    """Nothing lost, nothing learned twice, every list right."""
    return (
        result["items_lost_events"] == 0
        and result["items_twice_events"] == 0
        and result["user_events_lost"] == 0
        and result["user_events_extra"] == 0
        and result["users_differing"] == 0
        and result["itemknn_counts_equal"]
        and result["itemknn_cooccurrence_equal"]
        and result["lists_missing"] == 0
        and result["lists_stale"] == 0
        and result["lists_with_seen_items"] == 0
    )


def soak_settings(base: Settings, cfg: Config, tag: str) -> Settings:
    return replace(
        base,
        app_id=f"soak-{tag}",
        topic_prefix=f"soak-{tag}",
        key_prefix=f"soak-{tag}",
        topic_partitions=cfg.partitions,
        models=cfg.models,
        default_model="itemknn",
        checkpoint_interval=cfg.checkpoint_interval,
        batch_size=cfg.batch_size,
    )


def run(cfg: Config, base: Settings | None = None) -> dict[str, Any]:
    """Run the soak against the configured (or local) broker and Redis."""
    from streamrec.services import resolve_services

    base = base or resolve_services(Settings.from_env())
    tag = f"{int(time.time())}"
    settings = soak_settings(base, cfg, tag)
    ensure_topics(settings)
    with tempfile.TemporaryDirectory(prefix="streamrec-soak-") as tmp:
        folder = Path(cfg.out) if cfg.out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        result = Soak(settings, cfg, folder).run()
    result["passed"] = passed(result)
    result["targets"] = [
        target(
            "soak under chaos: events lost / learned twice",
            "0 / 0 over >= 50 membership changes",
            f"{result['items_lost_events']} / {result['items_twice_events']} over {result['membership_changes']} changes",
            result["items_lost_events"] == 0
            and result["items_twice_events"] == 0
            and result["membership_changes"] >= 50,
        ),
        target(
            "soak: lists resume after every change",
            "<= 10 s",
            f"longest {result['resume_seconds']['max']:.1f} s" if result["resume_seconds"]["max"] else "n/a",
            result["resume_seconds"]["not_resumed"] == 0 and (result["resume_seconds"]["max"] or 0) <= 10.0,
        ),
    ]
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    rs = result["resume_seconds"]
    p = rs.get("percentiles", {})
    rows = [
        ["membership changes", f"{result['membership_changes']} ({', '.join(f'{k} {v}' for k, v in result['by_action'].items())})"],
        ["events published", f"{result['events']:,} in {result['chaos_seconds']:.0f} s ({result['events_per_second']:,.0f}/s)"],
        ["events lost / learned twice (item state)", f"{result['items_lost_events']} / {result['items_twice_events']}"],
        ["user events lost / extra (histories)", f"{result['user_events_lost']} / {result['user_events_extra']} of {result['users']:,} users"],
        ["item-kNN counts / co-occurrences equal", f"{result['itemknn_counts_equal']} / {result['itemknn_cooccurrence_equal']}"],
        ["lists missing / stale / with seen items", f"{result['lists_missing']} / {result['lists_stale']} / {result['lists_with_seen_items']}"],
        ["time to resume p50 / p99 / max (s)", f"{p.get('p50', float('nan')):.1f} / {p.get('p99', float('nan')):.1f} / {rs['max'] or float('nan'):.1f} ({rs['not_resumed']} not within {cfg['resume_timeout']:.0f} s)"],
        ["drain after the chaos (s)", f"{result['drain_seconds']:.1f}"],
    ]  # fmt: skip
    head = (
        f"{cfg['workers']} worker slots over {cfg['partitions']} partitions, {cfg['duration']:.0f} s at "
        f"{cfg['rate']:,.0f} events/s offered, a change every {cfg['change_every'][0]:.0f}-{cfg['change_every'][1]:.0f} s"
        f" ({'with' if cfg['neighbour'] else 'without'} a CPU-bound neighbour), models {', '.join(cfg['models'])}:\n\n"
    )
    return head + md_table(["", "measured"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=1500.0)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--every", type=float, nargs=2, default=(5.0, 15.0), metavar=("MIN", "MAX"))
    parser.add_argument("--no-neighbour", action="store_true")
    parser.add_argument("--logs", help="keep the worker logs in this folder")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    cfg = Config(
        duration=args.minutes * 60,
        rate=args.rate,
        workers=args.workers,
        partitions=args.partitions,
        change_every=tuple(args.every),  # type: ignore[arg-type]
        neighbour=not args.no_neighbour,
        out=args.logs,
    )
    result = run(cfg)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
