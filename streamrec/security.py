"""Connection security: Kafka SASL/SSL, Redis ACL users and TLS, and keeping secrets out of logs.

Everything is configured through environment variables (see the README):

=========================  ==========================================================
``KAFKA_SECURITY_PROTOCOL``  ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT``, ``SASL_SSL``
``KAFKA_SASL_MECHANISM``     ``PLAIN`` (default), ``SCRAM-SHA-256``, ``SCRAM-SHA-512``
``KAFKA_SASL_USERNAME``      SASL user
``KAFKA_SASL_PASSWORD``      SASL password
``KAFKA_SSL_CAFILE``         CA bundle to verify the broker
``KAFKA_SSL_CERTFILE``       client certificate (mutual TLS)
``KAFKA_SSL_KEYFILE``        client key (mutual TLS)
``REDIS_USERNAME``           ACL user (or put it in ``REDIS_URL``)
``REDIS_PASSWORD``           password (or put it in ``REDIS_URL``)
``REDIS_SSL_CA_CERTS``       CA bundle for ``rediss://`` URLs
=========================  ==========================================================

Examples
--------
>>> sec = Security.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "app",
...                          "KAFKA_SASL_PASSWORD": "s3cret", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})
>>> "s3cret" in repr(sec)
False
>>> cfg = sec.kafka_python_config()
>>> cfg["security_protocol"], cfg["sasl_mechanism"], cfg["sasl_plain_username"]
('SASL_SSL', 'SCRAM-SHA-512', 'app')
>>> redact_url("redis://app:s3cret@cache.internal:6380/0")
'redis://app:***@cache.internal:6380/0'
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Security", "redact_url"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def redact_url(url: str | None) -> str:
    """``url`` with its password replaced by ``***`` (for logs and messages)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class Security:
    """Credentials and TLS settings; secrets are left out of ``repr``."""

    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    redis_username: str | None = None
    redis_password: str | None = field(default=None, repr=False)
    redis_ssl_ca_certs: str | None = None

    def __post_init__(self) -> None:
        if self.kafka_security_protocol not in PROTOCOLS:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: choose one of {PROTOCOLS}")
        if self.kafka_sasl_mechanism not in MECHANISMS:
            raise ValueError(f"KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: choose one of {MECHANISMS}")
        if self.kafka_security_protocol.startswith("SASL") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(f"{self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Security:
        def get(name: str) -> str | None:
            return env.get(name) or None

        return cls(
            kafka_security_protocol=(get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            kafka_sasl_mechanism=(get("KAFKA_SASL_MECHANISM") or "PLAIN").upper(),
            kafka_sasl_username=get("KAFKA_SASL_USERNAME"),
            kafka_sasl_password=get("KAFKA_SASL_PASSWORD"),
            kafka_ssl_cafile=get("KAFKA_SSL_CAFILE"),
            kafka_ssl_certfile=get("KAFKA_SSL_CERTFILE"),
            kafka_ssl_keyfile=get("KAFKA_SSL_KEYFILE"),
            redis_username=get("REDIS_USERNAME"),
            redis_password=get("REDIS_PASSWORD"),
            redis_ssl_ca_certs=get("REDIS_SSL_CA_CERTS"),
        )

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables (to start a worker process)."""
        pairs = {
            "KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol,
            "KAFKA_SASL_MECHANISM": self.kafka_sasl_mechanism,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
            "REDIS_USERNAME": self.redis_username,
            "REDIS_PASSWORD": self.redis_password,
            "REDIS_SSL_CA_CERTS": self.redis_ssl_ca_certs,
        }
        return {k: v for k, v in pairs.items() if v}

    @property
    def kafka_uses_ssl(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context for the broker, or ``None`` without TLS."""
        if not self.kafka_uses_ssl:
            return None
        context = ssl.create_default_context(cafile=self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            context.load_cert_chain(self.kafka_ssl_certfile, self.kafka_ssl_keyfile)
        return context

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients (producer, consumer, admin)."""
        config: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            config.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        if self.kafka_uses_ssl:
            config.update(
                ssl_cafile=self.kafka_ssl_cafile,
                ssl_certfile=self.kafka_ssl_certfile,
                ssl_keyfile=self.kafka_ssl_keyfile,
                ssl_check_hostname=True,
            )
        return {k: v for k, v in config.items() if v is not None}

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (the worker's state producer and readers)."""
        config: dict[str, Any] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_security_protocol.startswith("SASL"):
            config.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        if self.kafka_uses_ssl:
            config["ssl_context"] = self.kafka_ssl_context()
        return {k: v for k, v in config.items() if v is not None}

    def faust_credentials(self) -> Any:
        """``broker_credentials`` for the Faust app, or ``None`` for plaintext."""
        import faust

        if self.kafka_security_protocol == "PLAINTEXT":
            return None
        context = self.kafka_ssl_context()
        if self.kafka_security_protocol == "SSL":
            return faust.SSLCredentials(context)
        return faust.SASLCredentials(
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            mechanism=self.kafka_sasl_mechanism,
            ssl_context=context,
        )

    def redis_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url`` beyond what the URL says."""
        kwargs: dict[str, Any] = {}
        if self.redis_username:
            kwargs["username"] = self.redis_username
        if self.redis_password:
            kwargs["password"] = self.redis_password
        if self.redis_ssl_ca_certs:
            kwargs["ssl_ca_certs"] = self.redis_ssl_ca_certs
        return kwargs
