"""A stream that mixes ordinary traffic with what a bad or hostile producer sends.

:func:`hostile_stream` returns the ordinary events and the same stream with
the hostile part mixed in, so that a test or a benchmark can replay both and
compare what users are served. The hostile part:

- **future**: events stamped hours to decades ahead (a broken clock, or the
  year 2100 to own the fallback);
- **past**: events stamped years back (a replayed archive sent as live);
- **bot**: one user clicking one item over and over;
- **retries**: ordinary events sent again with the same ``event_id``;
- **shared ids**: other users' events reusing ids of ordinary events (ids are
  per user: these are new events, not duplicates);
- **out of order**: ordinary events are sent slightly shuffled within the
  stream (both runs send them in the same order).

Examples
--------
>>> stream = hostile_stream(now=1_764_000_000.0, n_users=20, n_events=200, bot_clicks=50, seed=1)
>>> len(stream.ordinary), stream.counts["bot"], stream.counts["future"] > 0
(200, 50, True)
>>> len(stream.mixed) == len(stream.ordinary) + sum(stream.counts.values())
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamrec.events import Interaction

__all__ = ["HostileStream", "hostile_stream"]


@dataclass
class HostileStream:
    """The ordinary events, the mixed stream, and how many hostile events of each kind it holds."""

    ordinary: list[Interaction]
    mixed: list[Interaction]
    counts: dict[str, int] = field(default_factory=dict)
    bot_user: str = "bot-1"
    bot_item: str = "spam-bot"


def hostile_stream(
    now: float,
    n_users: int = 500,
    n_items: int = 300,
    n_events: int = 5000,
    bot_clicks: int = 1500,
    n_future: int = 20,
    n_past: int = 20,
    retries: int = 500,
    shared_ids: int = 50,
    seed: int = 0,
) -> HostileStream:
    """Ordinary clicks of ``n_users`` users over the last ten minutes before ``now``, and the hostile mix.

    Ordinary events carry unique ids (``o<n>``) and Zipf-popular items;
    within the stream they are shuffled a little (out of order by up to a
    few seconds). Hostile events are spread uniformly through the stream.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 1.0
    items = rng.choice(n_items, size=n_events, p=weights / weights.sum())
    users = rng.integers(0, n_users, size=n_events)
    stamps = now - 600.0 + np.sort(rng.uniform(0.0, 590.0, size=n_events))
    order = np.argsort(np.arange(n_events) + rng.uniform(-20, 20, size=n_events), kind="stable")  # out of order
    ordinary = [Interaction(f"u{users[n]}", f"i{items[n]}", float(stamps[n]), "click", event_id=f"o{n}") for n in order]
    hostile: list[tuple[float, Interaction]] = []  # (place in the ordinary stream, event)

    def anywhere() -> float:
        return float(rng.uniform(0, n_events))

    for k in range(n_future):  # an hour to 75 years ahead
        ahead = float(np.exp(rng.uniform(np.log(3600.0), np.log(4_102_444_800.0 - now))))
        hostile.append(
            (anywhere(), Interaction(f"u{rng.integers(n_users)}", f"spam-future-{k % 3}", now + ahead, "purchase"))
        )
    for k in range(n_past):  # an archive of 2001 sent as live
        hostile.append(
            (anywhere(), Interaction(f"u{rng.integers(n_users)}", f"spam-past-{k % 3}", 1e9 + k, "purchase"))
        )
    bot_user, bot_item = "bot-1", "spam-bot"
    for k in range(bot_clicks):
        hostile.append(
            (anywhere(), Interaction(bot_user, bot_item, now - 600.0 + 590.0 * k / max(1, bot_clicks), "click"))
        )
    for n in rng.choice(n_events, size=min(retries, n_events), replace=False):
        hostile.append((float(rng.uniform(n + 0.5, n_events)), ordinary[int(n)]))  # a producer's retry, after it
    for n in rng.choice(n_events, size=min(shared_ids, n_events), replace=False):
        e = ordinary[int(n)]
        hostile.append((anywhere(), Interaction(f"x{n}", e.item_id, e.timestamp, "view", event_id=e.event_id)))
    counts = {
        "future": n_future,
        "past": n_past,
        "bot": bot_clicks,
        "retries": min(retries, n_events),
        "shared_ids": min(shared_ids, n_events),
    }
    keyed = [(float(n), e) for n, e in enumerate(ordinary)] + hostile
    keyed.sort(key=lambda pair: pair[0])  # stable: ordinary events keep their order
    mixed = [e for _, e in keyed]
    return HostileStream(ordinary, mixed, counts, bot_user, bot_item)
