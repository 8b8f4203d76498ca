"""The agent: micro-batches of events in, fresh top-N lists out."""

from __future__ import annotations

from typing import Any

from stream_app.app import app, settings
from stream_app.commits import commit_only_after_checkpoints
from stream_app.topics import KIND_BY_TOPIC, USER_TOPICS, deadletter_topic, events_topic
from stream_app.worker import StreamWorker
from streamrec.health_server import HealthServer


def _highwaters(consumer):  # type: ignore[no-untyped-def]
    """Highwater offset of each assigned partition, as the consumer last fetched it (lag)."""

    def read() -> dict[tuple[str, int], int | None]:
        try:
            return {(tp.topic, tp.partition): consumer.highwater(tp) for tp in consumer.assignment()}
        except Exception:  # not started yet, or between rebalances
            return {}

    return read


_workers: list[StreamWorker] = []  # the agent's worker, for the rebalance callbacks
_assigned: set[int] = set()  # the newest assignment, for a worker that starts after it


def _partitions(tps: Any) -> set[int]:
    return {tp.partition for tp in tps if tp.topic in USER_TOPICS}


@app.on_partitions_revoked.connect
async def on_partitions_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """Commit what was learned before the partitions move (Faust has stopped the agent's stream)."""
    for worker in _workers:
        await worker.partitions_revoked(_partitions(revoked))


_faust_revoked = app._on_partitions_revoked


async def _revoked_while_stopping(revoked: Any) -> None:
    """A rebalance during a clean stop: commit now, while the partitions are still this worker's.

    Faust sends no revocation signal once the app is stopping: it closes its
    consumer and lets the group go on, so another worker may restore these
    partitions before the agent's final commit. That commit would then hand
    over state the new owner never reads, and offsets it already replays
    from: events learned twice. Committing here, before this member rejoins,
    and never again afterwards, keeps the hand-over exact.
    """
    if app.should_stop:
        for worker in _workers:
            await worker.partitions_lost_while_stopping(_partitions(revoked))
    await _faust_revoked(revoked)


app._on_partitions_revoked = _revoked_while_stopping  # type: ignore[method-assign]  # the consumer is made later


@app.on_before_shutdown.connect
async def on_before_shutdown(sender: Any, **kwargs: Any) -> None:
    """The final commit, while the partitions are still this worker's (see ``StreamWorker.drain``)."""
    for worker in list(_workers):
        await worker.drain()


@app.on_partitions_assigned.connect
async def on_partitions_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    """Restore the users of partitions new to this worker before their events are processed."""
    _assigned.clear()
    _assigned.update(_partitions(assigned))
    for worker in _workers:
        await worker.partitions_assigned(set(_assigned))


def _new_worker() -> StreamWorker:
    consumer = app.consumer
    commit = commit_only_after_checkpoints(consumer) if settings.checkpoint_interval > 0 else consumer.commit
    return StreamWorker(settings, KIND_BY_TOPIC, deadletter_topic, commit=commit, highwaters=_highwaters(consumer))


_prepared: list[StreamWorker] = []  # a worker whose state was bootstrapped before the consumer joined the group
_faust_on_start = app.on_start


async def _bootstrap_then_join() -> None:
    """Bootstrap the worker (item state from the snapshot and the updates after it) before the group is joined.

    The app starts its consumer, which joins the consumer group, after
    ``on_start``. Bootstrapping in the agent instead held the partitions the
    group gave a new worker idle for as long as the bootstrap took (seconds
    on a busy machine, at every scale-out and restart).
    """
    await _faust_on_start()
    worker = _new_worker()
    await worker.start()
    _prepared.append(worker)
    _workers.append(worker)


app.on_start = _bootstrap_then_join  # type: ignore[method-assign]


@app.agent(events_topic, concurrency=1)
async def process_events(stream):  # type: ignore[no-untyped-def]
    """Take micro-batches (``stream.take_events``), update the models, write lists to Redis.

    Events are acknowledged (and their offsets become committable) only after
    their batch has been handled. With ``STREAMREC_METRICS_PORT`` set, the
    worker also serves ``/metrics``, ``/healthz`` and ``/readyz``.
    """
    if _prepared:
        worker = _prepared.pop()
    else:  # the agent restarted after a crash: a fresh worker from what Kafka holds
        worker = _new_worker()
        await worker.start()
        _workers.append(worker)
    server = None
    try:
        if settings.metrics_port is not None:
            server = HealthServer(
                worker.metrics, worker.state, settings.metrics_host, settings.metrics_port, alive=worker.alive
            )
            await server.start()
        if _assigned:
            await worker.partitions_assigned(set(_assigned))
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            await worker.handle(events)
    finally:
        _workers.remove(worker)
        await worker.stop()
        if server is not None:
            await server.stop()
