"""The Grafana dashboard and Prometheus configuration beside docker-compose match what the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamrec.metrics import WorkerMetrics, WorkerState

ROOT = Path(__file__).resolve().parents[2]


def exported_series() -> set[str]:
    metrics = WorkerMetrics(["itemknn"])
    metrics.observe_batch(received=2, accepted=1, seconds=0.01, learn_seconds=0.001, recommend_seconds=0.002)
    metrics.observe_written(1, [0.1])
    metrics.observe_redis_error()
    metrics.observe_checkpoint(0.1)
    metrics.observe_quality(
        {"itemknn|5+|scored": 2, "itemknn|5+|hit@10": 1, "itemknn|5+|rr": 0.5, "itemknn|-|unknown": 1,
         "exp:mix|-|win:itemknn": 1, "shown:a|-|exposures": 2, "shown:a|-|clicked": 1}
    )  # fmt: skip
    metrics.update(WorkerState(started=True, checkpoint_age=1.0, lag={("t", 0): 1}))
    text = generate_latest(metrics.registry).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_dashboard_query_names_an_exported_series() -> None:
    dashboard = json.loads((ROOT / "monitoring/grafana/dashboards/streamrec.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    named = {name for expr in exprs for name in re.findall(r"\bstreamrec_[a-z_]+", expr)}
    assert named and named <= exported_series(), named - exported_series()
    # every panel reads the provisioned data source
    uid = "streamrec-prometheus"
    assert all(panel["datasource"]["uid"] == uid for panel in dashboard["panels"])
    assert f"uid: {uid}" in (ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text()


def test_compose_publishes_the_metrics_port_and_prometheus_scrapes_it() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    # a port range, so that `docker compose up --scale worker=N` gives each replica one
    assert "STREAMREC_METRICS_PORT: 9187" in compose and '"127.0.0.1:9187-9196:9187"' in compose
    assert (
        "replicas: ${STREAMREC_WORKERS:-1}" in compose
        and "STREAMREC_TOPIC_PARTITIONS: ${STREAMREC_TOPIC_PARTITIONS:-6}" in compose
    )
    assert "./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose
    prometheus = (ROOT / "monitoring/prometheus.yml").read_text()
    assert 'names: ["worker"]' in prometheus and "port: 9187" in prometheus  # every replica, by DNS
