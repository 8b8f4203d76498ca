"""Records, wire format and strict validation."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.events import (
    ForgetUser,
    Interaction,
    InvalidEvent,
    ItemUpdate,
    Limits,
    Rating,
    decode,
    encode,
    to_interactions,
)

GOOD = {
    "user_id": "u1",
    "item_id": "i1",
    "timestamp": 1_700_000_000.5,
    "event_type": "purchase",
    "context": {"device": "ios"},
}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    "event",
    [
        Interaction("u1", "i1", 1.0, "click", {"device": "web", "hour": 3}),
        Rating("u1", "i1", 4.5, 2.0),
        ItemUpdate("i9", 3.0, "Title", ("Drama", "War")),
        ForgetUser("u1", 4.0),
    ],
)
def test_round_trip(event) -> None:
    assert decode(encode(event), event.kind) == event


def test_ids_are_strings_and_integers_are_accepted() -> None:
    event = decode(raw({**GOOD, "user_id": 7, "item_id": 12}), "interaction")
    assert (event.user_id, event.item_id) == ("7", "12")
    assert event.key == "7"


@pytest.mark.parametrize(
    ("payload", "kind", "reason"),
    [
        (b"\xff\xfe", "interaction", "not UTF-8"),
        (b"{not json", "interaction", "not JSON"),
        (b"[1, 2]", "interaction", "must be a JSON object"),
        (b"", "interaction", "not JSON"),
        (raw({k: v for k, v in GOOD.items() if k != "user_id"}), "interaction", "user_id: missing"),
        (raw({**GOOD, "user_id": ""}), "interaction", "user_id: empty"),
        (raw({**GOOD, "user_id": "   "}), "interaction", "user_id: empty"),
        (raw({**GOOD, "item_id": "x" * 300}), "interaction", "more than the limit"),
        (raw({**GOOD, "item_id": None}), "interaction", "item_id: must be a string or an integer"),
        (raw({**GOOD, "item_id": True}), "interaction", "item_id: must be a string or an integer"),
        (raw({**GOOD, "item_id": "a\nb"}), "interaction", "control characters"),
        (raw({**GOOD, "timestamp": "yesterday"}), "interaction", "timestamp: must be a number"),
        (raw({**GOOD, "timestamp": -5}), "interaction", "timestamp: negative"),
        (raw({**GOOD, "timestamp": 1_700_000_000_000}), "interaction", "milliseconds"),
        (b'{"user_id":"u","item_id":"i","timestamp":NaN}', "interaction", "NaN is not a JSON number"),
        (b'{"user_id":"u","item_id":"i","timestamp":Infinity}', "interaction", "Infinity is not a JSON number"),
        (b'{"user_id":"u","item_id":"i","timestamp":1e999}', "interaction", "not JSON: number is infinity"),
        (b'{"user_id":"\\ud800","item_id":"i","timestamp":1}', "interaction", "not JSON: no low surrogate"),
        (b'{"user_id":"u","item_id":"i","timestamp":1,"context":{"d":"\\udfff"}}', "interaction", "not JSON"),
        (b"[" * 3000 + b"]" * 3000, "interaction", "not JSON"),
        (raw({**GOOD, "event_type": "like"}), "interaction", "event_type: 'like' is not one of"),
        (raw({**GOOD, "context": [1]}), "interaction", "context: must be an object"),
        (raw({**GOOD, "context": {"a": {"b": 1}}}), "interaction", "context.a"),
        (raw({**GOOD, "kind": "rating"}), "interaction", "kind: 'rating' sent where"),
        (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 9}), "rating", "outside [0.0, 5.0]"),
        (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": -1}), "rating", "outside"),
        (raw({"user_id": "u", "item_id": "i", "timestamp": 1}), "rating", "rating: missing"),
        (raw({"item_id": "i", "timestamp": 1, "tags": "Drama"}), "item", "tags: must be a list"),
        (b"x" * 20_000, "interaction", "more than the limit of 16384"),
        (None, "interaction", "empty message"),
        (raw({**GOOD, "event_id": ""}), "interaction", "event_id: empty"),
        (raw({**GOOD, "event_id": "e" * 257}), "interaction", "event_id: 257 characters, more than the limit of 256"),
        (raw({**GOOD, "event_id": "e\x001"}), "interaction", "event_id: contains control characters"),
        (raw({**GOOD, "event_id": 1.5}), "interaction", "event_id: must be a string or an integer, got float"),
        (raw({**GOOD, "event_id": False}), "interaction", "event_id: must be a string or an integer, got bool"),
        (raw({**GOOD, "event_id": ["e1"]}), "interaction", "event_id: must be a string or an integer, got list"),
        (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 4, "event_id": {}}), "rating", "event_id:"),
    ],
)
def test_invalid_events_say_why(payload, kind, reason) -> None:
    with pytest.raises(InvalidEvent, match=None) as info:
        decode(payload, kind)
    assert reason in str(info.value)


@pytest.mark.parametrize(
    "event",
    [
        Interaction("u1", "i1", 1.0, "click", event_id="e-1"),
        Rating("u1", "i1", 4.5, 2.0, {"device": "ios"}, event_id="42"),
    ],
)
def test_event_id_round_trips(event) -> None:
    assert decode(encode(event), event.kind) == event
    assert json.loads(encode(event))["event_id"] == event.event_id


def test_event_id_is_optional_and_an_event_without_it_encodes_as_before() -> None:
    event = decode(raw(GOOD), "interaction")
    assert event.event_id is None
    assert encode(event) == (
        b'{"user_id":"u1","item_id":"i1","timestamp":1700000000.5,"event_type":"purchase",'
        b'"context":{"device":"ios"},"kind":"interaction"}'
    )
    assert (
        encode(Rating("u", "i", 4.0, 1.0))
        == b'{"user_id":"u","item_id":"i","rating":4.0,"timestamp":1.0,"kind":"rating"}'
    )
    assert decode(raw({**GOOD, "event_id": None}), "interaction").event_id is None  # null: absent
    # positional construction as before: the new field comes after the old ones
    assert Interaction("u", "i", 1.0, "view", None) == Interaction("u", "i", 1.0)


def test_event_ids_are_strings_and_integers_are_accepted() -> None:
    assert decode(raw({**GOOD, "event_id": 123}), "interaction").event_id == "123"
    rating = decode(raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 4, "event_id": "r-9"}), "rating")
    assert rating.event_id == "r-9"
    batch = to_interactions([decode(raw({**GOOD, "event_id": 1}), "interaction")])
    assert batch.users.tolist() == ["u1"]  # model batches do not carry ids


def test_rating_range_is_configurable() -> None:
    payload = raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 9})
    assert decode(payload, "rating", Limits(max_rating=10)).rating == 9.0


def test_to_interactions_weights_and_ratings() -> None:
    batch = to_interactions(
        [
            Interaction("u", "a", 1.0, "view"),
            Interaction("u", "b", 2.0, "purchase", {"device": "tv"}),
            Rating("v", "a", 3.0, 3.0),
        ]
    )
    assert batch.users.tolist() == ["u", "u", "v"]
    assert batch.weights.tolist() == [1.0, 5.0, 1.0]
    assert math.isnan(batch.ratings[0]) and batch.ratings[2] == 3.0
    assert batch.contexts == (None, {"device": "tv"}, None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300), kind=st.sampled_from(["interaction", "rating", "item", "forget"]))
def test_fuzz_bytes_never_crash(payload: bytes, kind: str) -> None:
    try:
        decode(payload, kind)  # type: ignore[arg-type]
    except InvalidEvent as exc:
        reason = str(exc)
        assert reason, "a rejection must say why"


@settings(max_examples=300, deadline=None)
@given(
    obj=st.fixed_dictionaries(
        {},
        optional={
            "user_id": json_values,
            "item_id": json_values,
            "timestamp": json_values,
            "rating": json_values,
            "event_type": json_values,
            "context": json_values,
            "tags": json_values,
            "kind": json_values,
            "event_id": json_values,
        },
    ),
    kind=st.sampled_from(["interaction", "rating", "item", "forget"]),
)
def test_fuzz_objects_either_valid_or_rejected_with_reason(obj: dict, kind: str) -> None:
    try:
        event = decode(json.dumps(obj).encode(), kind)  # type: ignore[arg-type]
    except InvalidEvent as exc:
        reason = str(exc)
        assert reason, "a rejection must say why"
    else:
        assert event.kind == kind
        assert decode(encode(event), kind) == event
