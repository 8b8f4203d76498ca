"""The synthetic load generator."""

from __future__ import annotations

import numpy as np

from producers.synthetic import SyntheticStream


def test_deterministic_skewed_and_tasteful() -> None:
    a = SyntheticStream(n_users=200, n_items=1000, n_topics=10, seed=3)
    b = SyntheticStream(n_users=200, n_items=1000, n_topics=10, seed=3)
    batch = next(a.batches(20_000))
    again = next(b.batches(20_000))
    np.testing.assert_array_equal(batch.items, again.items)
    assert len(batch) == 20_000
    assert np.all(np.diff(batch.timestamps) > 0)
    # skew: the 1% most popular items get far more than 1% of events
    _, counts = np.unique(batch.items, return_counts=True)
    top = np.sort(counts)[::-1][:10].sum() / counts.sum()
    assert top > 0.05
    # taste: most of a heavy user's events fall in their favourite topics
    users, counts = np.unique(batch.users, return_counts=True)
    heavy = users[np.argmax(counts)]
    u = int(heavy[1:])
    topics = [a.item_topic(int(i[1:])) for i in batch.items[batch.users == heavy]]
    assert np.mean(np.isin(topics, a.user_topics(u))) > 0.6


def test_chunks_cover_the_requested_count() -> None:
    stream = SyntheticStream(n_users=10, n_items=20, seed=0)
    assert sum(len(b) for b in stream.batches(2_500, chunk=1_000)) == 2_500
    events = list(SyntheticStream(n_users=10, n_items=20, seed=0).events(7))
    assert len(events) == 7 and all(e.user_id.startswith("u") and e.item_id.startswith("i") for e in events)
