"""``streamrec status``: how the running worker is doing, read from Kafka and Redis.

Nothing here talks to the worker itself (it may run elsewhere, or several may
run): consumer lag comes from the topics' end offsets in Kafka compared with
the next offsets the worker reports in ``{prefix}:offsets`` (live) and with the
consumer group's committed offsets (which follow checkpoints); counters come
from ``{prefix}:stats`` and freshness percentiles from the samples in
``{prefix}:freshness``.

Examples
--------
>>> percentiles([0.010, 0.020, 0.030, 0.040, 1.0])
{'samples': 5, 'p50_ms': 30.0, 'p95_ms': 808.0, 'p99_ms': 961.6}
>>> PartitionLag("streamrec.ratings", 0, end=1500, processed=1200, committed=1000).lag
300
>>> PartitionLag("streamrec.items", 0, end=80, processed=None, committed=50).lag  # no event handled yet
30
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from streamrec.live_quality import summarise
from streamrec.settings import Settings
from streamrec.store import RecsClient

__all__ = [
    "PartitionLag",
    "Status",
    "collect_status",
    "committed_offsets",
    "format_status",
    "percentiles",
    "wait_committed",
]

CONSUMED_KINDS = ("interactions", "ratings", "items", "forget", "exclusions", "exposures")
#: The windows of live quality ``streamrec status`` shows: (label, minutes; None for everything so far).
QUALITY_WINDOWS: tuple[tuple[str, int | None], ...] = (("5m", 5), ("1h", 60), ("1d", 1440), ("all", None))


@dataclass(frozen=True)
class PartitionLag:
    """One partition: its end offset, the worker's next offset, and the group's committed offset."""

    topic: str
    partition: int
    end: int
    processed: int | None
    committed: int | None

    @property
    def lag(self) -> int:
        """Messages not yet processed.

        Until the worker has handled an event of this partition it reports no
        offset for it; it then stands at the committed offset (or the start).
        """
        position = self.processed if self.processed is not None else (self.committed or 0)
        return max(0, self.end - position)

    @property
    def committed_lag(self) -> int:
        """Messages after the committed offset (all of them when nothing is committed)."""
        return max(0, self.end - (self.committed or 0))


@dataclass(frozen=True)
class Status:
    """Everything ``streamrec status`` shows."""

    app_id: str
    partitions: list[PartitionLag]
    counters: dict[str, float]
    freshness: dict[str, float]
    meta: dict[str, str] = field(default_factory=dict)
    #: live quality counts of every worker per window (``5m``, ``1h``, ``1d``, ``all``), see :mod:`streamrec.live_quality`
    quality: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "app_id": self.app_id,
            "partitions": [{**asdict(p), "lag": p.lag, "committed_lag": p.committed_lag} for p in self.partitions],
            "total_lag": self.total_lag,
            "counters": self.counters,
            "freshness": self.freshness,
            "meta": self.meta,
            "live_quality": {window: summarise(counts, _ks(counts)) for window, counts in self.quality.items()},
        }


def percentiles(samples: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """Freshness percentiles in milliseconds (linear interpolation), with the sample count."""
    out: dict[str, float] = {"samples": len(samples)}
    if len(samples):
        values = np.percentile(np.asarray(samples, dtype=np.float64) * 1000.0, qs)
        out.update({f"p{q}_ms": round(float(v), 1) for q, v in zip(qs, values, strict=True)})
    return out


def _kafka_offsets(settings: Settings) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """End offsets of the consumed topics' partitions, and the consumer group's committed offsets.

    The consumer names the worker's group only to fetch its committed offsets;
    it subscribes to nothing, so it never joins the group.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        client_id="streamrec-status", group_id=settings.app_id, enable_auto_commit=False, **settings.kafka_config()
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (settings.topic(kind) for kind in CONSUMED_KINDS)
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = {(tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(partitions).items()}
        committed = {}
        for tp in partitions:
            offset = consumer.committed(tp)
            if offset is not None and offset >= 0:
                committed[(tp.topic, tp.partition)] = int(offset)
    finally:
        consumer.close()
    return ends, committed


def committed_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """The consumer group's committed offset of every partition of ``topic`` (0 where none)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        client_id="streamrec-status", group_id=settings.app_id, enable_auto_commit=False, **settings.kafka_config()
    )
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in sorted(parts)}
    finally:
        consumer.close()


def wait_committed(settings: Settings, topic: str, wanted: dict[int, int], timeout: float) -> None:
    """Wait until the group's committed offsets of ``topic`` (committed with the state) reach ``wanted``.

    Raises :class:`TimeoutError` saying where they stand when ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    done: dict[int, int] = {}
    while time.monotonic() < deadline:
        done = committed_offsets(settings, topic)
        if all(done.get(p, 0) >= o for p, o in wanted.items()):
            return
        time.sleep(0.3)
    raise TimeoutError(f"committed offsets of {topic} did not reach {wanted} in {timeout} s: {done}")


def collect_status(settings: Settings) -> Status:
    """Read lag, counters and freshness of the worker configured by ``settings``."""
    ends, committed = _kafka_offsets(settings)
    client = RecsClient(settings.redis_url or "", settings.key_prefix, **settings.redis_kwargs())
    try:
        processed = client.offsets()
        counters = client.stats()
        freshness = percentiles(client.freshness())
        meta = client.meta()
        quality = client.quality_windows(dict(QUALITY_WINDOWS))
    finally:
        client.close()
    partitions = [
        PartitionLag(topic, partition, end, processed.get((topic, partition)), committed.get((topic, partition)))
        for (topic, partition), end in sorted(ends.items())
    ]
    return Status(settings.app_id, partitions, counters, freshness, meta, quality)


def _ks(counts: dict[str, float]) -> list[int]:
    """The HR@K cut-offs present in live quality counts."""
    return sorted({int(name.rsplit("hit@", 1)[1]) for name in counts if "|hit@" in name})


def format_quality(windows: dict[str, dict[str, float]]) -> list[str]:
    """Lines of the live quality table: per list (model or variant), HR@K and MRR in each window."""
    if not any(windows.values()):
        return ["live quality: nothing scored yet"]
    ks = _ks(windows.get("all") or next(c for c in windows.values() if c))
    k = ks[0] if ks else 10
    summaries = {label: summarise(counts, ks) for label, counts in windows.items()}
    lists = sorted({name for s in summaries.values() for name in s}, key=lambda n: (n.startswith("exp:"), n))
    lines = [f"live quality (every event against the list last served to its user): HR@{k} / MRR, events scored"]
    lines.append(f"  {'list':<22}" + "".join(f" {label:>24}" for label in summaries))
    for name in lists:
        cells = []
        for summary in summaries.values():
            figures = summary.get(name, {}).get("all")
            cells.append(
                f"{figures[f'HR@{k}']:.4f} / {figures['MRR']:.4f} ({figures['scored']:,.0f})" if figures else "-"
            )
        lines.append(f"  {name:<22}" + "".join(f" {cell:>24}" for cell in cells))
    return lines


def format_status(status: Status, now: float | None = None) -> str:
    """The status as a few lines of text for a terminal."""
    now = time.time() if now is None else now
    c, meta = status.counters, status.meta
    lines = []
    if meta:
        since = f", last wrote {now - float(meta['updated_at']):.1f} s ago" if "updated_at" in meta else ""
        lines.append(
            f"worker {status.app_id}: models {meta.get('models', '?')} (default {meta.get('default_model', '?')}){since}"
        )
    else:
        lines.append(f"worker {status.app_id}: has written nothing to Redis yet")
    lines.append(
        f"events: {c.get('events_received', 0):,.0f} received, {c.get('events_accepted', 0):,.0f} accepted, "
        f"{c.get('events_deadlettered', 0):,.0f} dead-lettered, {c.get('events_duplicate', 0):,.0f} duplicates; "
        f"{c.get('batches', 0):,.0f} batches "
        f"({c.get('batches_failed', 0):,.0f} failed); Redis write errors {c.get('redis_errors', 0):,.0f}"
    )
    lines.append(
        f"model time: learn {c.get('learn_seconds', 0):.1f} s, recommend {c.get('recommend_seconds', 0):.1f} s; "
        f"checkpoints {c.get('checkpoints', 0):,.0f}"
    )
    if "items_held" in c:
        lines.append(f"catalogue: the models hold {c['items_held']:,.0f} items")
    f = status.freshness
    if f.get("samples"):
        lines.append(
            f"freshness (last {f['samples']:,.0f} events, Kafka -> Redis): "
            f"p50 {f['p50_ms']:.0f} ms, p95 {f['p95_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms"
        )
    else:
        lines.append("freshness: no samples yet")
    if status.quality:
        lines.extend(format_quality(status.quality))
    lines.append(f"consumer lag: {status.total_lag:,} messages (group {status.app_id}; c. = committed)")
    header = f"  {'topic':<32} {'part':>4} {'end':>10} {'processed':>10} {'lag':>8} {'committed':>10} {'c. lag':>8}"
    lines.append(header)
    for p in status.partitions:
        processed = "-" if p.processed is None else f"{p.processed:,}"
        committed = "-" if p.committed is None else f"{p.committed:,}"
        lines.append(
            f"  {p.topic:<32} {p.partition:>4} {p.end:>10,} {processed:>10} {p.lag:>8,} {committed:>10} {p.committed_lag:>8,}"
        )
    return "\n".join(lines)
