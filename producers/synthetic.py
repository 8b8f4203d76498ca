"""A synthetic event stream for load tests: skewed item popularity, users with tastes.

Items belong to topics; popularity within the catalogue is Zipf-distributed.
Each user has a few favourite topics and picks most events from them, the
rest from the whole catalogue; user activity is skewed too. Generation is
vectorised in chunks, so millions of events take seconds.

Examples
--------
>>> stream = SyntheticStream(n_users=50, n_items=200, seed=1)
>>> events = list(stream.events(5))
>>> len(events), events[0].event_type in ("view", "click", "add_to_cart", "purchase")
(5, True)
>>> [e.item_id for e in SyntheticStream(n_users=50, n_items=200, seed=1).events(5)] == [e.item_id for e in events]
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.base import Interactions
from streamrec.events import EVENT_TYPES, EVENT_WEIGHTS, Interaction

__all__ = ["SyntheticStream"]

TYPE_PROBABILITIES = (0.70, 0.20, 0.07, 0.03)


@dataclass
class SyntheticStream:
    """Parameters of the generated stream (all draws come from ``seed``)."""

    n_users: int = 10_000
    n_items: int = 5_000
    n_topics: int = 20
    topics_per_user: int = 2
    taste_strength: float = 0.8
    item_skew: float = 1.1
    user_skew: float = 0.8
    events_per_second: float = 100.0
    start_time: float = 1_700_000_000.0
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._item_topic = rng.integers(0, self.n_topics, self.n_items)
        item_pop = 1.0 / np.arange(1, self.n_items + 1) ** self.item_skew
        self._item_pop = item_pop[rng.permutation(self.n_items)]
        self._global_p = self._item_pop / self._item_pop.sum()
        self._topic_items = [np.flatnonzero(self._item_topic == t) for t in range(self.n_topics)]
        self._topic_p = []
        for items in self._topic_items:
            p = self._item_pop[items]
            self._topic_p.append(p / p.sum() if len(items) else p)
        self._user_topics = rng.integers(0, self.n_topics, (self.n_users, self.topics_per_user))
        activity = 1.0 / np.arange(1, self.n_users + 1) ** self.user_skew
        self._user_p = activity[rng.permutation(self.n_users)] / activity.sum()
        self._rng = rng

    def user_topics(self, user: int) -> np.ndarray:
        """The favourite topics of user number ``user``."""
        return self._user_topics[user]

    def item_topic(self, item: int) -> int:
        """The topic of item number ``item``."""
        return int(self._item_topic[item])

    def batches(self, n_events: int, chunk: int = 100_000) -> Iterator[Interactions]:
        """Yield the stream as model batches of at most ``chunk`` events."""
        rng = self._rng
        t = 0
        while t < n_events:
            n = min(chunk, n_events - t)
            users = rng.choice(self.n_users, size=n, p=self._user_p)
            items = rng.choice(self.n_items, size=n, p=self._global_p)
            from_taste = rng.random(n) < self.taste_strength
            slots = rng.integers(0, self.topics_per_user, n)
            topics = self._user_topics[users, slots]
            for topic in np.unique(topics[from_taste]):
                rows = np.flatnonzero(from_taste & (topics == topic))
                pool = self._topic_items[topic]
                if len(pool):
                    items[rows] = rng.choice(pool, size=len(rows), p=self._topic_p[topic])
            types = rng.choice(len(EVENT_TYPES), size=n, p=TYPE_PROBABILITIES)
            weights = np.array([EVENT_WEIGHTS[e] for e in EVENT_TYPES], dtype=np.float32)[types]
            ts = self.start_time + (t + np.arange(n)) / self.events_per_second
            yield Interactions(
                users=np.char.add("u", users.astype(str)).astype(object),
                items=np.char.add("i", items.astype(str)).astype(object),
                timestamps=ts,
                weights=weights,
                ratings=np.full(n, np.nan, dtype=np.float32),
            )
            self._last_types = types
            t += n

    def events(self, n_events: int, chunk: int = 100_000) -> Iterator[Interaction]:
        """Yield the stream as :class:`~streamrec.events.Interaction` records."""
        inverse = {w: name for name, w in EVENT_WEIGHTS.items() if name != "rating"}
        for batch in self.batches(n_events, chunk):
            for u, i, ts, w in zip(
                batch.users, batch.items, batch.timestamps.tolist(), batch.weights.tolist(), strict=True
            ):
                yield Interaction(user_id=u, item_id=i, timestamp=ts, event_type=inverse[w])
