"""The worker's models stay within STREAMREC_MAX_USERS / STREAMREC_MAX_ITEMS under a growing id space."""

from __future__ import annotations

from dataclasses import replace

import pytest

from producers.publisher import EventPublisher
from streamrec.checkpoint import CheckpointStore
from streamrec.events import Interaction
from streamrec.topics import ensure_topics
from streamrec.workerproc import WorkerProcess

pytestmark = pytest.mark.integration


def test_capped_worker_evicts_least_recently_active(isolated_settings, tmp_path) -> None:
    settings = replace(
        isolated_settings,
        models=("popularity", "itemknn", "isgd"),
        default_model="itemknn",
        max_users=50,
        max_items=80,
        checkpoint_interval=0.5,
    )
    ensure_topics(settings)
    worker = WorkerProcess(settings, tmp_path / "worker.log").start()
    events = [Interaction(f"user{n}", f"item{(n * 7) % 400}", float(n), "view") for n in range(3000)]
    try:
        with EventPublisher(settings) as publisher:
            publisher.publish(events, progress=False)
        stats = worker.wait_processed(len(events), 120)
        assert stats["events_accepted"] == len(events)
    finally:
        assert worker.stop() == 0
    ckpt = CheckpointStore(settings.checkpoint_dir).load_latest()
    assert ckpt is not None
    for name, model in ckpt.models.items():
        assert model.n_users <= 50 and model.n_items <= 80, (name, model.n_users, model.n_items)
        assert model.n_learned == len(events)
        assert model.has_history("user2999") and not model.has_history("user0")
