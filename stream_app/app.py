"""The Faust application object (and nothing else): ``faust -A stream_app.app worker``.

Configuration comes from the environment (see :mod:`streamrec.settings`).
When ``KAFKA_BOOTSTRAP_SERVERS`` is not set, the broker started by
``streamrec services up`` is used if it runs, else ``127.0.0.1:9092``.
"""

from __future__ import annotations

import sys

import faust

import models
from stream_app.fetching import shorten_fetch_wait
from streamrec.services import ServiceError, resolve_services
from streamrec.settings import Settings, limit_torch_threads


def _resolve(settings: Settings) -> Settings:
    """Fill in the broker and Redis of ``streamrec services up`` when none are configured."""
    try:
        return resolve_services(settings, start=False)
    except ServiceError:  # nothing runs locally: the conventional addresses
        return settings.with_services(
            settings.kafka_bootstrap_servers or "127.0.0.1:9092", settings.redis_url or "redis://127.0.0.1:6379/0"
        )


settings = _resolve(Settings.from_env())


def _check_models(settings: Settings) -> None:
    """Fail at start-up, not in the agent, when a configured model cannot be created."""
    for name in settings.models:
        try:
            models.model_class(name)
        except (ImportError, ValueError) as exc:
            raise SystemExit(f"STREAMREC_MODELS: model {name!r} cannot be loaded: {exc}") from exc


_check_models(settings)
if "torch" in sys.modules:  # a configured model imported torch; the worker shares the machine with Kafka and Redis
    limit_torch_threads()


def _broker_url(servers: str) -> str:
    return ";".join(f"kafka://{s.strip()}" for s in servers.split(","))


shorten_fetch_wait()  # Faust's 1.5 s fetch wait held a busy worker 1.5 s behind (see stream_app.fetching)

(settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # Faust makes the last folder of datadir only
app = faust.App(
    settings.app_id,
    broker=_broker_url(settings.kafka_bootstrap_servers or ""),
    store="memory://",
    datadir=str(settings.state_dir / "faust" / "{conf.name}-data"),  # not "{appid}-data" in the working folder
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_credentials=settings.security.faust_credentials(),
    web_enabled=False,
    web_host="127.0.0.1",
    autodiscover=False,
    producer_linger_ms=5,
    # a restarted worker takes over within seconds, not after a minute
    broker_session_timeout=6.0,  # the broker's group.min.session.timeout.ms
    broker_heartbeat_interval=1.0,  # a failed worker's partitions move within ~1 s of its session ending
    stream_buffer_maxsize=max(4096, 4 * settings.batch_size),
    broker_commit_every=max(1000, settings.batch_size),
    broker_commit_interval=1.0,  # with checkpoints, stream_app.commits holds these commits back
)

# Import the agents so that `faust -A stream_app.app worker` registers them.
from stream_app import agents  # noqa: E402, F401
