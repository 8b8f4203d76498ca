"""Loading logs in time order, and reading Kafka topics (with a stand-in consumer)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka import TopicPartition

from streamrec.backtest.sources import EventLog, kind_for_topic, load_log, movielens_log, read_kafka_topic
from streamrec.eventlog import MOVIELENS_GENRES, ReadReport
from streamrec.events import ForgetUser, Interaction, ItemUpdate, Rating, encode


def test_events_are_sorted_stably_by_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    rows = [
        {"user_id": "u1", "item_id": "late", "timestamp": 30, "event_type": "purchase"},
        {"user_id": "u2", "item_id": "tie-first", "timestamp": 10},
        {"item_id": "new", "timestamp": 10, "tags": ["t"]},
        {"user_id": "u3", "item_id": "tie-second", "timestamp": 10, "rating": 4},
        {"user_id": "u4", "item_id": "early", "timestamp": 5, "event_type": "click"},
        {"user_id": "u4", "timestamp": 7, "kind": "forget"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    report = ReadReport()
    log = load_log([path], report=report)
    assert log.items.tolist() == ["early", "tie-first", "tie-second", "late"]
    assert log.event_types.tolist() == ["click", "view", "rating", "purchase"]
    assert log.weights.tolist() == [2.0, 1.0, 1.0, 5.0]
    assert log.ratings[2] == 4.0
    assert log.catalogue_items.tolist() == ["new"] and log.catalogue_positions.tolist() == [2]
    assert log.catalogue_tags == (("t",),)
    assert log.skipped == {"forget": 1, "invalid": 1}
    assert report.invalid == 1
    batch = log.interactions(1, 3)
    assert batch.users.tolist() == ["u2", "u3"] and batch.timestamps.tolist() == [10.0, 10.0]


def test_several_files_and_csv(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text("user_id,item_id,timestamp,event_type\nu1,x,3,view\nu2,y,1,click\n")
    b = tmp_path / "b.jsonl"
    b.write_text('{"user_id":"u3","item_id":"z","timestamp":2}\n')
    log = load_log([a, b])
    assert log.items.tolist() == ["y", "z", "x"]
    with pytest.raises(FileNotFoundError, match="no event log"):
        load_log([tmp_path / "missing.jsonl"])


def test_movielens_catalogue_comes_first(tmp_path: Path) -> None:
    flags = ["0"] * len(MOVIELENS_GENRES)
    flags[MOVIELENS_GENRES.index("Comedy")] = "1"
    (tmp_path / "u.item").write_text(f"1|Toy Story|01-Jan-1995||http://x|{'|'.join(flags)}\n", encoding="latin-1")
    (tmp_path / "u.data").write_text("196\t1\t3\t881250950\n186\t1\t4\t881250949\n")
    log = movielens_log(tmp_path)
    assert log.users.tolist() == ["186", "196"]
    assert log.catalogue_items.tolist() == ["1"] and log.catalogue_positions.tolist() == [0]
    assert log.catalogue_tags == (("Comedy",),)
    assert log.ratings.tolist() == [4.0, 3.0]


def test_movielens_user_features_are_the_context(tmp_path: Path) -> None:
    (tmp_path / "u.item").write_text("1|Toy Story|01-Jan-1995||http://x|" + "|".join("0" * 19) + "\n")
    (tmp_path / "u.data").write_text("196\t1\t3\t881250950\n186\t1\t4\t881250949\n")
    assert movielens_log(tmp_path).contexts is None
    (tmp_path / "u.user").write_text("196|49|M|writer|55105\n")
    log = movielens_log(tmp_path)
    assert log.contexts == (None, {"age": 49, "gender": "M", "occupation": "writer"})


def test_head_keeps_the_catalogue_before_the_cut() -> None:
    log = EventLog.from_events(
        [ItemUpdate("a", 0.0), Interaction("u", "i", 1.0), Interaction("u", "j", 2.0), ItemUpdate("b", 3.0)]
    )
    assert log.head(1).catalogue_items.tolist() == ["a"] and len(log.head(1)) == 1
    assert log.head(5).catalogue_items.tolist() == ["a", "b"]


def test_empty_log() -> None:
    log = EventLog.from_events([ForgetUser("u", 1.0)])
    assert len(log) == 0 and log.skipped == {"forget": 1}
    assert log.describe()["events"] == 0


def test_kind_for_topic() -> None:
    assert kind_for_topic("streamrec.interactions") == "interaction"
    assert kind_for_topic("streamrec-t1.items") == "item"
    assert kind_for_topic("events") is None


# -- Kafka ----------------------------------------------------------------------------


@dataclass
class Message:
    offset: int
    value: bytes
    timestamp: int  # milliseconds, as Kafka gives it


@dataclass
class OffsetAndTimestamp:
    offset: int
    timestamp: int


class FakeConsumer:
    """The part of ``KafkaConsumer`` the reader uses, over in-memory partitions.

    ``grow`` messages are appended to partition 0 as soon as the reader asks
    for the end offsets, as if producers kept writing during the backtest.
    """

    def __init__(self, topic: str, partitions: dict[int, list[Message]], grow: list[Message] | None = None) -> None:
        self.topic = topic
        self.partitions = partitions
        self.grow = grow or []
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.polls = 0

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(self.partitions) if topic == self.topic else None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.positions = {tp: 0 for tp in tps}

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {tp: len(self.partitions[tp.partition]) for tp in tps}
        self.partitions[0].extend(self.grow)
        return ends

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.positions[tp] = 0

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def offsets_for_times(self, query: dict[TopicPartition, int]) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        out: dict[TopicPartition, OffsetAndTimestamp | None] = {}
        for tp, ts in query.items():
            hit = next((m for m in self.partitions[tp.partition] if m.timestamp >= ts), None)
            out[tp] = None if hit is None else OffsetAndTimestamp(hit.offset, hit.timestamp)
        return out

    def poll(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Message]]:
        self.polls += 1
        out = {}
        for tp, pos in self.positions.items():
            if tp in self.paused:
                continue
            chunk = self.partitions[tp.partition][pos : pos + 2]  # small fetches
            if chunk:
                out[tp] = chunk
                self.positions[tp] = pos + len(chunk)
        return out

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def close(self) -> None:
        raise AssertionError("the reader must not close a consumer it was given")


def messages(events: list[Any], start_ms: int = 1_000_000) -> list[Message]:
    return [Message(j, encode(e), start_ms + 1000 * j) for j, e in enumerate(events)]


def test_kafka_reader_reads_to_the_end_offsets_captured_at_start() -> None:
    p0 = messages([Interaction("u1", f"a{j}", float(j)) for j in range(5)])
    p1 = messages([Interaction("u2", f"b{j}", float(j)) for j in range(3)])
    p1.insert(1, Message(1, b"not json", 0))
    for j, m in enumerate(p1):
        m.offset = j
    later = [Message(5, encode(Interaction("u9", "late", 99.0)), 0)]
    consumer = FakeConsumer("t.interactions", {0: p0, 1: p1}, grow=later)
    report = ReadReport()
    events = list(read_kafka_topic("kafka:9092", "t.interactions", "interaction", report=report, consumer=consumer))
    assert sorted(e.item_id for e in events) == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]
    assert (report.valid, report.invalid) == (8, 1) and "not JSON" in report.errors[0][1]
    log = EventLog.from_events(events)
    assert log.timestamps.tolist() == sorted(log.timestamps.tolist())


def test_kafka_reader_from_a_timestamp() -> None:
    p0 = messages([Rating("u", f"r{j}", 3.0, float(j)) for j in range(6)], start_ms=10_000)  # at 10, 11, ... 15 s
    p1 = messages([Rating("v", "old", 2.0, 0.0)], start_ms=1_000)  # nothing at or after 13 s
    consumer = FakeConsumer("ratings", {0: p0, 1: p1})
    events = list(read_kafka_topic("k", "ratings", "rating", from_timestamp=13.0, consumer=consumer))
    assert [e.item_id for e in events] == ["r3", "r4", "r5"]


def test_kafka_reader_missing_topic_and_empty_topic() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        list(read_kafka_topic("k", "nope", "interaction", consumer=FakeConsumer("t", {0: []})))
    consumer = FakeConsumer("t", {0: []})
    assert list(read_kafka_topic("k", "t", "interaction", consumer=consumer)) == []
    assert consumer.polls == 0
