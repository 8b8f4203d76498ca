"""Checks on the model state that Kafka holds (changelog, updates topic): shared by the scale-out tests."""

from __future__ import annotations

import asyncio

import numpy as np

import models
from streamrec.events import to_interactions
from streamrec.settings import Settings
from streamrec.status import committed_offsets, wait_committed

__all__ = [
    "assert_equals_an_uninterrupted_run",
    "assert_same_state",
    "committed_offsets",
    "rebuilt",
    "wait_committed",
]


def rebuilt(settings: Settings) -> dict[str, models.OnlineRecommender]:
    """The models as Kafka holds them (snapshot, increments, every partition's users)."""
    from stream_app.state import rebuild_models

    return asyncio.run(rebuild_models(settings, settings.models, settings.topic_partitions))


def assert_equals_an_uninterrupted_run(kafka_models: dict, events: list) -> None:
    """Item-kNN and popularity rebuilt from Kafka hold exactly what one model learning ``events`` holds."""
    batch = to_interactions(events)
    knn, reference = kafka_models["itemknn"], models.create("itemknn")
    reference.learn(batch)
    ids = reference.item_index.ids
    mine = knn.item_index.lookup(ids)
    assert (mine >= 0).all()
    # counts and co-occurrences, item by item: an event lost or learned twice would change them
    np.testing.assert_array_equal(knn.item_counts()[mine], reference.item_counts())
    want = reference.cooccurrence().toarray()
    got = knn.cooccurrence().toarray()[np.ix_(mine, mine)]
    np.testing.assert_array_equal(got, want)
    pop, pop_ref = kafka_models["popularity"], models.create("popularity")
    pop_ref.learn(batch)
    np.testing.assert_allclose(pop.item_scores()[pop.item_index.lookup(ids)], pop_ref.item_scores(), rtol=1e-6)
    users = sorted({e.user_id for e in events})
    assert all(knn.seen_items(u) == reference.seen_items(u) for u in users)
    assert all(knn.history(u) == reference.history(u) for u in users)


def assert_same_state(got: dict, want: dict, users: list[str]) -> None:
    """Two sets of models hold the same item-kNN and popularity state and give every user the same list."""
    from tests.models.test_sharing import assert_same_lists

    knn, ref = got["itemknn"], want["itemknn"]
    ids = [i for i in ref.item_index.ids if i is not None]
    mine, theirs = knn.item_index.lookup(ids), ref.item_index.lookup(ids)
    assert (mine >= 0).all()
    np.testing.assert_array_equal(knn.item_counts()[mine], ref.item_counts()[theirs])
    np.testing.assert_array_equal(
        knn.cooccurrence().toarray()[np.ix_(mine, mine)], ref.cooccurrence().toarray()[np.ix_(theirs, theirs)]
    )
    pop, pop_ref = got["popularity"], want["popularity"]
    np.testing.assert_allclose(
        pop.item_scores()[pop.item_index.lookup(ids)], pop_ref.item_scores()[pop_ref.item_index.lookup(ids)], rtol=1e-6
    )
    for name in ("itemknn", "popularity"):
        assert_same_lists(got[name].recommend(users, k=10), want[name].recommend(users, k=10), name)
