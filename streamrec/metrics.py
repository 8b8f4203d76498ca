"""The worker's Prometheus metrics (``prometheus_client``), one registry per worker.

:class:`WorkerMetrics` holds every metric the worker exports; the worker calls
its small ``observe_*`` methods where things happen, and the gauges that
describe a state (consumer lag, lists waiting for Redis, checkpoint age) are
set from a :class:`WorkerState` snapshot when Prometheus scrapes
(:meth:`WorkerMetrics.update`). :mod:`streamrec.health_server` serves them.

=================================================  =========  =======================================
metric                                             type       labels
=================================================  =========  =======================================
``streamrec_events_total``                         counter    ``outcome``: received, accepted,
                                                              deadlettered, skipped (already learned)
``streamrec_batches_total``                        counter    ``outcome``: ok, failed
``streamrec_batch_events``                         histogram  events per micro-batch
``streamrec_batch_duration_seconds``               histogram  handling one micro-batch, end to end
``streamrec_model_seconds``                        histogram  ``model``, ``phase`` (learn, recommend)
``streamrec_freshness_seconds``                    histogram  event reaching Kafka -> its list in Redis
``streamrec_lists_written_total``                  counter    lists written to Redis
``streamrec_redis_write_errors_total``             counter
``streamrec_pending_lists``                        gauge      lists waiting for Redis to answer
``streamrec_consumer_lag``                         gauge      ``topic``, ``partition``: highwater -
                                                              next offset to process
``streamrec_checkpoint_age_seconds``               gauge      since the last checkpoint (or start)
``streamrec_checkpoint_duration_seconds``          histogram
``streamrec_up``                                   gauge      1 while the agent runs
=================================================  =========  =======================================

Examples
--------
>>> from prometheus_client import generate_latest
>>> metrics = WorkerMetrics(models=["itemknn"])
>>> metrics.observe_batch(received=3, accepted=2, seconds=0.01, learn_seconds=0.002, recommend_seconds=0.004)
>>> metrics.observe_written(lists=2, freshness=[0.05, 0.2])
>>> metrics.update(WorkerState(started=True, lag={("streamrec.ratings", 0): 40}))
>>> text = generate_latest(metrics.registry).decode()
>>> 'streamrec_events_total{outcome="accepted"} 2.0' in text
True
>>> 'streamrec_consumer_lag{partition="0",topic="streamrec.ratings"} 40.0' in text
True
>>> 'streamrec_freshness_seconds_count 2.0' in text
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics", "WorkerState"]

BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class WorkerState:
    """What the worker looks like right now (for gauges and the readiness check)."""

    started: bool = False
    pending_lists: int = 0
    checkpoint_age: float | None = None
    lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    redis_ok: bool = True
    assigned: int = 0


class WorkerMetrics:
    """Every metric of one worker, in a registry of its own (tests create as many as they like).

    Parameters
    ----------
    models
        Names of the configured models (the ``model`` label of model timings).
    registry
        Where the metrics are registered; a new one by default.
    """

    def __init__(self, models: Sequence[str] = (), registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.models = tuple(models)
        self.events = Counter("streamrec_events", "Events by outcome", ["outcome"], registry=r)
        self.batches = Counter("streamrec_batches", "Micro-batches handled, by outcome", ["outcome"], registry=r)
        self.batch_events = Histogram(
            "streamrec_batch_events", "Events per micro-batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "streamrec_batch_duration_seconds",
            "Seconds to handle one micro-batch (decode, learn, recommend, write)",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "streamrec_model_seconds",
            "Seconds per micro-batch in the models, by model and phase (model='all': every model together)",
            ["model", "phase"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.freshness = Histogram(
            "streamrec_freshness_seconds",
            "Seconds from an event reaching Kafka to its user's list being written to Redis",
            buckets=FRESHNESS_BUCKETS,
            registry=r,
        )
        self.lists_written = Counter("streamrec_lists_written", "Lists written to Redis", registry=r)
        self.redis_errors = Counter("streamrec_redis_write_errors", "Failed Redis pipeline writes", registry=r)
        self.pending = Gauge("streamrec_pending_lists", "Lists waiting for Redis to answer", registry=r)
        self.lag = Gauge(
            "streamrec_consumer_lag",
            "Messages in the partition not yet processed (highwater - next offset to process)",
            ["topic", "partition"],
            registry=r,
        )
        self.checkpoint_age = Gauge(
            "streamrec_checkpoint_age_seconds", "Seconds since the last checkpoint (or since start)", registry=r
        )
        self.checkpoint_seconds = Histogram(
            "streamrec_checkpoint_duration_seconds",
            "Seconds to write a checkpoint",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.up = Gauge("streamrec_up", "1 while the worker's agent runs", registry=r)
        self.live_scored = Counter(
            "streamrec_live_scored",
            "Events scored against the list last served to their user, by list (model or variant) and history",
            ["list", "history"],
            registry=r,
        )
        self.live_hits = Counter(
            "streamrec_live_hits",
            "Scored events whose item was in the first k items of the list last served",
            ["list", "history", "k"],
            registry=r,
        )
        self.live_rr = Counter(
            "streamrec_live_reciprocal_rank",
            "Sum of 1/(rank+1) of scored events' items in the list last served (MRR = this / scored)",
            ["list", "history"],
            registry=r,
        )
        self.live_unknown = Counter(
            "streamrec_live_unknown", "Events not scored: the user's lists are not held by this worker", ["list"],
            registry=r,
        )  # fmt: skip
        self.exposures = Counter(
            "streamrec_exposures",
            "Exposures recorded by applications, and those followed by a click or a purchase of a shown item",
            ["variant", "outcome"],
            registry=r,
        )
        self.interleaving_wins = Counter(
            "streamrec_interleaving_wins",
            "Events on an interleaved list's item, credited to the model that contributed it",
            ["variant", "model"],
            registry=r,
        )
        for outcome in ("received", "accepted", "deadlettered", "skipped"):
            self.events.labels(outcome)  # present (at 0) from the first scrape
        for outcome in ("ok", "failed"):
            self.batches.labels(outcome)
        self._lag_labels: set[tuple[str, str]] = set()

    def observe_batch(
        self,
        received: int,
        accepted: int,
        seconds: float,
        learn_seconds: float = 0.0,
        recommend_seconds: float = 0.0,
        skipped: int = 0,
        failed: bool = False,
    ) -> None:
        """One micro-batch handled: ``received`` events, of which ``accepted`` reached the models."""
        self.events.labels("received").inc(received)
        self.events.labels("accepted").inc(accepted)
        if skipped:
            self.events.labels("skipped").inc(skipped)
        self.batches.labels("failed" if failed else "ok").inc()
        self.batch_events.observe(received)
        self.batch_seconds.observe(seconds)
        if accepted and not failed:
            self.model_seconds.labels("all", "learn").observe(learn_seconds)
            self.model_seconds.labels("all", "recommend").observe(recommend_seconds)

    def observe_model(self, model: str, learn_seconds: float, recommend_seconds: float) -> None:
        """Seconds one model spent on a micro-batch."""
        self.model_seconds.labels(model, "learn").observe(learn_seconds)
        self.model_seconds.labels(model, "recommend").observe(recommend_seconds)

    def observe_quality(self, counts: Mapping[str, float]) -> None:
        """Add a batch's live quality counts (``"list|history|field"``, :mod:`streamrec.live_quality`)."""
        for name, value in counts.items():
            try:
                list_name, history, what = name.split("|")
            except ValueError:
                continue
            if what == "scored":
                self.live_scored.labels(list_name, history).inc(value)
            elif what.startswith("hit@"):
                self.live_hits.labels(list_name, history, what[4:]).inc(value)
            elif what == "rr":
                self.live_rr.labels(list_name, history).inc(value)
            elif what == "unknown":
                self.live_unknown.labels(list_name).inc(value)
            elif what.startswith("win:"):
                self.interleaving_wins.labels(list_name.removeprefix("exp:"), what[4:]).inc(value)
            elif list_name.startswith("shown:") and what in ("exposures", "clicked", "converted"):
                self.exposures.labels(list_name.removeprefix("shown:"), what).inc(value)

    def observe_deadlettered(self, n: int = 1) -> None:
        self.events.labels("deadlettered").inc(n)

    def observe_written(self, lists: int, freshness: Iterable[float]) -> None:
        """A Redis write succeeded: ``lists`` documents and the freshness of the events they carry."""
        self.lists_written.inc(lists)
        for seconds in freshness:
            self.freshness.observe(seconds)

    def observe_redis_error(self) -> None:
        self.redis_errors.inc()

    def observe_checkpoint(self, seconds: float) -> None:
        self.checkpoint_seconds.observe(seconds)

    def update(self, state: WorkerState) -> None:
        """Set the gauges from ``state`` (called when Prometheus scrapes)."""
        self.up.set(1 if state.started else 0)
        self.pending.set(state.pending_lists)
        if state.checkpoint_age is not None:
            self.checkpoint_age.set(state.checkpoint_age)
        labels = {(topic, str(partition)) for topic, partition in state.lag}
        for gone in self._lag_labels - labels:  # partitions revoked in a rebalance
            self.lag.remove(*gone)
        for (topic, partition), lag in state.lag.items():
            self.lag.labels(topic, str(partition)).set(lag)
        self._lag_labels = labels
