"""A running worker's /metrics, /healthz and /readyz, and ``streamrec status``, against real services."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from producers.publisher import EventPublisher
from streamrec.cli import main
from streamrec.events import Interaction
from streamrec.status import collect_status
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def _wait_for(url: str, worker: WorkerProcess, timeout: float = 90.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, body = _get(url)
        if code == 200:
            return code, body
        assert worker.alive(), worker.log_tail()
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s: {code} {body}\n{worker.log_tail()}")


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = _get(url)
    assert code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_health_and_status_of_a_running_worker(isolated_settings, tmp_path) -> None:
    port = _free_port()
    settings = replace(isolated_settings, metrics_port=port, checkpoint_interval=1.0)
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    base = f"http://127.0.0.1:{port}"
    good = [Interaction(f"u{n % 13}", f"i{(n * 5) % 101}", 100.0 + n, "view") for n in range(800)]
    try:
        assert _wait_for(base + "/healthz", worker)[0] == 200
        _, body = _wait_for(base + "/readyz", worker)  # agent started, partitions assigned, Redis answers
        assert json.loads(body) == {
            "status": "ok",
            "checks": {"started": True, "partitions_assigned": True, "redis_writes": True},
        }
        with EventPublisher(settings) as publisher:
            for event in good:
                publisher.send(event)
            for n in range(7):
                publisher.send_raw("interaction", b'{"user_id": "u", "timestamp": 1}', key=f"bad{n}".encode())
            publisher.flush()
        worker.wait_processed(len(good) + 7, 180)
        deadline = time.monotonic() + 30
        while True:  # the Redis write that reports the last batch precedes the metrics update by microseconds
            m = _metrics(base + "/metrics")
            if (
                m[("streamrec_events_total", (("outcome", "received"),))] == len(good) + 7
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.2)
        assert m[("streamrec_events_total", (("outcome", "received"),))] == len(good) + 7
        assert m[("streamrec_events_total", (("outcome", "accepted"),))] == len(good)
        assert m[("streamrec_events_total", (("outcome", "deadlettered"),))] == 7
        assert m[("streamrec_freshness_seconds_count", ())] == len(good)
        assert m[("streamrec_batch_events_sum", ())] == len(good) + 7
        assert m[("streamrec_batch_duration_seconds_count", ())] >= 1
        assert m[("streamrec_model_seconds_count", (("model", "all"), ("phase", "recommend")))] >= 1
        assert m[("streamrec_lists_written_total", ())] >= 13
        assert m[("streamrec_consumer_lag", (("partition", "0"), ("topic", settings.topic("interactions"))))] == 0
        assert m[("streamrec_pending_lists", ())] == 0
        assert m[("streamrec_redis_write_errors_total", ())] == 0
        assert 0 <= m[("streamrec_checkpoint_age_seconds", ())] < 60
        assert m[("streamrec_up", ())] == 1

        status = collect_status(settings)
        assert status.total_lag == 0
        assert status.counters["events_accepted"] == len(good)
        assert status.freshness["samples"] == len(good) and status.freshness["p50_ms"] > 0
        by_topic = {p.topic: p for p in status.partitions}
        assert by_topic[settings.topic("interactions")].processed == len(good) + 7
    finally:
        assert worker.stop() == 0, worker.log_tail()
    assert _get(base + "/healthz")[0] == 0  # the endpoint went away with the worker


def test_status_command_prints_lag_counters_and_freshness(isolated_settings, monkeypatch, capsys) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert f"worker {settings.app_id}: has written nothing to Redis yet" in out
    assert "consumer lag: 0 messages" in out
    assert main(["status", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total_lag"] == 0 and {p["topic"] for p in report["partitions"]} >= {settings.topic("ratings")}
