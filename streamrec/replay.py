"""Live backtest through the real path: a log published to Kafka while the worker runs.

For every event, just before publishing it, the replay reads what Redis held
for that user (the user's list, else the global fallback: what an application
would have shown) and scores the event against it; afterwards it reads the
worker's freshness samples (event reached Kafka -> its user's list written).

The offline backtest of the same log scores the same thing when its model
serves the popularity fallback to users without history (see
:class:`ServedLists`), so the two hit-rates can be compared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from producers.publisher import EventPublisher
from streamrec.events import Event, Interaction, ItemUpdate, Rating
from streamrec.served import ServedLists
from streamrec.settings import Settings
from streamrec.store import RecsClient
from streamrec.topics import ensure_topics, reset_state
from streamrec.workerproc import WorkerProcess

__all__ = ["ReplayResult", "compare_offline", "percentiles", "run_replay"]


def percentiles(samples: Sequence[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles of ``samples`` in milliseconds, keyed ``p50`` etc.

    Examples
    --------
    >>> percentiles([0.001, 0.002, 0.003, 0.004], qs=(50,))
    {'p50': 2.5}
    """
    if not len(samples):
        return {f"p{q:g}": float("nan") for q in qs}
    values = np.percentile(np.asarray(samples, dtype=np.float64) * 1000.0, qs)
    return {f"p{q:g}": round(float(v), 3) for q, v in zip(qs, values, strict=True)}


@dataclass
class ReplayResult:
    """What a live replay measured."""

    model: str
    k: int
    events: int
    scored: int
    hits: int
    ndcg_sum: float
    served_fallback: int
    publish_seconds: float
    total_seconds: float
    offered_rate: float | None
    freshness_ms: dict[str, float]
    freshness_mean_ms: float
    freshness_samples: int
    worker_stats: dict[str, float]
    offline: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    per_event: dict[str, list[int]] = field(default_factory=dict, repr=False)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.scored if self.scored else float("nan")

    @property
    def live_batch_size(self) -> int:
        """Mean events per live micro-batch."""
        stats = self.worker_stats
        return max(1, round(stats.get("events_received", 0) / max(stats.get("batches", 1), 1)))

    @property
    def equivalent_label_delay(self) -> int:
        """Offline label delay (in events) that makes lists lag as they did live.

        Live, an event shows in its user's list after the freshness delay,
        i.e. after ``rate x freshness`` further events. Offline with batches of
        ``B`` events and a label delay of ``D`` events it shows after
        ``D + B / 2`` further events on average. So ``D = rate x freshness - B / 2``.
        """
        rate = self.events / self.publish_seconds if self.publish_seconds else 0.0
        return max(0, round(rate * self.freshness_mean_ms / 1000.0 - self.live_batch_size / 2))

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.scored if self.scored else float("nan")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("per_event")
        doc["hit_rate"] = self.hit_rate
        doc["ndcg"] = self.ndcg
        doc["live_batch_size"] = self.live_batch_size
        doc["equivalent_label_delay"] = self.equivalent_label_delay
        doc["events_per_second"] = self.events / self.total_seconds if self.total_seconds else None
        return doc

    def markdown(self) -> str:
        f = self.freshness_ms
        lines = [
            f"| model | events | HR@{self.k} live | NDCG@{self.k} live | HR@{self.k} offline | freshness p50 / p95 / p99 (ms) | events/s |",
            "|---|---|---|---|---|---|---|",
            f"| {self.model} | {self.events:,} | {self.hit_rate:.4f} | {self.ndcg:.4f} | "
            f"{self.offline['hit_rate']:.4f} | {f['p50']:.1f} / {f['p95']:.1f} / {f['p99']:.1f} | "
            f"{self.events / self.total_seconds:,.0f} |"
            if self.offline
            else f"| {self.model} | {self.events:,} | {self.hit_rate:.4f} | {self.ndcg:.4f} | - | "
            f"{f['p50']:.1f} / {f['p95']:.1f} / {f['p99']:.1f} | {self.events / self.total_seconds:,.0f} |",
        ]
        return "\n".join(lines) + "\n"


def _pace(start: float, n: int, ts: float, ts0: float, rate: float | None, speed: float | None) -> None:
    if rate is not None:
        due = start + n / rate
    elif speed is not None:
        due = start + (ts - ts0) / speed
    else:
        return
    wait = due - time.perf_counter()
    if wait > 0.0005:
        time.sleep(wait)


def run_replay(
    settings: Settings,
    events: Sequence[Event],
    model: str | None = None,
    k: int = 10,
    rate: float | None = 2000.0,
    speed: float | None = None,
    warmup: float = 0.0,
    timeout: float = 900.0,
    progress: bool = True,
    log_path: Path | None = None,
) -> ReplayResult:
    """Publish ``events`` (catalogue first, then in time order) through the live worker and score it.

    ``rate`` paces at a fixed events/s; ``speed`` replays at real time x speed;
    both ``None`` publishes as fast as possible. Events in the first
    ``warmup`` fraction are published but not scored.
    """
    model = model or settings.default_model
    if model not in settings.models:
        raise ValueError(f"model {model!r} is not among the worker's models {settings.models}")
    catalogue = [e for e in events if isinstance(e, ItemUpdate)]
    acts = sorted((e for e in events if isinstance(e, Interaction | Rating)), key=lambda e: e.timestamp)
    settings = replace(settings, freshness_cap=max(settings.freshness_cap, len(events) + 1000))
    reset_state(settings)
    ensure_topics(settings)
    worker = WorkerProcess(settings, log_path or settings.state_dir / "replay-worker.log")
    worker.start()
    client = RecsClient(settings.redis_url or "", settings.key_prefix, **settings.redis_kwargs())
    key_of = client.layout.user_key
    fallback_key = client.layout.fallback_key()
    first_scored = int(len(acts) * warmup)
    hits = scored = served_fallback = 0
    ndcg_sum = 0.0
    hit_flags: list[int] = []
    fallback_flags: list[int] = []
    try:
        with EventPublisher(settings) as publisher:
            if catalogue:
                publisher.publish(catalogue, progress=False)
                worker.wait_processed(len(catalogue), timeout)
            start = time.perf_counter()
            ts0 = acts[0].timestamp if acts else 0.0
            for n, event in enumerate(tqdm(acts, unit="ev", desc="replayed", disable=not progress, mininterval=0.5)):
                _pace(start, n, event.timestamp, ts0, rate, speed)
                if n >= first_scored:
                    raw, fallback = client.redis.mget([key_of(event.user_id, model), fallback_key])
                    doc = raw if raw is not None else fallback
                    items = json.loads(doc)["items"][:k] if doc is not None else []
                    served_fallback += raw is None
                    scored += 1
                    hit = event.item_id in items
                    hit_flags.append(int(hit))
                    fallback_flags.append(int(raw is None))
                    if hit:
                        hits += 1
                        ndcg_sum += 1.0 / np.log2(items.index(event.item_id) + 2)
                publisher.send(event)
            publisher.flush()
            publish_seconds = time.perf_counter() - start
        stats = worker.wait_processed(len(catalogue) + len(acts), timeout)
        total_seconds = time.perf_counter() - start
        freshness = client.freshness()[-len(acts) :] if acts else []
    finally:
        worker.stop()
        client.close()
    offered = rate if rate is not None else None
    return ReplayResult(
        model=model,
        k=k,
        events=len(acts),
        scored=scored,
        hits=hits,
        ndcg_sum=ndcg_sum,
        served_fallback=served_fallback,
        publish_seconds=publish_seconds,
        total_seconds=total_seconds,
        offered_rate=offered,
        freshness_ms=percentiles(freshness),
        freshness_mean_ms=float(np.mean(freshness) * 1000.0) if len(freshness) else float("nan"),
        freshness_samples=len(freshness),
        worker_stats=stats,
        per_event={"hit": hit_flags, "fallback": fallback_flags},
        config={
            "rate": rate,
            "speed": speed,
            "warmup": warmup,
            "batch_size": settings.batch_size,
            "batch_within": settings.batch_within,
            "models": list(settings.models),
        },
    )


def compare_offline(
    events: Sequence[Event], model: str, k: int, batch_size: int, label_delay: int = 0, warmup: float = 0.0
) -> dict[str, Any]:
    """The offline backtest of the same log, serving what the live system serves.

    Lists are cached per user as the worker writes them; users without one get
    the fallback. ``batch_size`` (the live mean micro-batch) and
    ``label_delay`` (events that pass before an event is learned, i.e. the
    live processing delay) make the offline lists lag as the live ones did.
    """
    import models as model_registry
    from streamrec.backtest.prequential import Prequential
    from streamrec.backtest.sources import EventLog

    served = ServedLists(model_registry.create(model), cached=True)  # lists as Redis holds them
    harness = Prequential({model: served}, ks=(k,), batch_size=max(1, batch_size), label_delay=max(0, label_delay),
                          warmup=warmup, memory="off")  # fmt: skip
    figures = harness.run(EventLog.from_events(events)).to_dict()["models"][model]["overall"]
    return {
        "batch_size": batch_size,
        "label_delay": label_delay,
        "hit_rate": figures[f"HR@{k}"],
        "ndcg": figures[f"NDCG@{k}"],
        "figures": figures,
    }


def write_report(result: ReplayResult, out: Path) -> None:
    """``replay.json`` with every figure and ``replay.md`` with the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(result.to_dict(), indent=2, default=float))
    (out / "replay.md").write_text(result.markdown())
