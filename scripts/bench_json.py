"""Event decoding and list-document JSON: the standard library vs orjson vs pydantic v2, measured.

Run with the project's environment (orjson and pydantic must be installed):

    $(scripts/bootstrap.sh)/bin/python scripts/bench_json.py [--runs 7] [--events 20000]

Decoding: each variant turns the same raw Kafka values (interactions with and
without context, ratings, catalogue entries) into validated records, and must
reject the same invalid values as the project's decoder (the strictness cases
of tests/unit/test_events.py, plus lone surrogates). List documents: encoding
and decoding top-20 and top-100 lists as the worker writes and RecsClient reads
them. Prints the median of ``--runs`` runs per variant, in microseconds per item.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson

from streamrec.events import DEFAULT_LIMITS, EVENT_TYPES, InvalidEvent, decode, event_from_dict
from streamrec.store import RecList

# -- variants of decode ----------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise InvalidEvent(f"not JSON: {name} is not a JSON number")


def decode_stdlib(raw: bytes | None, kind: str) -> Any:
    """The decoder before orjson: ``json.loads`` refusing NaN/Infinity, then the same validation."""
    if raw is None:
        raise InvalidEvent("empty message (no value)")
    if len(raw) > DEFAULT_LIMITS.max_bytes:
        raise InvalidEvent("too large")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"not UTF-8: {exc.reason}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    return event_from_dict(obj, kind)  # type: ignore[arg-type]


def pydantic_decoder() -> Callable[[bytes | None, str], Any] | None:
    """pydantic v2 ``validate_json`` of strict models (returns pydantic objects, not our records).

    ``None`` when pydantic is not installed (it is not a project dependency:
    ``$(scripts/bootstrap.sh)/bin/python -m pip install pydantic`` to compare).
    """
    try:
        from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter
        from pydantic import ValidationError as PydanticError
        from pydantic.functional_validators import AfterValidator
    except ImportError:
        return None

    def _id(value: str | int) -> str:
        text = str(value)
        if not text.strip():
            raise ValueError("empty")
        if len(text) > DEFAULT_LIMITS.max_id_length:
            raise ValueError("more than the limit")
        if any(ord(c) < 32 for c in text):
            raise ValueError("contains control characters")
        return text

    def _timestamp(value: float) -> float:
        if not 0 <= value < DEFAULT_LIMITS.max_timestamp:
            raise ValueError("negative or milliseconds")
        return value

    Id = Annotated[StrictStr | StrictInt, AfterValidator(_id)]  # noqa: N806 (type aliases)
    Number = Annotated[StrictInt | StrictFloat, Field(allow_inf_nan=False)]  # noqa: N806
    Timestamp = Annotated[Number, AfterValidator(_timestamp)]  # noqa: N806
    Context = Annotated[  # noqa: N806
        dict[
            str,
            Annotated[StrictStr, Field(max_length=256)]
            | StrictBool
            | StrictInt
            | Annotated[StrictFloat, Field(allow_inf_nan=False)],
        ],
        Field(max_length=32),
    ]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    class PInteraction(Strict):
        user_id: Id
        item_id: Id
        timestamp: Timestamp
        event_type: Literal["view", "click", "add_to_cart", "purchase"] = "view"
        context: Context | None = None
        kind: Literal["interaction"] = "interaction"

    class PRating(Strict):
        user_id: Id
        item_id: Id
        rating: Annotated[Number, Field(ge=0, le=5)]
        timestamp: Timestamp
        context: Context | None = None
        kind: Literal["rating"] = "rating"

    class PItem(Strict):
        item_id: Id
        timestamp: Timestamp
        title: StrictStr | None = None
        tags: Annotated[list[Annotated[StrictStr, Field(min_length=1)]], Field(max_length=64)] = Field(
            default_factory=list
        )
        kind: Literal["item"] = "item"

    adapters = {"interaction": TypeAdapter(PInteraction), "rating": TypeAdapter(PRating), "item": TypeAdapter(PItem)}

    def decode_pydantic(raw: bytes | None, kind: str) -> Any:
        if raw is None:
            raise InvalidEvent("empty message (no value)")
        if len(raw) > DEFAULT_LIMITS.max_bytes:
            raise InvalidEvent("too large")
        try:
            return adapters[kind].validate_json(raw)
        except PydanticError as exc:
            raise InvalidEvent(str(exc.errors()[0]["msg"])) from None

    return decode_pydantic


# -- data --------------------------------------------------------------------------------------------


def events(n: int) -> list[tuple[bytes, str]]:
    out = []
    for j in range(n):
        r = j % 10
        if r < 6:
            obj: dict[str, Any] = {"user_id": f"user-{j % 5000}", "item_id": j % 20000, "timestamp": 1.7e9 + j,
                                   "event_type": EVENT_TYPES[j % 4]}  # fmt: skip
            if r < 2:
                obj["context"] = {"device": "ios", "hour": j % 24, "premium": j % 2 == 0}
            out.append((json.dumps(obj).encode(), "interaction"))
        elif r < 9:
            obj = {
                "user_id": str(j % 943),
                "item_id": str(j % 1682),
                "rating": float(j % 5 + 1),
                "timestamp": 8.8e8 + j,
            }
            out.append((json.dumps(obj).encode(), "rating"))
        else:
            obj = {"item_id": f"i{j}", "timestamp": 1.7e9, "title": f"Film {j}", "tags": ["Drama", "War"]}
            out.append((json.dumps(obj).encode(), "item"))
    return out


GOOD = {"user_id": "u1", "item_id": "i1", "timestamp": 1_700_000_000.5, "event_type": "purchase"}


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


INVALID: list[tuple[bytes | None, str]] = [
    (b"\xff\xfe", "interaction"),
    (b"{not json", "interaction"),
    (b"[1, 2]", "interaction"),
    (b"", "interaction"),
    (raw({k: v for k, v in GOOD.items() if k != "user_id"}), "interaction"),
    (raw({**GOOD, "user_id": ""}), "interaction"),
    (raw({**GOOD, "user_id": "   "}), "interaction"),
    (raw({**GOOD, "item_id": "x" * 300}), "interaction"),
    (raw({**GOOD, "item_id": None}), "interaction"),
    (raw({**GOOD, "item_id": True}), "interaction"),
    (raw({**GOOD, "item_id": 1.5}), "interaction"),
    (raw({**GOOD, "item_id": "a\nb"}), "interaction"),
    (raw({**GOOD, "timestamp": "yesterday"}), "interaction"),
    (raw({**GOOD, "timestamp": "1700000000"}), "interaction"),
    (raw({**GOOD, "timestamp": True}), "interaction"),
    (raw({**GOOD, "timestamp": -5}), "interaction"),
    (raw({**GOOD, "timestamp": 1_700_000_000_000}), "interaction"),
    (b'{"user_id":"u","item_id":"i","timestamp":NaN}', "interaction"),
    (b'{"user_id":"u","item_id":"i","timestamp":Infinity}', "interaction"),
    (b'{"user_id":"u","item_id":"i","timestamp":1e999}', "interaction"),
    (b'{"user_id":"\\ud800","item_id":"i","timestamp":1}', "interaction"),
    (raw({**GOOD, "event_type": "like"}), "interaction"),
    (raw({**GOOD, "context": [1]}), "interaction"),
    (raw({**GOOD, "context": {"a": {"b": 1}}}), "interaction"),
    (raw({**GOOD, "context": {"a": None}}), "interaction"),
    (raw({**GOOD, "kind": "rating"}), "interaction"),
    (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": 9}), "rating"),
    (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": -1}), "rating"),
    (raw({"user_id": "u", "item_id": "i", "timestamp": 1, "rating": "4"}), "rating"),
    (raw({"user_id": "u", "item_id": "i", "timestamp": 1}), "rating"),
    (raw({"item_id": "i", "timestamp": 1, "tags": "Drama"}), "item"),
    (raw({"item_id": "i", "timestamp": 1, "tags": [""]}), "item"),
    (b"[" * 5000 + b"]" * 5000, "interaction"),
    (b"x" * 20_000, "interaction"),
    (None, "interaction"),
]


def rejected(fn: Callable[[bytes | None, str], Any]) -> list[int]:
    """Indices of the INVALID cases that ``fn`` accepts (should be none)."""
    accepted = []
    for j, (payload, kind) in enumerate(INVALID):
        try:
            fn(payload, kind)
        except InvalidEvent:
            continue
        except Exception as exc:  # anything else would crash a worker
            print(f"  case {j}: {type(exc).__name__} instead of InvalidEvent")
            accepted.append(j)
            continue
        accepted.append(j)
    return accepted


def lists(n_users: int, k: int) -> list[RecList]:
    return [
        RecList(f"user-{u}", "itemknn", [f"item-{(u * 7 + j) % 50_000}" for j in range(k)],
                [1.0 / (j + 1) + u * 1e-7 for j in range(k)], computed_at=1.7e9 + u, event_ts=1.7e9 + u - 1,
                ingest_ts=1.7e9 + u - 0.5, reasons=[f"item-{(u + j) % 50_000}" for j in range(k)])
        for u in range(n_users)
    ]  # fmt: skip


def to_json_stdlib(rec: RecList) -> bytes:
    """``RecList.to_json`` before orjson."""
    doc: dict[str, Any] = {
        "user_id": rec.user_id,
        "model": rec.model,
        "items": rec.items,
        "scores": [round(s, 6) for s in rec.scores],
        "computed_at": rec.computed_at,
    }
    if rec.event_ts is not None:
        doc["event_ts"] = rec.event_ts
    if rec.ingest_ts is not None:
        doc["ingest_ts"] = rec.ingest_ts
    if rec.reasons is not None:
        doc["reasons"] = rec.reasons
    return json.dumps(doc, separators=(",", ":")).encode()


def from_json_stdlib(payload: bytes) -> RecList:
    """``RecList.from_json`` before orjson."""
    doc = json.loads(payload)
    return RecList(doc.get("user_id", ""), doc["model"], list(doc["items"]), [float(s) for s in doc["scores"]],
                   float(doc["computed_at"]), doc.get("event_ts"), doc.get("ingest_ts"), doc.get("reasons"))  # fmt: skip


def median_us(fn: Callable[[], object], n_items: int, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n_items * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    data = events(args.events)
    variants: dict[str, Callable[[bytes | None, str], Any]] = {
        "json + hand-written (before)": decode_stdlib,
        "orjson + hand-written (now)": decode,  # type: ignore[dict-item]
    }
    decode_pydantic = pydantic_decoder()
    if decode_pydantic is None:
        print("pydantic is not installed: its row is left out (pip install pydantic to compare)")
    else:
        variants["pydantic v2 validate_json"] = decode_pydantic
    print(f"decoding {len(data):,} events, median of {args.runs} runs (us/event); invalid cases: {len(INVALID)}")
    for name, fn in variants.items():
        assert all(fn(p, k) is not None for p, k in data[:50])
        us = median_us(lambda fn=fn: [fn(p, k) for p, k in data], len(data), args.runs)
        wrong = rejected(fn)
        print(f"  {name:<32} {us:7.2f} us/event   accepts {len(wrong)} invalid case(s) {wrong if wrong else ''}")
    for k in (20, 100):
        docs = lists(5000, k)
        payloads = [d.to_json() for d in docs]
        assert all(orjson.loads(to_json_stdlib(d)) == json.loads(p) for d, p in zip(docs, payloads, strict=True))
        assert all(from_json_stdlib(p) == RecList.from_json(p) for p in payloads[:100])
        enc_std = median_us(lambda docs=docs: [to_json_stdlib(d) for d in docs], len(docs), args.runs)
        enc_or = median_us(lambda docs=docs: [d.to_json() for d in docs], len(docs), args.runs)
        dec_std = median_us(lambda p=payloads: [from_json_stdlib(x) for x in p], len(docs), args.runs)
        dec_or = median_us(lambda p=payloads: [RecList.from_json(x) for x in p], len(docs), args.runs)
        print(f"top-{k} list documents ({len(payloads[0])} bytes), median of {args.runs} runs (us/list):")
        print(f"  encode: json {enc_std:6.2f}  orjson {enc_or:6.2f}  ({enc_std / enc_or:.1f}x)")
        print(f"  decode: json {dec_std:6.2f}  orjson {dec_or:6.2f}  ({dec_std / dec_or:.1f}x)")
    assert math.isfinite(enc_or)


if __name__ == "__main__":
    main()
