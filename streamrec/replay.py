"""Live backtest through the real path: a log published to Kafka while the worker runs.

For every event, just before publishing it, the replay reads what Redis held
for that user (the user's list, else the global fallback: what an application
would have shown) and scores the event against it; afterwards it reads the
worker's freshness samples (event reached Kafka -> its user's list written).

The offline backtest of the same log scores the same thing when its model
serves the popularity fallback to users without history and caches lists as
the worker writes them (see :class:`ServedLists`), and when its lists lag as
the live ones did: :func:`compare_offline` replays the log in event time with
each event stamped with the moment it was published and a freshness equal to
the mean freshness measured live. The two hit-rates can then be compared.
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
from streamrec.live_quality import summarise
from streamrec.served import ServedLists
from streamrec.settings import Settings, repeats_mode
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
    #: the worker's own live quality of ``model`` (:mod:`streamrec.live_quality`), every event, no warm-up
    live_quality: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    per_event: dict[str, list[int]] = field(default_factory=dict, repr=False)
    #: when each interaction or rating was handed to the producer (epoch seconds), in log order
    publish_times: list[float] = field(default_factory=list, repr=False)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.scored if self.scored else float("nan")

    @property
    def live_batch_size(self) -> int:
        """Mean events per live micro-batch."""
        stats = self.worker_stats
        return max(1, round(stats.get("events_received", 0) / max(stats.get("batches", 1), 1)))

    @property
    def offline_freshness_s(self) -> float:
        """The freshness the offline twin replays with: the mean measured live, in seconds."""
        return self.freshness_mean_ms / 1000.0 if np.isfinite(self.freshness_mean_ms) else 0.0

    @property
    def ndcg(self) -> float:
        return self.ndcg_sum / self.scored if self.scored else float("nan")

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc.pop("per_event")
        doc.pop("publish_times")
        doc["hit_rate"] = self.hit_rate
        doc["ndcg"] = self.ndcg
        doc["live_batch_size"] = self.live_batch_size
        doc["offline_freshness_s"] = self.offline_freshness_s
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
        q = self.live_quality
        if q is not None and f"HR@{self.k}" in q:
            lines.append(
                f"\nThe worker's own live evaluation (every event against the list it last wrote, before learning "
                f"it; {q['scored']:,.0f} events, no warm-up): HR@{self.k} {q[f'HR@{self.k}']:.4f}, MRR {q['MRR']:.4f}"
                + (
                    f"; offline, lists as written lagging one micro-batch ({q['offline_at_one_batch']['freshness_s'] * 1000:.0f} ms"
                    f" on the live clock): HR@{self.k} {q['offline_at_one_batch']['hit_rate']:.4f}."
                    if "offline_at_one_batch" in q
                    else "."
                )
            )
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
    key_of, fallback_of = client.layout.user_key, client.layout.fallback_key
    first_scored = int(len(acts) * warmup)
    hits = scored = served_fallback = 0
    ndcg_sum = 0.0
    hit_flags: list[int] = []
    fallback_flags: list[int] = []
    publish_times: list[float] = []
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
                    raw, fallback = client.redis.mget([key_of(event.user_id, model), fallback_of(event.user_id)])
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
                publish_times.append(time.time())
                publisher.send(event)
            publisher.flush()
            publish_seconds = time.perf_counter() - start
        stats = worker.wait_processed(len(catalogue) + len(acts), timeout)
        total_seconds = time.perf_counter() - start
        freshness = client.freshness()[-len(acts) :] if acts else []
        quality = summarise(client.quality(), settings.live_ks).get(model, {}).get("all") if settings.live_ks else None
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
        live_quality=quality,
        per_event={"hit": hit_flags, "fallback": fallback_flags},
        publish_times=publish_times,
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
    events: Sequence[Event],
    model: str,
    k: int,
    publish_times: Sequence[float],
    freshness: float,
    warmup: float = 0.0,
    learn_batch: int = 1000,
    fallback: str = "adaptive_popularity",
    repeats: bool | str = "off",
) -> dict[str, Any]:
    """The offline backtest of the same log, serving what the live system served.

    The interactions and ratings of ``events`` (in time order, as published)
    are stamped with ``publish_times`` (when each reached the producer), so
    event time is the live run's clock, and replayed at ``freshness`` seconds
    (the live mean): a list reflects the events published at least that long
    before. Lists are cached per user as the worker writes them, after the
    user's latest learned event; users without one get the fallback
    (``fallback`` and ``repeats``: the worker's ``STREAMREC_FALLBACK`` and ``STREAMREC_REPEATS``; the
    offline lists do not know what was bought, so ``"unbought"`` is replayed as ``"on"``).
    """
    import models as model_registry
    from streamrec.backtest.prequential import Prequential
    from streamrec.backtest.sources import EventLog

    exclude_seen = repeats_mode(repeats) == "off"
    catalogue = [e for e in events if isinstance(e, ItemUpdate)]
    acts = [e for e in events if isinstance(e, Interaction | Rating)]
    if len(acts) != len(publish_times):
        raise ValueError(f"{len(acts)} interactions and ratings but {len(publish_times)} publish times")
    first = publish_times[0] if publish_times else 0.0
    stamped = [replace(e, timestamp=first - 1.0) for e in catalogue]  # published and processed first
    stamped += [replace(e, timestamp=float(t)) for e, t in zip(acts, publish_times, strict=True)]
    # lists as Redis holds them
    served = ServedLists(
        model_registry.create(model), model_registry.create(fallback), cached=True, exclude_seen=exclude_seen
    )
    harness = Prequential(
        {model: served},
        ks=(k,),
        freshness=max(0.0, freshness),
        learn_batch=learn_batch,
        warmup=warmup,
        memory="off",
        exclude_seen=exclude_seen,
    )
    figures = harness.run(EventLog.from_events(stamped)).to_dict()["models"][model]["overall"]
    return {
        "freshness_s": freshness,
        "learn_batch": learn_batch,
        "hit_rate": figures[f"HR@{k}"],
        "ndcg": figures[f"NDCG@{k}"],
        "figures": figures,
    }


def write_report(result: ReplayResult, out: Path) -> None:
    """``replay.json`` with every figure and ``replay.md`` with the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(result.to_dict(), indent=2, default=float))
    (out / "replay.md").write_text(result.markdown())
