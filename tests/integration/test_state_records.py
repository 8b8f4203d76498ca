"""The state topics on a real broker: increments larger than one Kafka record travel in chunks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from models.sharing import ItemDelta
from stream_app.state import UPDATES_CHUNK, StateWriter, read_updates
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
