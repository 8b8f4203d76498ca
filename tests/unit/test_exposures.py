"""Exposures: the record's format, the asynchronous log, and the join with later events (no services)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from producers.exposures import ExposureLog, encode_exposure
from streamrec.events import Exposure, ForgetUser, Interaction, InvalidEvent, decode
from streamrec.exposures import ExposureJoin
from streamrec.settings import Settings
from streamrec.store import RecList, RecsClient


def _exposure(user: str, items: str, ts: float, variant: str = "a", **kw: Any) -> Exposure:
    return Exposure(user, tuple(items), ts, variant, **kw)


def test_click_through_and_conversion_are_counted_once_per_exposure_within_the_window() -> None:
    join = ExposureJoin(window=60.0)
    counts = join.observe(
        [
            _exposure("u", "abc", 0.0),
            _exposure("v", "abc", 0.0),
            _exposure("w", "abc", 0.0, variant="b"),
            Interaction("u", "a", 5.0, "click"),
            Interaction("u", "c", 6.0, "click"),  # the same exposure: clicked once
            Interaction("v", "b", 100.0, "click"),  # after the window
            Interaction("w", "z", 5.0, "click"),  # not shown
            Interaction("w", "c", 7.0, "purchase"),
        ]
    )
    assert counts["shown:a|-|exposures"] == 2 and counts["shown:a|-|clicked"] == 1
    assert counts["shown:a|p0|events"] == 1 and counts["shown:a|p2|events"] == 1
    assert counts["shown:b|-|converted"] == 1 and "shown:b|-|clicked" not in counts
    assert counts["shown:a|p0|items"] == 2 and counts["shown:a|-|items"] == 6


def test_an_event_before_its_exposure_is_joined_when_the_exposure_comes() -> None:
    join = ExposureJoin(window=60.0)
    first = join.observe([Interaction("u", "b", 10.0, "click")])
    assert first == {}
    later = join.observe([_exposure("u", "abc", 9.0)])
    assert later["shown:a|-|clicked"] == 1 and later["shown:-|-|late"] == 1 and later["shown:a|p1|events"] == 1


def test_duplicates_unknown_users_and_items_are_counted_not_refused() -> None:
    join = ExposureJoin()
    counts = join.observe(
        [_exposure("u", "ab", 1.0, exposure_id="x"), _exposure("u", "ab", 1.0, exposure_id="x")],
        knows_user=lambda u: False,
        knows_item=lambda i: i == "a",
    )
    assert counts["shown:-|-|duplicate"] == 1 and counts["shown:a|-|exposures"] == 1
    assert counts["shown:a|-|unknown_user"] == 1 and counts["shown:a|-|unknown_items"] == 1


def test_the_experiment_names_the_variant_of_a_record_that_names_none_and_forget_drops_the_user() -> None:
    join = ExposureJoin()
    counts = join.observe([Exposure("u", ("a",), 1.0)], variant_of=lambda u: "control")
    assert counts["shown:control|-|exposures"] == 1
    join.observe([ForgetUser("u", 2.0)])
    assert join.observe([Interaction("u", "a", 3.0, "click")]) == {}


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b'{"user_id": "u", "item_ids": [], "timestamp": 1}', "item_ids"),
        (b'{"user_id": "u", "item_ids": "abc", "timestamp": 1}', "item_ids"),
        (b'{"user_id": "u", "item_ids": ["a"], "timestamp": 1, "first_position": -1}', "first_position"),
        (b'{"item_ids": ["a"], "timestamp": 1}', "user_id"),
        (b'{"user_id": "u", "item_ids": ["a"]}', "timestamp"),
    ],
)
def test_malformed_exposure_records_are_refused_with_the_reason(record: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        decode(record, "exposure")


def test_the_documented_record_decodes() -> None:
    raw = (
        b'{"user_id": "42", "item_ids": ["a", "b", "c"], "timestamp": 1733230000.25, '
        b'"variant": "knn", "first_position": 20, "exposure_id": "page-7f3e"}'
    )
    e = decode(raw, "exposure")
    assert (e.user_id, e.item_ids, e.variant, e.first_position, e.exposure_id) == (
        "42", ("a", "b", "c"), "knn", 20, "page-7f3e"
    )  # fmt: skip
    assert decode(encode_exposure("42", ["a"], timestamp=5.0), "exposure") == Exposure("42", ("a",), 5.0)


def test_recording_never_blocks_and_a_full_buffer_drops_and_counts() -> None:
    """A sending process that reads nothing (a broker far away): the pipe and the buffer fill, nothing waits."""
    stalled = [sys.executable, "-c", "import time; time.sleep(30)"]
    log = ExposureLog(Settings(topic_prefix="p"), max_buffer=10_000, command=stalled)
    try:
        items = [f"item-{n:05d}" for n in range(200)]  # about 3 KB a record
        started = time.perf_counter()
        results = [log.record("u", items) for _ in range(1000)]
        assert time.perf_counter() - started < 1.0  # 3 MB offered to a 1 MB pipe: recording did not wait
        assert results.count(False) == log.dropped > 0 and log.recorded == results.count(True) > 100
        assert not log.flush(timeout=0.2)  # nothing answers: a flush gives up, it does not hang
    finally:
        log._proc.kill()
        log.close(timeout=1)


def test_recs_client_records_a_read_with_its_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class _Log:
        def record(self, *args: Any) -> bool:
            calls.append(args)
            return True

    monkeypatch.setattr("streamrec.store.sync_redis", lambda url, **kw: None)  # no read is made
    client = RecsClient("redis://127.0.0.1:1/0", exposures=_Log())
    assert client.record_exposure("u", RecList("u", "itemknn", ["a", "b"], [2.0, 1.0], variant="knn"))
    assert calls == [("u", ["a", "b"], "knn", 0, None)]
    assert not RecsClient("redis://127.0.0.1:1/0").record_exposure("u", ["a"])


def test_a_lazy_join_keeps_nothing_until_exposures_flow() -> None:
    join = ExposureJoin(lazy=True)
    assert join.observe([Interaction("u", "b", 10.0, "click")]) == {} and not join._events
    counts = join.observe([Interaction("u", "b", 10.0, "click"), _exposure("u", "abc", 9.0)])  # same batch: joined
    assert counts["shown:a|-|clicked"] == 1 and counts["shown:-|-|late"] == 1
