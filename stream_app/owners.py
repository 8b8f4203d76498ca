"""Item state owned by item: the owner of an item part merges every worker's increments of its items.

With ``STREAMREC_ITEM_STATE=owned`` a worker's commit does not send its item
increments to every other worker. It cuts them by item part
(:meth:`models.base.OnlineRecommender.split_item_delta`, part ``p`` = the items
whose id hashes to ``p``) and writes each piece to partition ``p`` of
``{prefix}.item-increments``, in the commit's transaction. The worker that owns
partition ``p`` of the event topics owns item part ``p`` too (:class:`ItemOwners`):

- it reads partition ``p`` of the increments topic (``read_committed``) from
  the offset its group (``{app_id}-owners``) committed;
- every ``STREAMREC_CHECKPOINT_INTERVAL`` it merges what it read
  (:meth:`~models.base.OnlineRecommender.merge_item_deltas`) into one record
  on ``{prefix}.item-merged``, whose header says up to which commit of each
  worker it holds (``included``), and commits its read offset **in the same
  transaction** (transactional id ``{app_id}-owner-{p}``: a new owner of ``p``
  fences the old one, and takes over from the last merge exactly);
- every worker reads the merged records and adds each one less its own pieces
  that it holds (:meth:`~models.base.OnlineRecommender.negate_item_delta`): its
  own increments took effect when it learned them.

So a worker applies one merged record per item part and interval, whose size
is bounded by the items that changed in that part, whatever the number of
workers; the merging itself is spread over the owners. Owners keep no state
beyond what they read since their last merge: failover is a re-read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from models import OnlineRecommender
from models.sharing import ItemDelta
from stream_app.state import (
    TRANSACTION_TIMEOUT_MS,
    Reassembler,
    _caused_by,
    _client_kwargs,
    _seek_start,
    pack_deltas,
    split_record,
    stop_reader,
    unpack_deltas,
)
from streamrec.settings import Settings

__all__ = ["HeldPieces", "ItemOwners", "merge_pieces", "owners_group", "read_unmerged"]

log = logging.getLogger("streamrec.owners")


def owners_group(settings: Settings) -> str:
    """The consumer group whose committed offsets say how far each part's owner merged."""
    return f"{settings.app_id}-owners"


def merge_pieces(
    models: Mapping[str, OnlineRecommender], pieces: Iterable[Mapping[str, ItemDelta]]
) -> dict[str, ItemDelta]:
    """Every model's pieces merged into one delta per model (models not in ``models`` dropped).

    Examples
    --------
    >>> import numpy as np, models
    >>> pop = {"popularity": models.create("popularity", half_life=None)}
    >>> piece = {"popularity": ItemDelta("popularity", ["a"], {"_acc": np.array([1.0])})}
    >>> merge_pieces(pop, [piece, piece])["popularity"].arrays["_acc"].tolist()
    [2.0]
    """
    by_model: dict[str, list[ItemDelta]] = {}
    for piece in pieces:
        for name, delta in piece.items():
            if name in models:
                by_model.setdefault(name, []).append(delta)
    return {name: models[name].merge_item_deltas(deltas) for name, deltas in by_model.items()}


def merge_tick(now: float, interval: float) -> int:
    """The number of the merge interval ``now`` (epoch seconds) is in: every part's owner merges when it changes.

    The owners' clocks agree (to the clock skew), so the merges of every part
    land on the merged topic together once an interval, and a worker applies
    them in one fetch instead of one apply per part at scattered times.

    Examples
    --------
    >>> merge_tick(10.2, 1.0), merge_tick(10.99, 1.0), merge_tick(11.0, 1.0), merge_tick(10.2, 0.5)
    (10, 10, 11, 20)
    """
    return int(now // interval)


class _PartOwner:
    """The owner of one item part: reads its increments, publishes their merge with its read offset."""

    def __init__(self, settings: Settings, models: Mapping[str, OnlineRecommender], part: int) -> None:
        self.settings = settings
        self.models = models
        self.part = part
        self.merges = 0
        self.bytes_sent = 0
        self.pieces_read = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._producer: Any = None

    def start(self) -> None:
        """Begin owning the part (in a task: a rebalance callback does not wait for the broker)."""
        self._task = asyncio.create_task(self._main())

    async def _main(self) -> None:
        while True:
            try:
                await self._open()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("starting the owner of item part %d failed; retrying", self.part)
                await self._close()
                await asyncio.sleep(1.0)
        await self._run()

    async def _open(self) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        settings = self.settings
        self._tp = TopicPartition(settings.state_topic("item-increments"), self.part)
        # the producer first: its start fences a former owner of the part and settles that owner's open merge,
        # so the offset read next is where that owner's last merge ended
        self._producer = AIOKafkaProducer(
            transactional_id=f"{settings.app_id}-owner-{self.part}",
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            **_client_kwargs(settings),
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            group_id=owners_group(settings),
            enable_auto_commit=False,
            isolation_level="read_committed",
            **_client_kwargs(settings),
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        committed = await self._consumer.committed(self._tp)
        if committed is None:
            await _seek_start(self._consumer, self._tp)
        else:
            self._consumer.seek(self._tp, committed)
        log.info("owning item part %d from offset %s of the increments topic", self.part, committed)

    async def _close(self) -> None:
        consumer, producer, self._consumer, self._producer = self._consumer, self._producer, None, None
        for client in (consumer, producer):
            if client is not None:
                try:
                    await client.stop()  # an open merge is aborted; the next owner re-reads its increments
                except Exception:
                    log.exception("closing a client of the owner of item part %d failed", self.part)

    async def _run(self) -> None:
        consumer, tp = self._consumer, self._tp
        joiner = Reassembler()
        held: list[dict[str, ItemDelta]] = []
        included: dict[str, int] = {}
        oldest: float | None = None
        next_offset: int | None = None
        interval = self.settings.checkpoint_interval
        last = merge_tick(time.time(), interval)
        while True:
            try:
                # pieces are needed only when a merge is due: no wake-ups in between (10 a second cost each owner
                # about 1% of a core whatever the events)
                due = (last + 1) * interval - time.time() if held else 1.0
                batch = await consumer.getmany(tp, timeout_ms=max(20, int(due * 1000)), max_records=500)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading part %d of the increments topic failed; retrying", self.part)
                await asyncio.sleep(1.0)
                continue
            for message in batch.get(tp, []):
                value = joiner.feed(message.value)
                if value is None:
                    continue  # a chunk: the offset to commit stays before the record's first chunk until it is whole
                next_offset = message.offset + 1
                try:
                    header, deltas = unpack_deltas(value)
                except Exception:
                    log.exception("an unreadable record at %s@%d of the increments topic: skipped", tp, message.offset)
                    continue
                held.append(deltas)
                self.pieces_read += 1
                origin = str(header.get("origin"))
                included[origin] = max(included.get(origin, 0), int(header.get("sequence", 0)))
                at = float(header.get("at", time.time()))
                oldest = at if oldest is None else min(oldest, at)
            if next_offset is None or merge_tick(time.time(), interval) <= last:
                continue
            try:
                await self._publish(held, included, oldest, next_offset)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                from aiokafka.errors import ProducerFenced

                if _caused_by(exc, ProducerFenced):
                    log.info("item part %d has a new owner: this one stops", self.part)
                    return
                log.exception("merging item part %d failed; the merge is retried with what follows", self.part)
                await asyncio.sleep(1.0)
                continue  # nothing was committed: what was read is merged again with what follows
            held, included, oldest, next_offset = [], {}, None, None
            last = merge_tick(time.time(), interval)

    async def _publish(
        self, held: list[dict[str, ItemDelta]], included: dict[str, int], oldest: float | None, next_offset: int
    ) -> None:
        """One transaction: the merge of ``held`` on the merged topic, and the read offset for the owners' group."""
        merged = await asyncio.to_thread(merge_pieces, self.models, held)
        self.merges += 1
        meta = {"at": oldest or time.time(), "part": self.part, "included": included}
        value = await asyncio.to_thread(pack_deltas, f"owner-{self.part}", self.merges, merged, meta)
        topic = self.settings.state_topic("item-merged")
        async with self._producer.transaction():
            if merged:
                for chunk in split_record(value, f"owner-{self.part}-{time.time_ns()}-{len(value)}"):
                    await self._producer.send(topic, value=chunk, key=f"{self.part}".encode(), partition=0)
                self.bytes_sent += len(value)
            await self._producer.send_offsets_to_transaction({self._tp: next_offset}, owners_group(self.settings))

    async def stop(self) -> None:
        await stop_reader(self._task, None)
        await self._close()


class ItemOwners:
    """The item parts this worker owns: those of the event partitions assigned to it."""

    def __init__(self, settings: Settings, models: Mapping[str, OnlineRecommender]) -> None:
        self.settings = settings
        self.models = models
        self.owners: dict[int, _PartOwner] = {}
        self._gone: dict[int, dict[str, float]] = {}  # counters of parts handed on

    async def assign(self, parts: Iterable[int]) -> None:
        """Own exactly ``parts``: stop the owners of the others, start the new ones."""
        wanted = set(parts)
        for part in sorted(set(self.owners) - wanted):
            await self._stop(part)
        for part in sorted(wanted - set(self.owners)):
            owner = _PartOwner(self.settings, self.models, part)
            owner.start()
            self.owners[part] = owner

    async def _stop(self, part: int) -> None:
        owner = self.owners.pop(part)
        await owner.stop()
        gone = self._gone.setdefault(part, {})
        for key, value in owner_counters(owner).items():
            gone[key] = gone.get(key, 0) + value

    async def stop(self) -> None:
        for part in sorted(self.owners):
            await self._stop(part)

    def counters(self) -> dict[str, float]:
        """Merges written, their bytes and the pieces read, by the owners this worker ran."""
        total: dict[str, float] = {"owner_merges": 0, "owner_bytes": 0, "owner_pieces": 0}
        for counts in [*(owner_counters(o) for o in self.owners.values()), *self._gone.values()]:
            for key, value in counts.items():
                total[key] += value
        return total


def owner_counters(owner: _PartOwner) -> dict[str, float]:
    return {"owner_merges": owner.merges, "owner_bytes": owner.bytes_sent, "owner_pieces": owner.pieces_read}


class HeldPieces:
    """Pieces of increments that an item state holds and that merged records will hold too.

    A worker's own pieces (it learned them before it sent them), and those a
    snapshot it started from held. A merged record whose ``included`` reaches
    a held piece's commit is applied less that piece (:meth:`less`).

    Examples
    --------
    >>> import numpy as np, models
    >>> pop = {"popularity": models.create("popularity", half_life=None)}
    >>> mine = {"popularity": ItemDelta("popularity", ["a"], {"_acc": np.array([1.0])})}
    >>> held = HeldPieces()
    >>> held.hold("w1", {3: mine}, sequence=7)
    >>> merged = {"popularity": ItemDelta("popularity", ["a"], {"_acc": np.array([5.0])})}
    >>> held.less(pop, merged, {"part": 3, "included": {"w1": 7, "w2": 2}})["popularity"][0].arrays["_acc"].tolist()
    [4.0]
    >>> len(held)
    0
    >>> mine = HeldPieces(own="w1")
    >>> mine.hold("w1", {3: {"popularity": merged["popularity"]}}, sequence=8)
    >>> mine.less(pop, merged, {"part": 3, "included": {"w1": 8}}), len(mine)
    ({}, 0)
    """

    PREFIX = "pending/"

    def __init__(self, own: str | None = None) -> None:
        #: this worker's origin: it holds every piece it sent, so a merge of its pieces alone adds nothing here
        self.own = own
        self.by_origin: dict[str, dict[int, list[tuple[int, dict[str, ItemDelta]]]]] = {}

    def __len__(self) -> int:
        return sum(len(queue) for parts in self.by_origin.values() for queue in parts.values())

    def hold(self, origin: str, pieces: Mapping[int, Mapping[str, ItemDelta]], sequence: int) -> None:
        """The item state holds ``pieces`` (by part) of commit ``sequence`` of ``origin``."""
        for part, piece in pieces.items():
            queue = self.by_origin.setdefault(origin, {}).setdefault(part, [])
            if queue and queue[-1][0] == sequence:
                queue[-1][1].update(piece)
            else:
                queue.append((sequence, dict(piece)))
                queue.sort(key=lambda entry: entry[0])

    def unhold(self, origin: str, sequence: int) -> None:
        """Forget the pieces of a commit that failed (the next commit sends them again)."""
        for queue in self.by_origin.get(origin, {}).values():
            queue[:] = [entry for entry in queue if entry[0] != sequence]

    def take(self, origin: str, part: int, sequence: int) -> dict[str, ItemDelta] | None:
        """The held pieces of one commit and part, no longer held (``None``: not held)."""
        queue = self.by_origin.get(origin, {}).get(part, [])
        for n, (held, piece) in enumerate(queue):
            if held == sequence:
                del queue[n]
                return piece
        return None

    def less(
        self, models: Mapping[str, OnlineRecommender], deltas: Mapping[str, ItemDelta], header: Mapping[str, Any]
    ) -> dict[str, list[ItemDelta]]:
        """What to apply, per model and in order, for a merged record: it less the held pieces it includes.

        Those pieces are then no longer held.
        """
        part = int(header.get("part", -1))
        included = header.get("included") or {}
        taken: list[dict[str, ItemDelta]] = []
        for origin, upto in included.items():
            queue = self.by_origin.get(origin, {}).get(part)
            while queue and queue[0][0] <= int(upto):
                taken.append(queue.pop(0)[1])
        if self.own is not None and set(included) == {self.own}:
            return {}  # the merge of this worker's own pieces alone: it holds all of them
        out: dict[str, list[ItemDelta]] = {}
        for name, delta in deltas.items():
            model = models.get(name)
            own = [piece[name] for piece in taken if name in piece]
            out[name] = model.net_item_deltas(delta, own) if model is not None else [delta]
        return out

    def entries(self) -> dict[str, ItemDelta]:
        """The held pieces as snapshot entries named ``pending/{origin}/{part}/{sequence}/{model}``."""
        return {
            f"{self.PREFIX}{origin}/{part}/{sequence}/{name}": delta
            for origin, parts in self.by_origin.items()
            for part, queue in parts.items()
            for sequence, piece in queue
            for name, delta in piece.items()
        }

    def load(self, name: str, delta: ItemDelta) -> bool:
        """Hold a snapshot entry of :meth:`entries` (``False``: ``name`` is not one)."""
        if not name.startswith(self.PREFIX):
            return False
        origin, part, sequence, model = name[len(self.PREFIX) :].split("/", 3)
        self.hold(origin, {int(part): {model: delta}}, int(sequence))
        return True


async def read_unmerged(settings: Settings) -> list[tuple[dict[str, Any], dict[str, ItemDelta]]]:
    """Every committed piece of the increments topic that no owner has merged yet (after its group's offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(settings.state_topic("item-increments"), p) for p in range(settings.topic_partitions)]
    consumer = AIOKafkaConsumer(
        group_id=owners_group(settings),
        enable_auto_commit=False,
        isolation_level="read_committed",
        **_client_kwargs(settings),
    )
    await consumer.start()
    out = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await _seek_start(consumer, tp)
            else:
                consumer.seek(tp, committed)
        joiners = {tp: Reassembler() for tp in tps}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for tp, messages in batch.items():
                for message in messages:
                    value = joiners[tp].feed(message.value)
                    if value is not None:
                        out.append(unpack_deltas(value))
    finally:
        await consumer.stop()
    return out
