"""Shared fixtures. Integration fixtures start real services; nothing here mocks Kafka or Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streamrec.datasets import find_movielens
from streamrec.services import LocalServices
from streamrec.settings import Settings, limit_torch_threads

limit_torch_threads()  # as every process of the project does: torch's default pool fights the other tests

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "STREAMREC_DATA_DIR" not in os.environ and (SHARED_DATA / "ml-100k").is_dir():
    os.environ["STREAMREC_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def movielens_dir() -> Path:
    folder = find_movielens(download=False)
    if folder is None:
        pytest.fail("MovieLens 100K not found: set STREAMREC_DATA_DIR to a folder holding ml-100k/")
    return folder


@pytest.fixture(scope="session")
def service_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real broker and Redis: the configured ones, else local ones started for this session."""
    base = Settings.from_env()
    if base.kafka_bootstrap_servers and base.redis_url:
        yield base
        return
    local = LocalServices(tmp_path_factory.mktemp("services"))
    endpoints = local.up()
    try:
        yield base.with_services(endpoints.kafka_bootstrap_servers, endpoints.redis_url)
    finally:
        local.down()


@pytest.fixture
def isolated_settings(service_settings: Settings, tmp_path: Path) -> Settings:
    """Settings with topics, consumer group and Redis keys of this test only."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    return replace(
        service_settings,
        app_id=f"streamrec-{tag}",
        topic_prefix=f"streamrec-{tag}",
        key_prefix=f"streamrec-{tag}",
        state_dir=tmp_path / "worker",
        batch_size=500,
        batch_within=0.05,
    )


_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Integration tests must run, never skip: a skipped one fails the session."""
    if _skipped_integration and exitstatus == 0:
        print(f"\nintegration tests skipped (they must run): {_skipped_integration}")
        session.exitstatus = 1
