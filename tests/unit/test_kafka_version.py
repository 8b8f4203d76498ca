"""Choosing the local broker's version, without starting one."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.services import KAFKA_VERSION, LocalServices, ServiceError, resolve_kafka_version


def test_version_comes_from_the_argument_then_the_environment_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMREC_KAFKA_VERSION", raising=False)
    assert resolve_kafka_version() == KAFKA_VERSION
    monkeypatch.setenv("STREAMREC_KAFKA_VERSION", "3.9.1")
    assert resolve_kafka_version() == "3.9.1"
    assert resolve_kafka_version("4.1.1") == "4.1.1"
    for bad in ("latest", "4", "2.8.2", "4.4.0/../x"):
        monkeypatch.setenv("STREAMREC_KAFKA_VERSION", bad)
        with pytest.raises(ValueError, match=r"MAJOR\.MINOR\.PATCH"):
            LocalServices("unused")


def test_data_of_a_newer_minor_release_is_refused(tmp_path: Path) -> None:
    kdir = tmp_path / "kafka"
    kdir.mkdir()
    (kdir / "data-version").write_text("4.4.0")
    LocalServices(tmp_path, kafka_version="4.4.1")._check_data_version(kdir)  # a patch release reads it
    LocalServices(tmp_path, kafka_version="4.4.0")._check_data_version(kdir)
    with pytest.raises(ServiceError, match=r"last used by Kafka 4\.4\.0"):
        LocalServices(tmp_path, kafka_version="3.9.1")._check_data_version(kdir)
