"""The agent: micro-batches of events in, fresh top-N lists out."""

from __future__ import annotations

from stream_app.app import app, settings
from stream_app.commits import commit_only_after_checkpoints
from stream_app.topics import KIND_BY_TOPIC, deadletter_topic, events_topic
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


@app.agent(events_topic, concurrency=1)
async def process_events(stream):  # type: ignore[no-untyped-def]
    """Take micro-batches (``stream.take_events``), update the models, write lists to Redis.

    Events are acknowledged (and their offsets become committable) only after
    their batch has been handled. With ``STREAMREC_METRICS_PORT`` set, the
    worker also serves ``/metrics``, ``/healthz`` and ``/readyz``.
    """
    consumer = app.consumer
    commit = commit_only_after_checkpoints(consumer) if settings.checkpoint_interval > 0 else consumer.commit
    worker = StreamWorker(settings, KIND_BY_TOPIC, deadletter_topic, commit=commit, highwaters=_highwaters(consumer))
    server = None
    if settings.metrics_port is not None:
        server = HealthServer(
            worker.metrics, worker.state, settings.metrics_host, settings.metrics_port, alive=worker.alive
        )
        await server.start()
    await worker.start()
    try:
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within):
            await worker.handle(events)
    finally:
        await worker.stop()
        if server is not None:
            await server.stop()
