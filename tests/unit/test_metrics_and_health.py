"""Worker metrics, the health endpoints and the status report, without services."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.health_server import HealthServer
from streamrec.metrics import WorkerMetrics, WorkerState
from streamrec.status import PartitionLag, Status, format_status


def samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_histograms_and_gauges_follow_the_worker() -> None:
    metrics = WorkerMetrics(["popularity", "itemknn"])
    metrics.observe_batch(received=10, accepted=8, seconds=0.02, learn_seconds=0.005, recommend_seconds=0.01, skipped=1)
    metrics.observe_batch(received=4, accepted=4, seconds=0.2, failed=True)
    metrics.observe_deadlettered(2)
    metrics.observe_written(lists=8, freshness=[0.03, 0.04, 0.3])
    metrics.observe_redis_error()
    metrics.observe_checkpoint(0.4)
    metrics.update(WorkerState(started=True, pending_lists=5, checkpoint_age=12.5, lag={("t", 0): 7, ("t", 1): 0}))
    got = samples(metrics)
    assert got[("streamrec_events_total", (("outcome", "received"),))] == 14
    assert got[("streamrec_events_total", (("outcome", "accepted"),))] == 12
    assert got[("streamrec_events_total", (("outcome", "deadlettered"),))] == 2
    assert got[("streamrec_events_total", (("outcome", "skipped"),))] == 1
    assert got[("streamrec_batches_total", (("outcome", "failed"),))] == 1
    assert got[("streamrec_batch_events_count", ())] == 2
    assert got[("streamrec_batch_duration_seconds_bucket", (("le", "0.025"),))] == 1
    assert got[("streamrec_model_seconds_count", (("model", "all"), ("phase", "learn")))] == 1  # failed batch: none
    assert got[("streamrec_freshness_seconds_bucket", (("le", "0.05"),))] == 2
    assert got[("streamrec_freshness_seconds_count", ())] == 3
    assert got[("streamrec_lists_written_total", ())] == 8
    assert got[("streamrec_redis_write_errors_total", ())] == 1
    assert got[("streamrec_pending_lists", ())] == 5
    assert got[("streamrec_checkpoint_age_seconds", ())] == 12.5
    assert got[("streamrec_consumer_lag", (("partition", "0"), ("topic", "t")))] == 7
    # a partition revoked in a rebalance leaves the lag gauge
    metrics.update(WorkerState(started=True, lag={("t", 1): 3}))
    got = samples(metrics)
    assert ("streamrec_consumer_lag", (("partition", "0"), ("topic", "t"))) not in got
    assert got[("streamrec_consumer_lag", (("partition", "1"), ("topic", "t")))] == 3


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_readiness_fails_with_reasons_until_the_worker_can_serve() -> None:
    state = {"value": WorkerState()}
    alive = {"value": True}

    async def scenario() -> list[tuple[int, str]]:
        server = HealthServer(WorkerMetrics(), lambda: state["value"], port=0, alive=lambda: alive["value"])
        await server.start()
        base = f"http://127.0.0.1:{server.port}"
        try:
            answers = [await asyncio.to_thread(_get, base + "/readyz")]
            state["value"] = WorkerState(started=True, assigned=2, redis_ok=False)
            answers.append(await asyncio.to_thread(_get, base + "/readyz"))
            state["value"] = WorkerState(started=True, assigned=2)
            answers.append(await asyncio.to_thread(_get, base + "/readyz"))
            answers.append(await asyncio.to_thread(_get, base + "/healthz"))
            alive["value"] = False
            answers.append(await asyncio.to_thread(_get, base + "/healthz"))
            answers.append(await asyncio.to_thread(_get, base + "/nothing-here"))
        finally:
            await server.stop()
        return answers

    (c1, b1), (c2, b2), (c3, _), (c4, _), (c5, b5), (c6, _) = asyncio.run(scenario())
    assert c1 == 503 and json.loads(b1)["checks"] == {
        "started": False,
        "partitions_assigned": False,
        "redis_writes": True,
    }
    assert c2 == 503 and json.loads(b2)["checks"]["redis_writes"] is False
    assert c3 == 200 and c4 == 200
    assert c5 == 503 and json.loads(b5)["checks"]["background_task"] is False
    assert c6 == 404


def test_status_report_names_lag_counters_and_freshness() -> None:
    status = Status(
        "streamrec",
        [PartitionLag("streamrec.ratings", 0, 1500, 1200, 1000), PartitionLag("streamrec.items", 0, 80, None, 80)],
        {"events_received": 1200, "events_accepted": 1190, "events_deadlettered": 10, "batches": 7},
        {"samples": 1190, "p50_ms": 61.0, "p95_ms": 120.0, "p99_ms": 180.0},
        {"models": "popularity,itemknn", "default_model": "itemknn", "updated_at": "100.0"},
    )
    text = format_status(status, now=102.5)
    assert "last wrote 2.5 s ago" in text
    assert "1,190 accepted, 10 dead-lettered" in text
    assert "p50 61 ms, p95 120 ms, p99 180 ms" in text
    assert "consumer lag: 300 messages" in text
    assert status.as_dict()["partitions"][0]["lag"] == 300
    assert json.dumps(status.as_dict())
