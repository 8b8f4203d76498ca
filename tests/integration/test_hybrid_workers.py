"""The hybrid across worker processes on a real broker and Redis: it shares through its members.

Two workers over four partitions serve a hybrid (of item-kNN and session kNN
through ``STREAMREC_MODEL_PARAMS``, and the default four members with the torch
ones), one of them is killed (``kill -9``) halfway, and what Kafka then holds
must be what one hybrid learning every event holds: the item-kNN member's counts
and co-occurrences exactly, every user's history.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

import models
from producers.publisher import EventPublisher
from streamrec.events import to_interactions
from streamrec.status import wait_committed
from streamrec.topics import ensure_topics
from tests.integration.kafka_state import rebuilt
from tests.integration.served import seen_by_user, served_lists
from tests.integration.test_scale_out import (
    TIMEOUT,
    end_offsets,
    owned_partitions,
    ratings_of,
    start_worker,
    wait_each_owns_partitions,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("params", [{"components": ["itemknn", "sknn"]}, {}], ids=["itemknn+sknn", "default"])
def test_two_hybrid_workers_and_a_kill_hold_what_one_hybrid_holds(
    isolated_settings, movielens_format_dir, tmp_path, params
) -> None:
    settings = replace(
        isolated_settings,
        app_id=f"{isolated_settings.app_id}-hybrid",
        topic_prefix=f"{isolated_settings.topic_prefix}-hybrid",
        key_prefix=f"{isolated_settings.key_prefix}-hybrid",
        topic_partitions=4,
        models=("popularity", "hybrid"),
        default_model="hybrid",
        model_params={"hybrid": params} if params else {},
        checkpoint_interval=0.5,
        batch_size=200,
    )
    assert settings.state_mode() == "kafka"
    ensure_topics(settings)
    ratings = ratings_of(movielens_format_dir, 4000)
    first, second = ratings[:2000], ratings[2000:]
    workers = [start_worker(settings, tmp_path, f"h{j}") for j in range(2)]
    with EventPublisher(settings) as publisher:
        publisher.publish(first, rate=800, progress=False)
    workers[0].wait_processed(len(first), TIMEOUT)
    wait_each_owns_partitions(tmp_path, ["h0", "h1"])  # so the kill moves some
    assert owned_partitions(tmp_path / "h1.log"), workers[1].log_tail()
    workers[1].kill()
    with EventPublisher(settings) as publisher:
        publisher.publish(second, rate=800, progress=False)
    topic = settings.topic("ratings")
    wait_committed(settings, topic, end_offsets(settings, topic), TIMEOUT)
    seen = seen_by_user(ratings)
    lists = served_lists(settings, seen)
    assert all(rec is not None and rec.items for rec in lists.values())
    assert not {u: rec.items for u, rec in lists.items() if rec is not None and set(rec.items) & seen[u]}
    assert {rec.model for rec in lists.values() if rec is not None} == {"hybrid"}
    assert workers[0].stop() == 0, workers[0].log_tail()

    hybrid = rebuilt(settings)["hybrid"]
    reference = models.create("hybrid", **params)
    reference.learn(to_interactions(ratings))
    knn, knn_ref = (next(m for m in h.component_models if m.name == "itemknn") for h in (hybrid, reference))
    ids = knn_ref.item_index.ids
    mine = knn.item_index.lookup(ids)
    assert (mine >= 0).all()
    # an event lost or learned twice by the member would change its counts and co-occurrences
    np.testing.assert_array_equal(knn.item_counts()[mine], knn_ref.item_counts())
    np.testing.assert_array_equal(knn.cooccurrence().toarray()[np.ix_(mine, mine)], knn_ref.cooccurrence().toarray())
    assert all(hybrid.seen_items(u) == seen[u] for u in seen)
