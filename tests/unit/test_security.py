"""Security settings map to each client; secrets stay out of reprs; loading never unpickles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models import OnlineRecommender, create
from models.base import Interactions
from streamrec.security import Security, redact_url
from streamrec.settings import Settings


def test_sasl_ssl_maps_to_kafka_python_and_faust() -> None:
    env = {
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "scram-sha-256",
        "KAFKA_SASL_USERNAME": "app",
        "KAFKA_SASL_PASSWORD": "hunter2",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9093",
    }
    settings = Settings.from_env(env)
    config = settings.kafka_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-256"
    assert config["sasl_plain_password"] == "hunter2"
    assert config["ssl_check_hostname"] is True
    creds = settings.security.faust_credentials()
    assert creds.username == "app" and creds.ssl_context is not None
    assert "hunter2" not in repr(settings) and "hunter2" not in repr(creds)
    assert Settings.from_env(settings.as_env()).security == settings.security


def test_plaintext_has_no_credentials_and_bad_values_are_rejected() -> None:
    assert Security().faust_credentials() is None
    assert Security().kafka_python_config() == {"security_protocol": "PLAINTEXT"}
    with pytest.raises(ValueError, match="KAFKA_SECURITY_PROTOCOL"):
        Security.from_env({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ValueError, match="needs KAFKA_SASL_USERNAME"):
        Security.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})


def test_redis_credentials_and_redaction() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "rediss://app:pw@host:6380/1", "REDIS_SSL_CA_CERTS": "/ca.pem", "REDIS_PASSWORD": "pw2"}
    )
    assert settings.redis_kwargs() == {"password": "pw2", "ssl_ca_certs": "/ca.pem"}
    assert "pw" not in settings.describe().replace("pw2", "")
    assert "pw" not in repr(settings)
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url("redis://:only@h:1/0") == "redis://:***@h:1/0"


def test_loading_a_model_never_unpickles(tmp_path) -> None:
    model = create("popularity")
    model.learn(Interactions.from_columns(["u"], ["i"]))
    path = model.save(tmp_path / "m")
    # replace the arrays with a pickled object array: loading must refuse it
    np.savez(path / "arrays.npz", **{"model.acc": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ValueError, match="pickle"):
        OnlineRecommender.load(path)
    path = model.save(tmp_path / "m")  # a clean copy, then a class name that is not a model
    meta = json.loads((path / "meta.json").read_text())
    meta["model"] = "os.system"
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown model"):
        OnlineRecommender.load(path)
