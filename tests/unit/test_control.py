"""What controls the served lists, without Kafka or Redis: event validation, the pipeline's new lists."""

from __future__ import annotations

import pytest

from streamrec.backtest.sources import EventLog
from streamrec.events import Exclusion, Interaction, InvalidEvent, ItemUpdate, decode, encode, to_interactions
from streamrec.pipeline import RecommendationPipeline


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"item_id": "a", "timestamp": 1, "available": "no"}', "available: must be true or false"),
        (b'{"item_id": "a", "timestamp": 1, "expires_at": "soon"}', "expires_at: must be a number"),
        (b'{"item_id": "a", "timestamp": 1, "expires_at": 1e12}', "expires_at: 1000000000000.0 is not seconds"),
        (b'{"item_id": "a", "timestamp": 1, "tags": ["a\\u001fb"]}', "tags: a tag longer than"),
    ],
)
def test_malformed_availability_is_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode(raw, "item")


def test_exclusions_round_trip_and_are_checked() -> None:
    event = decode(b'{"user_id": "u", "item_ids": ["a", 7], "timestamp": 1, "action": "remove"}', "exclusion")
    assert event == Exclusion("u", ("a", "7"), 1.0, "remove")
    assert decode(encode(event), "exclusion") == event
    with pytest.raises(InvalidEvent, match="item_ids: must be a non-empty list"):
        decode(b'{"user_id": "u", "item_ids": [], "timestamp": 1}', "exclusion")
    with pytest.raises(InvalidEvent, match="action: 'drop' is not one of add, remove"):
        decode(b'{"user_id": "u", "item_ids": ["a"], "timestamp": 1, "action": "drop"}', "exclusion")


def test_not_interested_is_an_interaction_no_model_learns() -> None:
    event = decode(b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "not_interested"}', "interaction")
    assert isinstance(event, Interaction) and event.is_feedback
    with pytest.raises(ValueError, match="negative feedback"):
        to_interactions([event])
    with pytest.raises(InvalidEvent, match="event_type: 'meh' is not one of"):
        decode(b'{"user_id": "u", "item_id": "a", "timestamp": 1, "event_type": "meh"}', "interaction")
    log = EventLog.from_events([Interaction("u", "a", 1.0), event, Exclusion("u", ("b",), 2.0)])
    assert len(log) == 1 and log.skipped == {"not_interested_or_exclusion": 2}  # the backtest learns neither


def _clicks() -> list[Interaction]:
    events = [Interaction(f"u{n % 7}", f"i{n % 5}", float(n), "click") for n in range(60)]
    return events + [Interaction("fan", "hot", 100.0 + n, "purchase") for n in range(3)]


def test_new_lists_leave_out_unavailable_and_excluded_items() -> None:
    pipe = RecommendationPipeline.from_names(["popularity", "itemknn"], "itemknn", top_n=6)  # every item
    out = pipe.process([ItemUpdate("hot", 0.0, available=False), *_clicks()], now=1000.0)
    assert all("hot" not in items for recs in out.lists.values() for items in recs.items)
    assert "hot" not in out.fallback.items[0] and len(out.fallback.items[0]) == 5
    pipe.user_exclusions.add("u1", ["i0", "i1"], kind="not_interested")
    out = pipe.process([Interaction("u1", "i2", 200.0, "click")], now=1000.0)
    assert not {"i0", "i1"} & set(out.lists["popularity"].items[0])
    # shown again, then expiring at 2,000: served before, not after
    pipe.process([ItemUpdate("hot", 1.0, expires_at=2000.0)], now=1000.0)
    before = pipe.process([Interaction("u3", "i2", 300.0)], now=1500.0)
    after = pipe.process([Interaction("u3", "i3", 301.0)], now=2000.0)
    assert "hot" in before.fallback.items[0] and "hot" not in after.fallback.items[0]


def test_category_lists_hold_their_available_items_by_popularity() -> None:
    pipe = RecommendationPipeline.from_names(["popularity"], "popularity", top_n=2)
    catalogue = [ItemUpdate(f"i{n}", 0.0, tags=("even" if n % 2 == 0 else "odd",)) for n in range(5)]
    clicks = [Interaction(f"u{n}", f"i{n % 5}", float(n), "click") for n in range(40)]
    clicks += [Interaction("x", "i4", 50.0 + n, "purchase") for n in range(1)]
    out = pipe.process(
        [*catalogue, ItemUpdate("i2", 0.0, tags=("even",), available=False), *clicks], with_categories=True, now=100.0
    )
    assert out.categories is not None
    assert out.categories["even"].items[0][0] == "i4" and "i2" not in out.categories["even"].items[0]
    assert set(out.categories["odd"].items[0]) <= {"i1", "i3"}
    docs = out.category_docs(5.0)
    assert docs["even"].tags == [["even"]] * len(docs["even"].items)
