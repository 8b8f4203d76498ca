"""Admission checks: event time against arrival, per-user rate, duplicate event ids."""

from __future__ import annotations

import json

import pytest

from streamrec.admission import EventIdFilter, EventTimeGuard, RateLimiter
from streamrec.events import ForgetUser, Interaction, ItemUpdate, Rating

NOW = 1_764_000_000.0
YEAR_2100 = 4_102_444_800.0


# -- EventTimeGuard ---------------------------------------------------------------------


def test_a_timestamp_far_ahead_is_refused_with_what_was_wrong_and_the_limit() -> None:
    guard = EventTimeGuard(max_skew=300.0)
    reason = guard.check(YEAR_2100, NOW)
    assert reason == (
        "timestamp: 4102444800 is 2,338,444,800 s ahead of its arrival 1764000000, more than the allowed skew of 300 s"
    )
    assert guard.counts == {"future": 1}


def test_timestamps_within_the_skew_and_old_ones_are_kept_by_default() -> None:
    guard = EventTimeGuard(max_skew=300.0)
    assert guard.check(NOW + 300.0, NOW) == NOW + 300.0  # the limit itself is allowed
    assert guard.check(NOW + 299.5, NOW) == NOW + 299.5
    assert guard.check(881_250_949.0, NOW) == 881_250_949.0  # MovieLens, 1997: replays are old by design
    assert isinstance(guard.check(NOW + 300.5, NOW), str)
    assert guard.counts == {"future": 1}


def test_clamp_uses_the_arrival_time_and_counts_it() -> None:
    guard = EventTimeGuard(max_skew=60.0, future="clamp")
    assert guard.check(YEAR_2100, NOW) == NOW
    assert guard.check(NOW + 10.0, NOW) == NOW + 10.0
    assert guard.counts == {"clamped": 1}


def test_max_age_refuses_old_events_with_the_limit() -> None:
    guard = EventTimeGuard(max_age=3600.0)
    assert guard.check(NOW - 3600.0, NOW) == NOW - 3600.0
    reason = guard.check(NOW - 7200.25, NOW)
    assert reason == (
        "timestamp: 1763992799.75 is 7,200.25 s before its arrival 1764000000, more than the allowed age of 3,600 s"
    )
    assert guard.counts == {"too_old": 1}


def test_apply_to_each_kind_of_event() -> None:
    guard = EventTimeGuard(future="clamp")
    click = Interaction("ann", "tea", YEAR_2100, "click", {"device": "ios"}, event_id="e1")
    clamped = guard.apply(click, NOW)
    assert clamped == Interaction("ann", "tea", NOW, "click", {"device": "ios"}, event_id="e1")
    rating = Rating("ann", "tea", 4.0, NOW - 10.0)
    assert guard.apply(rating, NOW) is rating  # unchanged: the same object
    assert guard.apply(ItemUpdate("tea", YEAR_2100, "Tea", ("drink",)), NOW).timestamp == NOW
    refusing = EventTimeGuard()
    assert isinstance(refusing.apply(Rating("ann", "tea", 4.0, YEAR_2100), NOW), str)
    assert isinstance(refusing.apply(ItemUpdate("tea", YEAR_2100), NOW), str)
    assert refusing.counts == {"future": 2}


def test_a_forget_request_is_never_refused_for_its_time() -> None:
    guard = EventTimeGuard(max_age=60.0)
    assert guard.apply(ForgetUser("ann", YEAR_2100), NOW) == ForgetUser("ann", NOW)
    old = ForgetUser("ann", 1.0)
    assert guard.apply(old, NOW) is old
    assert guard.counts == {"clamped": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_skew": -1.0}, "max_skew must be >= 0"),
        ({"max_skew": float("nan")}, "max_skew must be a finite number"),
        ({"future": "drop"}, "future must be 'deadletter' or 'clamp'"),
        ({"max_age": 0.0}, "max_age must be > 0"),
    ],
)
def test_guard_settings_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventTimeGuard(**kwargs)


# -- RateLimiter ------------------------------------------------------------------------


def test_a_burst_up_to_the_limit_passes_then_the_rate_holds() -> None:
    limiter = RateLimiter(max_events=10, per_seconds=60.0)
    results = [limiter.check("bot", NOW) for _ in range(15)]
    assert results[:10] == [None] * 10
    assert results[10:] == ["rate limit: user 'bot' is over 10 events per 60 s"] * 5
    assert limiter.refused == 5
    # refused events take no token: after 6 s exactly one is back (10 per 60 s)
    assert limiter.check("bot", NOW + 6.0) is None
    assert limiter.check("bot", NOW + 6.0) is not None
    # sustained at the rate, nothing is refused
    assert all(limiter.check("bot", NOW + 6.0 + 6.0 * n) is None for n in range(1, 50))


def test_users_are_limited_independently() -> None:
    limiter = RateLimiter(max_events=2, per_seconds=1.0)
    assert [limiter.check(u, NOW) for u in ("a", "b", "a", "b")] == [None] * 4
    assert limiter.check("a", NOW) is not None and limiter.check("b", NOW) is not None
    assert limiter.check("c", NOW) is None


def test_a_flood_of_1500_clicks_in_a_minute_is_mostly_refused() -> None:
    limiter = RateLimiter(max_events=30, per_seconds=60.0)
    admitted = sum(limiter.check("bot", NOW + n * 0.04) is None for n in range(1500))  # 60 s
    assert 30 <= admitted <= 61  # the burst, plus what 60 s refill


def test_arrival_going_backwards_refills_nothing() -> None:
    limiter = RateLimiter(max_events=1, per_seconds=10.0)
    assert limiter.check("u", NOW) is None
    assert limiter.check("u", NOW - 100.0) is not None
    assert limiter.check("u", NOW + 5.0) is not None  # half a token since NOW
    assert limiter.check("u", NOW + 10.0) is None


def test_rate_limiter_memory_is_bounded_by_least_recent_use() -> None:
    limiter = RateLimiter(max_events=1, per_seconds=3600.0, max_users=3)
    for n in range(1000):
        limiter.check(f"u{n}", NOW)
        assert len(limiter) <= 3
    assert limiter.check("u999", NOW) is not None  # still tracked: refused
    assert limiter.check("u0", NOW) is None  # forgotten long ago: a full bucket again
    assert limiter.forget_user("u0") and not limiter.forget_user("u0")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 1.0), "max_events must be a positive int"),
        ((1.5, 1.0), "max_events must be a positive int"),
        ((5, 0.0), "per_seconds must be > 0"),
        ((5, 1.0, 0), "max_users must be a positive int"),
    ],
)
def test_rate_limiter_settings_are_checked(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(*args)


# -- EventIdFilter ----------------------------------------------------------------------


def test_a_retried_batch_is_admitted_once() -> None:
    ids = EventIdFilter()
    batch = [("ann", f"e{n}", NOW + n) for n in range(20)] + [("bob", "e1", NOW)]
    first = [ids.admit(*event) for event in batch]
    again = [ids.admit(*event) for event in batch]
    assert all(first) and not any(again)
    assert ids.duplicates == len(batch)


def test_events_without_an_id_are_always_admitted_and_cost_nothing() -> None:
    ids = EventIdFilter()
    assert all(ids.admit("ann", None, NOW) for _ in range(5))
    assert len(ids) == 0 and ids.n_ids == 0


def test_integer_and_string_ids_are_the_same_id() -> None:
    ids = EventIdFilter()
    assert ids.admit("ann", 7, NOW)
    assert not ids.admit("ann", "7", NOW)


def test_ids_leave_the_window_of_the_users_newest_event() -> None:
    ids = EventIdFilter(window=100.0)
    assert ids.admit("ann", "old", 1000.0)
    assert not ids.admit("ann", "old", 1000.0)
    assert ids.admit("ann", "new", 1100.0)  # "old" is exactly at the window's edge: still held
    assert not ids.admit("ann", "old", 1000.0)
    assert ids.admit("ann", "newer", 1100.5)
    assert ids.admit("ann", "old", 1000.0)  # now out of the window: new again
    assert ids.export_users(["ann"])["ann"]["ids"] == ["new", "newer", "old"]


def test_ids_per_user_are_bounded_oldest_first() -> None:
    ids = EventIdFilter(window=1e9, max_ids_per_user=50)
    for n in range(10_000):
        assert ids.admit("bot", f"e{n}", NOW + n)
        assert ids.n_ids <= 50
    record = ids.export_users(["bot"])["bot"]
    assert record["ids"] == [f"e{n}" for n in range(9950, 10_000)]
    assert not ids.admit("bot", "e9999", NOW + 9999)
    assert ids.admit("bot", "e0", NOW)  # fell off the cap


def test_export_import_round_trip_through_json() -> None:
    source = EventIdFilter(window=3600.0, max_ids_per_user=10)
    for n in range(30):
        source.admit(f"u{n % 3}", f"e{n}", NOW + n)
    records = json.loads(json.dumps(source.export_users(["u0", "u1", "u2", "nobody"])))
    assert sorted(records) == ["u0", "u1", "u2"]
    assert set(records["u0"]) == {"ids", "ts"} and len(records["u0"]["ids"]) == len(records["u0"]["ts"]) == 10
    target = EventIdFilter(window=3600.0, max_ids_per_user=10)
    target.import_users(records)
    assert target.export_users(["u0", "u1", "u2"]) == source.export_users(["u0", "u1", "u2"])
    for n in range(30):  # the same decisions on both: every id is a duplicate
        assert not target.admit(f"u{n % 3}", f"e{n}", NOW + n)
        assert not source.admit(f"u{n % 3}", f"e{n}", NOW + n)
    assert target.admit("u0", "e-new", NOW + 31) and source.admit("u0", "e-new", NOW + 31)


def test_import_replaces_a_users_ids_and_respects_this_filters_cap() -> None:
    small = EventIdFilter(window=3600.0, max_ids_per_user=2)
    small.admit("ann", "mine", NOW)
    small.import_users({"ann": {"ids": ["a", "b", "c"], "ts": [NOW, NOW + 1, NOW + 2]}})
    assert small.export_users(["ann"]) == {"ann": {"ids": ["b", "c"], "ts": [NOW + 1, NOW + 2]}}
    assert small.admit("ann", "mine", NOW)  # replaced, not merged
    small.import_users({"ann": {"ids": [], "ts": []}})
    assert len(small) == 0
    with pytest.raises(ValueError, match="2 ids but 1 timestamps"):
        small.import_users({"bob": {"ids": ["x", "y"], "ts": [NOW]}})


def test_drop_forget_and_expire_users() -> None:
    ids = EventIdFilter(window=100.0)
    for user in ("a", "b", "c", "d"):
        ids.admit(user, "e", NOW)
    ids.admit("d", "later", NOW + 500.0)
    assert ids.drop_users(["a", "b", "nobody"]) == 2
    assert ids.forget_user("c") and not ids.forget_user("c")
    assert ids.admit("a", "e", NOW)  # dropped: its ids went with it
    assert ids.expire(NOW + 550.0) == ["a"]  # d keeps "later"
    assert ids.export_users(["a", "d"]) == {"d": {"ids": ["later"], "ts": [NOW + 500.0]}}


def test_id_filter_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="window must be > 0"):
        EventIdFilter(window=0.0)
    with pytest.raises(ValueError, match="max_ids_per_user must be a positive int"):
        EventIdFilter(max_ids_per_user=0)
