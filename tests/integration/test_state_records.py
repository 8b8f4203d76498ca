"""The state topics on a real broker: increments larger than one Kafka record travel in chunks."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from models.sharing import ItemDelta
from stream_app.state import (
    FENCE_AFTER,
    TXN_HEADER,
    UPDATES_CHUNK,
    PartitionState,
    StateWriter,
    read_partitions_state,
    read_snapshot,
    read_updates,
    write_snapshot,
)
from streamrec.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_an_increment_larger_than_a_record_is_written_in_chunks_and_read_whole(isolated_settings) -> None:
    settings = isolated_settings
    ensure_topics(settings)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((5 * UPDATES_CHUNK // 256, 64)).astype(
        np.float32
    )  # 20 MiB: over the 16 MiB a record may hold
    small = np.ones(3)

    async def write() -> None:
        writer = StateWriter(settings, "w-test")
        await writer.start()
        try:
            await writer.commit([{"two_tower": ItemDelta("two_tower", ["a"], {"rows": big})}], {}, {}, {})
            await writer.commit([{"popularity": ItemDelta("popularity", ["b"], {"_acc": small})}], {}, {}, {})
        finally:
            await writer.stop()

    asyncio.run(write())
    records = asyncio.run(read_updates(settings))
    assert [header["sequence"] for header, _ in records] == [1, 2]
    assert np.array_equal(records[0][1]["two_tower"].arrays["rows"], big)
    assert np.array_equal(records[1][1]["popularity"].arrays["_acc"], small)


def test_a_restore_fences_a_transaction_a_dead_worker_left_open_and_reads_the_commits_behind_it(
    isolated_settings,
) -> None:
    """A worker killed mid-commit leaves its transaction open: the next owner fences it instead of waiting.

    Until it is aborted, a ``read_committed`` reader stops at its first record and
    misses every later owner's commit; the broker would abort it only after the
    transaction timeout (a minute here). The restore reads the open transaction's
    writer from its records' header, fences it, and restores the later commit.
    """
    from aiokafka import AIOKafkaProducer

    settings = isolated_settings
    ensure_topics(settings)
    changelog = settings.state_topic("user-state")
    topic = settings.topic("interactions")
    dead_id = f"{settings.app_id}-dead"

    async def scenario() -> tuple[PartitionState, float, bool]:
        dead = AIOKafkaProducer(
            transactional_id=dead_id,
            transaction_timeout_ms=60_000,
            enable_idempotence=True,
            bootstrap_servers=settings.kafka_bootstrap_servers,
        )
        await dead.start()
        await dead.begin_transaction()
        await dead.send_and_wait(changelog, key=b"ann", value=b'{"models": {}}', partition=0,
                                 headers=[(TXN_HEADER, dead_id.encode())])  # fmt: skip
        live = StateWriter(settings, "w-live", slot="live")  # a later owner of partition 0 commits after it
        await live.start()
        try:
            await live.commit([], {0: {"bob": b'{"models": {}}'}}, {0: {topic: 7}}, {})
        finally:
            await live.stop()
        started = time.monotonic()
        state = (await read_partitions_state(settings, [0]))[0]
        took = time.monotonic() - started
        try:  # the dead worker's producer is fenced: ending its transaction fails
            await dead.commit_transaction()
            fenced = False
        except Exception:
            fenced = True
        await dead.stop()
        return state, took, fenced

    state, took, fenced = asyncio.run(scenario())
    assert fenced
    assert set(state.users) == {"bob"}  # the later commit, not the aborted record
    assert state.offsets == {topic: 7}
    assert took < FENCE_AFTER + 10, f"the restore took {took:.1f} s"


def test_a_snapshot_read_while_a_newer_one_is_written_is_the_last_complete_one(isolated_settings) -> None:
    """The topic's end may fall between a newer snapshot's first chunk and its manifest: the older one is read.

    The newer snapshot's chunk replaces the older one's under the same key
    before the newer manifest comes; judging the older manifest by it made a
    joining worker start without a snapshot (seen once under load).
    """
    from aiokafka import AIOKafkaProducer

    settings = isolated_settings
    ensure_topics(settings)
    topic = settings.state_topic("item-state")
    acc = np.arange(3.0)

    def manifest(snapshot_id: str, chunks: int, offset: int) -> dict[str, object]:
        return {"snapshot_id": snapshot_id, "origin": "w", "sequence": offset, "updates_offset": offset,
                "chunks": chunks, "at": 0.0, "item_state": settings.item_state}  # fmt: skip

    async def scenario() -> list[int | None]:
        writer = StateWriter(settings, "w-snap")
        await writer.start()
        plain = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await plain.start()
        seen: list[int | None] = []
        try:
            chunks = write_snapshot({"popularity": ItemDelta("popularity", ["a", "b", "c"], {"_acc": acc})})
            await writer.send_snapshot(chunks, manifest("w-1", len(chunks), 11))
            await plain.send_and_wait(topic, key=b"chunk-00000", value=b"w-2\npart of a newer one", partition=0)
            for _ in range(2):
                found = await read_snapshot(settings)
                seen.append(None if found is None else found[0]["updates_offset"])
                if found is not None:
                    assert np.array_equal(found[1]["popularity"].arrays["_acc"], acc)
                await writer.send_snapshot(chunks, manifest("w-3", len(chunks), 33))  # a whole newer one
        finally:
            await plain.stop()
            await writer.stop()
        return seen

    assert asyncio.run(scenario()) == [11, 33]
