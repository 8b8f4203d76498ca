"""Configuration, read from environment variables (the same names in docker-compose).

Every setting has a default that works on one machine; see the README's
"Configuration" table for the list.

Examples
--------
>>> s = Settings.from_env({"STREAMREC_MODELS": "popularity, itemknn", "STREAMREC_TOP_N": "5"})
>>> s.models, s.default_model, s.top_n
(('popularity', 'itemknn'), 'itemknn', 5)
>>> s.topic("interactions")
'streamrec.interactions'
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamrec.events import Limits
from streamrec.security import Security, redact_url

__all__ = ["DEFAULT_MODELS", "Settings", "cache_dir", "limit_torch_threads"]


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user cache folder (Kafka jars, venv, data set, local services)."""
    env = os.environ if env is None else env
    if env.get("STREAMREC_CACHE_DIR"):
        return Path(env["STREAMREC_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "streamrec"


def _split(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _live_ks(value: str) -> tuple[int, ...]:
    """``STREAMREC_LIVE_KS``: comma-separated cut-offs, or ``off``/``0``/empty to turn live evaluation off."""
    if value.strip().lower() in ("", "off", "0", "none", "false"):
        return ()
    ks = tuple(sorted({int(v) for v in _split(value)}))
    if min(ks) < 1:
        raise ValueError(f"STREAMREC_LIVE_KS={value!r}: cut-offs must be positive")
    return ks


#: The worker's models unless ``STREAMREC_MODELS`` says otherwise: the per-event backtests'
#: best model that runs at the live rate and shares its state (``sasrec``), item-kNN beside it
#: (exact when scaled out, and the reasons "because you interacted with X"), and popularity,
#: the fallback for users without history. The first model after popularity serves the plain key.
DEFAULT_MODELS = "popularity,sasrec,itemknn"


#: What a user's lists may hold of the items they interacted with before (``STREAMREC_REPEATS``):
#: ``off`` none, ``on`` any, ``unbought`` any they have not bought (a shop's "viewed but not bought").
REPEATS = ("off", "on", "unbought")


def repeats_mode(value: bool | str) -> str:
    """``value`` as one of :data:`REPEATS` (``True`` / ``False``: ``"on"`` / ``"off"``).

    Examples
    --------
    >>> repeats_mode(False), repeats_mode(True), repeats_mode("unbought")
    ('off', 'on', 'unbought')
    """
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in REPEATS:
        raise ValueError(f"repeats must be one of {', '.join(REPEATS)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the worker, the producers and the CLI need to know."""

    kafka_bootstrap_servers: str | None = None
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    app_id: str = "streamrec"
    topic_prefix: str = "streamrec"
    topic_partitions: int = 1
    models: tuple[str, ...] = ("popularity", "sasrec", "itemknn")
    default_model: str = "sasrec"
    fallback: str = "adaptive_popularity"  # the model of the list users without history get
    repeats: str = "off"  # lists may hold items the user interacted with before: "on", or "unbought" (not bought ones)
    top_n: int = 20
    list_depth: int = 50  # items kept per stored list: reads filter, so a stored list is deeper than a page
    batch_size: int = 1000
    batch_within: float = 0.05
    key_prefix: str = "streamrec"
    key_ttl: int | None = None
    freshness_cap: int = 100_000
    checkpoint_interval: float = 1.0
    state: str = "auto"  # where model state lives: "kafka" (changelog + updates topics), "local" (checkpoint folder)
    snapshot_interval: float = 60.0
    #: how workers share item state: "broadcast" (every worker adds every other's increments) or "owned"
    #: (the worker owning partition p of the events merges every worker's increments of the items of part p)
    item_state: str = "broadcast"
    max_users: int | None = None
    max_items: int | None = None
    state_dir: Path = field(default_factory=lambda: cache_dir() / "worker")
    limits: Limits = field(default_factory=Limits)
    model_params: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    security: Security = field(default_factory=Security)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    max_clock_skew: float = 300.0  # seconds an event may be ahead of the wall clock
    future_events: str = "deadletter"  # or "clamp": what happens to an event further ahead
    max_event_age: float | None = None  # seconds an event may be behind the wall clock (None: any age)
    user_rate_limit: tuple[int, float] | None = None  # (events, seconds) per user, beyond: dead-lettered
    event_id_window: float = 86_400.0  # seconds an event id is remembered after the user's newest event
    event_ids_per_user: int = 1000  # event ids remembered per user at most
    live_ks: tuple[int, ...] = (10, 20)  # live quality: HR@K cut-offs (empty: live evaluation off)
    live_users: int = 200_000  # live quality: users whose served lists a worker remembers
    exposure_window: float = 1800.0  # seconds after an exposure in which a user's event on a shown item counts
    experiment: str | None = None  # an A/B experiment: "name: variant=model weight, ..." (streamrec.experiments)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        models = _split(env.get("STREAMREC_MODELS", DEFAULT_MODELS))
        if not models:
            raise ValueError("STREAMREC_MODELS names no model")
        default = env.get("STREAMREC_DEFAULT_MODEL") or next((m for m in models if m != "popularity"), models[0])
        if default not in models:
            raise ValueError(f"STREAMREC_DEFAULT_MODEL={default!r} is not in STREAMREC_MODELS={','.join(models)}")
        ttl = env.get("STREAMREC_KEY_TTL")
        limits = Limits(
            min_rating=float(env.get("STREAMREC_MIN_RATING", Limits.min_rating)),
            max_rating=float(env.get("STREAMREC_MAX_RATING", Limits.max_rating)),
        )
        return cls(
            kafka_bootstrap_servers=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            redis_url=env.get("REDIS_URL") or None,
            app_id=env.get("STREAMREC_APP_ID", "streamrec"),
            topic_prefix=env.get("STREAMREC_TOPIC_PREFIX", "streamrec"),
            topic_partitions=int(env.get("STREAMREC_TOPIC_PARTITIONS", "1")),
            models=models,
            default_model=default,
            fallback=_choice(
                "STREAMREC_FALLBACK",
                env.get("STREAMREC_FALLBACK", "adaptive_popularity"),
                ("adaptive_popularity", "popularity"),
            ),
            repeats=_choice("STREAMREC_REPEATS", env.get("STREAMREC_REPEATS", "off"), REPEATS),
            top_n=int(env.get("STREAMREC_TOP_N", "20")),
            list_depth=int(env.get("STREAMREC_LIST_DEPTH", "50")),
            batch_size=int(env.get("STREAMREC_BATCH_SIZE", "1000")),
            batch_within=float(env.get("STREAMREC_BATCH_WITHIN", "0.05")),
            key_prefix=env.get("STREAMREC_KEY_PREFIX", "streamrec"),
            key_ttl=int(ttl) if ttl else None,
            freshness_cap=int(env.get("STREAMREC_FRESHNESS_CAP", "100000")),
            checkpoint_interval=float(env.get("STREAMREC_CHECKPOINT_INTERVAL", "1")),
            state=_state_mode(env.get("STREAMREC_STATE", "auto")),
            snapshot_interval=float(env.get("STREAMREC_SNAPSHOT_INTERVAL", "60")),
            item_state=_choice(
                "STREAMREC_ITEM_STATE", env.get("STREAMREC_ITEM_STATE", "broadcast"), ("broadcast", "owned")
            ),
            max_users=int(env["STREAMREC_MAX_USERS"]) if env.get("STREAMREC_MAX_USERS") else None,
            max_items=int(env["STREAMREC_MAX_ITEMS"]) if env.get("STREAMREC_MAX_ITEMS") else None,
            state_dir=Path(env["STREAMREC_STATE_DIR"]) if env.get("STREAMREC_STATE_DIR") else cache_dir(env) / "worker",
            limits=limits,
            security=Security.from_env(env),
            metrics_port=int(env["STREAMREC_METRICS_PORT"]) if env.get("STREAMREC_METRICS_PORT") else None,
            metrics_host=env.get("STREAMREC_METRICS_HOST") or "127.0.0.1",
            max_clock_skew=float(env.get("STREAMREC_MAX_CLOCK_SKEW", "300")),
            future_events=_choice("STREAMREC_FUTURE_EVENTS", env.get("STREAMREC_FUTURE_EVENTS", "deadletter")),
            max_event_age=float(env["STREAMREC_MAX_EVENT_AGE"]) if env.get("STREAMREC_MAX_EVENT_AGE") else None,
            user_rate_limit=_rate(env.get("STREAMREC_USER_RATE_LIMIT", "")),
            event_id_window=float(env.get("STREAMREC_EVENT_ID_WINDOW", "86400")),
            event_ids_per_user=int(env.get("STREAMREC_EVENT_IDS_PER_USER", "1000")),
            live_ks=_live_ks(env.get("STREAMREC_LIVE_KS", "10,20")),
            live_users=int(env.get("STREAMREC_LIVE_USERS", "200000")),
            experiment=env.get("STREAMREC_EXPERIMENT") or None,
            exposure_window=float(env.get("STREAMREC_EXPOSURE_WINDOW", "1800")),
            model_params=_model_params(env.get("STREAMREC_MODEL_PARAMS", "")),
        )

    def with_services(self, kafka_bootstrap_servers: str, redis_url: str) -> Settings:
        """A copy pointing at the given broker and Redis server."""
        return replace(self, kafka_bootstrap_servers=kafka_bootstrap_servers, redis_url=redis_url)

    @property
    def checkpoint_dir(self) -> Path:
        """Where this app's checkpoints live (one folder per app id, i.e. consumer group)."""
        return self.state_dir / "checkpoints" / self.app_id

    @property
    def depth(self) -> int:
        """Items kept per stored list: ``STREAMREC_LIST_DEPTH``, at least a page (``STREAMREC_TOP_N``)."""
        return max(self.top_n, self.list_depth)

    def topic(self, kind: str) -> str:
        """Topic name for ``kind``: interactions, ratings, items, forget, deadletter."""
        return f"{self.topic_prefix}.{kind}"

    def state_mode(self) -> str:
        """``"kafka"`` or ``"local"``: ``auto`` is Kafka when every configured model can share its state."""
        if self.state != "auto":
            return self.state
        import models

        shares = (models.model_class(name).shares_state_with(self.model_params.get(name, {})) for name in self.models)
        return "kafka" if all(shares) else "local"

    def state_topic(self, kind: str) -> str:
        """Topic name of model state: ``user-state`` (changelog), ``model-updates``, ``item-state`` (snapshots),
        ``item-increments`` and ``item-merged`` (item state owned by item, see :mod:`stream_app.owners`)."""
        return f"{self.topic_prefix}.{kind}"

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables (to start a worker process)."""
        env = {
            "STREAMREC_APP_ID": self.app_id,
            "STREAMREC_TOPIC_PREFIX": self.topic_prefix,
            "STREAMREC_TOPIC_PARTITIONS": str(self.topic_partitions),
            "STREAMREC_MODELS": ",".join(self.models),
            "STREAMREC_DEFAULT_MODEL": self.default_model,
            "STREAMREC_FALLBACK": self.fallback,
            "STREAMREC_REPEATS": repeats_mode(self.repeats),
            "STREAMREC_TOP_N": str(self.top_n),
            "STREAMREC_LIST_DEPTH": str(self.list_depth),
            "STREAMREC_BATCH_SIZE": str(self.batch_size),
            "STREAMREC_BATCH_WITHIN": str(self.batch_within),
            "STREAMREC_KEY_PREFIX": self.key_prefix,
            "STREAMREC_FRESHNESS_CAP": str(self.freshness_cap),
            "STREAMREC_CHECKPOINT_INTERVAL": str(self.checkpoint_interval),
            "STREAMREC_STATE": self.state,
            "STREAMREC_SNAPSHOT_INTERVAL": str(self.snapshot_interval),
            "STREAMREC_ITEM_STATE": self.item_state,
            "STREAMREC_STATE_DIR": str(self.state_dir),
            "STREAMREC_MIN_RATING": str(self.limits.min_rating),
            "STREAMREC_MAX_RATING": str(self.limits.max_rating),
        }
        if self.kafka_bootstrap_servers:
            env["KAFKA_BOOTSTRAP_SERVERS"] = self.kafka_bootstrap_servers
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.key_ttl:
            env["STREAMREC_KEY_TTL"] = str(self.key_ttl)
        if self.max_users:
            env["STREAMREC_MAX_USERS"] = str(self.max_users)
        if self.max_items:
            env["STREAMREC_MAX_ITEMS"] = str(self.max_items)
        env["STREAMREC_MAX_CLOCK_SKEW"] = str(self.max_clock_skew)
        env["STREAMREC_FUTURE_EVENTS"] = self.future_events
        if self.max_event_age is not None:
            env["STREAMREC_MAX_EVENT_AGE"] = str(self.max_event_age)
        if self.user_rate_limit is not None:
            env["STREAMREC_USER_RATE_LIMIT"] = f"{self.user_rate_limit[0]}/{self.user_rate_limit[1]}"
        env["STREAMREC_EVENT_ID_WINDOW"] = str(self.event_id_window)
        env["STREAMREC_EVENT_IDS_PER_USER"] = str(self.event_ids_per_user)
        env["STREAMREC_LIVE_KS"] = ",".join(map(str, self.live_ks)) or "off"
        env["STREAMREC_LIVE_USERS"] = str(self.live_users)
        env["STREAMREC_EXPOSURE_WINDOW"] = str(self.exposure_window)
        if self.experiment:
            env["STREAMREC_EXPERIMENT"] = self.experiment
        if self.model_params:
            env["STREAMREC_MODEL_PARAMS"] = json.dumps({k: dict(v) for k, v in self.model_params.items()})
        if self.metrics_port is not None:
            env["STREAMREC_METRICS_PORT"] = str(self.metrics_port)
            env["STREAMREC_METRICS_HOST"] = self.metrics_host
        env.update(self.security.as_env())
        return env

    def kafka_config(self) -> dict[str, object]:
        """Keyword arguments for kafka-python clients: servers plus security."""
        if not self.kafka_bootstrap_servers:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS is not set (or run `streamrec services up`)")
        return {"bootstrap_servers": self.kafka_bootstrap_servers.split(","), **self.security.kafka_python_config()}

    def redis_kwargs(self) -> dict[str, object]:
        """Keyword arguments for Redis clients beyond the URL (ACL user, password, CA)."""
        kwargs = self.security.redis_kwargs()
        if "ssl_ca_certs" in kwargs and not (self.redis_url or "").startswith("rediss://"):
            raise ValueError(
                f"REDIS_SSL_CA_CERTS is set but REDIS_URL={redact_url(self.redis_url)!r} does not use TLS: "
                "use a rediss:// URL, or unset REDIS_SSL_CA_CERTS"
            )
        return kwargs

    def describe(self) -> str:
        """Where the services are, safe to log (no passwords)."""
        return f"Kafka {self.kafka_bootstrap_servers} ({self.security.kafka_security_protocol}), Redis {redact_url(self.redis_url)}"


def _choice(name: str, value: str, allowed: tuple[str, ...] = ("deadletter", "clamp")) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _rate(value: str) -> tuple[int, float] | None:
    """``"N/SECONDS"`` (e.g. ``"120/60"``: 120 events a minute) as ``(N, SECONDS)``; empty: no limit.

    Examples
    --------
    >>> _rate("120/60"), _rate("")
    ((120, 60.0), None)
    """
    value = value.strip()
    if not value:
        return None
    events, _, seconds = value.partition("/")
    try:
        rate = (int(events), float(seconds or "1"))
    except ValueError:
        raise ValueError(f"STREAMREC_USER_RATE_LIMIT must be EVENTS/SECONDS (e.g. 120/60), got {value!r}") from None
    if rate[0] < 1 or rate[1] <= 0:
        raise ValueError(f"STREAMREC_USER_RATE_LIMIT must be EVENTS/SECONDS with both > 0, got {value!r}")
    return rate


def _state_mode(value: str) -> str:
    value = value.strip().lower() or "auto"
    if value not in ("auto", "kafka", "local"):
        raise ValueError(f"STREAMREC_STATE must be auto, kafka or local, got {value!r}")
    return value


def limit_torch_threads(env: Mapping[str, str] | None = None) -> None:
    """One torch thread per process unless ``STREAMREC_TORCH_THREADS`` says otherwise.

    On a small machine torch's default pool (one thread per core) competes with
    Kafka, Redis and the event loop and runs many times slower. Does nothing
    when torch is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return
    import torch

    env = os.environ if env is None else env
    torch.set_num_threads(int(env.get("STREAMREC_TORCH_THREADS", "1")))


def _model_params(text: str) -> dict[str, dict[str, object]]:
    """``STREAMREC_MODEL_PARAMS``: JSON mapping model names to hyperparameters (empty: the defaults).

    >>> _model_params('{"hybrid": {"components": ["itemknn", "sknn"]}}')
    {'hybrid': {'components': ['itemknn', 'sknn']}}
    """
    if not text.strip():
        return {}
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"STREAMREC_MODEL_PARAMS is not JSON: {exc}") from None
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise ValueError('STREAMREC_MODEL_PARAMS must map model names to objects, e.g. {"itemknn": {"window": 50}}')
    return params
