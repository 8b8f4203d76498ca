"""Shared fixtures. Integration fixtures start real services; nothing here mocks Kafka or Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from producers.movielens_format import write_movielens
from streamrec.datasets import MOVIELENS_URL, find_movielens
from streamrec.services import LocalServices, ensure_redis_server
from streamrec.settings import Settings, limit_torch_threads
from streamrec.workerproc import WorkerProcess

limit_torch_threads()  # as every process of the project does: torch's default pool fights the other tests

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "STREAMREC_DATA_DIR" not in os.environ and (SHARED_DATA / "ml-100k").is_dir():
    os.environ["STREAMREC_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def movielens_format_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated ``u.data``/``u.item``/``u.user`` (943 users, 1,682 items, 30,000 ratings): no download needed."""
    return write_movielens(tmp_path_factory.mktemp("ml-generated"), n_ratings=30_000, seed=7)


@pytest.fixture(scope="session")
def real_movielens_dir() -> Path:
    """The real MovieLens 100K, for the tests that measure quality; they skip, saying how to get it, without it."""
    folder = find_movielens(download=False)
    if folder is None:
        pytest.skip(
            "needs the real MovieLens 100K (quality figures), which may not be redistributed: download "
            f"{MOVIELENS_URL}, unzip it so that DIR/ml-100k/u.data exists, and set STREAMREC_DATA_DIR=DIR "
            "(or run `./scripts/streamrec demo` once with network access: it caches the set)"
        )
    return folder


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    """``redis-server``, installed as the local services install it: tests that start their own run, never skip."""
    return ensure_redis_server()


@pytest.fixture(scope="session")
def service_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real broker and Redis: the configured ones, else local ones started for this session."""
    base = Settings.from_env()
    if base.kafka_bootstrap_servers and base.redis_url:
        yield base
        return
    local = LocalServices(tmp_path_factory.mktemp("services"))
    try:  # a failed start may leave one of the two running: down() stops it
        endpoints = local.up()
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


@pytest.fixture(autouse=True)
def _no_orphan_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill every worker process a test started and left running (a failed assertion skips its stop)."""
    started: list[WorkerProcess] = []
    start = WorkerProcess.start

    def tracked(self: WorkerProcess) -> WorkerProcess:
        started.append(self)
        return start(self)

    monkeypatch.setattr(WorkerProcess, "start", tracked)
    yield
    for worker in started:
        worker.kill()  # SIGKILL by PID, only if still running


_skipped_integration: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "integration" in report.keywords:
        _skipped_integration.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Integration tests must run, never skip: a skipped one fails the session."""
    if _skipped_integration and exitstatus == 0:
        print(f"\nintegration tests skipped (they must run): {_skipped_integration}")
        session.exitstatus = 1
