"""Model state that moves through Kafka: per-partition user state, shared item increments, item snapshots.

Three topics beside the event topics (names from :class:`~streamrec.settings.Settings`):

- ``{prefix}.user-state``: a compacted **changelog** with as many partitions
  as the event topics. Partition ``p`` holds, keyed by user id, the newest
  state of every user whose events arrive on partition ``p`` of the event
  topics (a JSON document with one record per model, see
  :meth:`models.sharing.UserStates.records`), and under the key
  ``__offsets__`` the event offsets that state includes. A worker assigned
  partition ``p`` reads it before it processes that partition's events.
- ``{prefix}.model-updates``: one partition of **item-side increments**
  (:class:`models.sharing.ItemDelta`, one record per worker and commit, all
  models in it). Every worker reads it whole and adds the other workers'
  increments, so item statistics reflect every partition's events.
- ``{prefix}.item-state``: a compacted topic holding the newest **snapshot**
  of the item-side state (chunks and a manifest), written by the worker that
  owns partition 0, so that a worker that starts does not replay the updates
  topic from its beginning.

With ``STREAMREC_ITEM_STATE=owned`` the increments go instead to
``{prefix}.item-increments`` (cut by item part, one partition per part) and
every worker reads the part owners' merges from ``{prefix}.item-merged``
(see :mod:`stream_app.owners`); a snapshot then also holds the pieces its
writer held that no merge had returned yet.

A commit (:meth:`StateWriter.commit`) writes a worker's increments, the states
of the users its batches touched and the offsets markers, and commits the
event offsets to the consumer group, in **one Kafka transaction**: readers use
``read_committed``, so after a crash the changelog, the increments the others
applied and the committed offsets all end at the same events. Nothing is
learned twice and nothing is lost.

Models know nothing of this module; it moves what they expose through the
sharing methods of :class:`models.base.OnlineRecommender`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from models.sharing import ItemDelta
from streamrec.settings import Settings

__all__ = [
    "OFFSETS_KEY",
    "Reassembler",
    "StateWriter",
    "UpdatesFollower",
    "WorkerFenced",
    "pack_deltas",
    "read_partition_state",
    "read_partitions_state",
    "read_snapshot",
    "split_record",
    "stop_reader",
    "unpack_deltas",
    "write_snapshot",
]

log = logging.getLogger("streamrec.state")

#: Changelog key of a partition's offsets marker.
OFFSETS_KEY = b"__offsets__"
#: A transaction left open by a worker that died (and does not come back) is aborted after this.
TRANSACTION_TIMEOUT_MS = 15_000
#: Header naming the transactional id that wrote a changelog record (a new owner fences it when it stays open).
TXN_HEADER = "streamrec-txn"
#: Seconds a restore waits for an open transaction on the changelog before it fences its writer: a commit
#: takes well under a second, so one open this long belongs to a worker that died mid-commit (or hangs).
FENCE_AFTER = 5.0
#: Records a follower of the updates (or merged) topic takes per fetch.
_FOLLOW_RECORDS = 50
_CHUNK = 512 * 1024


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **settings.security.aiokafka_config()}


async def _seek_start(consumer: Any, *tps: Any) -> None:
    """Seek to the first offset each partition holds (``seek_to_beginning`` is lazy and, with
    ``read_committed``, ``position()`` right after it answered the end offset: a reader saw nothing)."""
    first = await consumer.beginning_offsets(list(tps))
    for tp in tps:
        consumer.seek(tp, first[tp])


def pack_deltas(origin: str, sequence: int, deltas: Mapping[str, ItemDelta], meta: Mapping[str, Any]) -> bytes:
    """One updates-topic record: every model's delta, the origin worker and its commit sequence.

    Layout: the number of parts (8 bytes), each part's size (8 bytes each), then
    the parts: a JSON header, and one :meth:`ItemDelta.to_bytes` per model.

    Examples
    --------
    >>> from models.sharing import ItemDelta
    >>> blob = pack_deltas("w1", 3, {"popularity": ItemDelta("popularity", ["a"], {"_acc": np.ones(1)})}, {"at": 1.0})
    >>> header, deltas = unpack_deltas(blob)
    >>> header["origin"], header["sequence"], deltas["popularity"].items
    ('w1', 3, ['a'])
    """
    header = {"origin": origin, "sequence": sequence, "models": list(deltas), **meta}
    parts = [orjson.dumps(header)] + [d.to_bytes(compress=False) for d in deltas.values()]  # zlib cost the loop 9%
    sizes = np.array([len(parts), *(len(p) for p in parts)], dtype="<i8")
    return sizes.tobytes() + b"".join(parts)


def unpack_deltas(data: bytes) -> tuple[dict[str, Any], dict[str, ItemDelta]]:
    """The inverse of :func:`pack_deltas`."""
    if len(data) < 8:
        raise ValueError("not an updates record")
    n = int(np.frombuffer(data[:8], dtype="<i8")[0])
    if n < 1 or 8 * (n + 1) > len(data):
        raise ValueError("not an updates record")
    sizes = np.frombuffer(data[8 : 8 * (n + 1)], dtype="<i8").tolist()
    if 8 * (n + 1) + sum(sizes) != len(data):
        raise ValueError("a truncated updates record")
    offset = 8 * (n + 1)
    header = orjson.loads(data[offset : offset + sizes[0]])
    offset += sizes[0]
    deltas: dict[str, ItemDelta] = {}
    for name, size in zip(header["models"], sizes[1:], strict=True):
        deltas[name] = ItemDelta.from_bytes(data[offset : offset + size])
        offset += size
    return header, deltas


#: Updates records larger than this go out as several chunk records in the same transaction.
UPDATES_CHUNK = 4 * 1024 * 1024
_CHUNK_MAGIC = b"SRCHUNK1"


def split_record(value: bytes, record_id: str, limit: int = UPDATES_CHUNK) -> list[bytes]:
    """``value`` as one record, or as chunk records that :class:`Reassembler` joins (over ``limit`` bytes).

    An SGD-trained model's increments cover every item its steps touched, so a
    commit's record grows with the catalogue; the topic takes records of at most
    16 MiB. The chunks of one record are written in one transaction, so a
    ``read_committed`` reader sees all of them or none.

    Examples
    --------
    >>> parts = split_record(b"x" * 10, "w1-3", limit=4)
    >>> len(parts)
    3
    >>> joiner = Reassembler()
    >>> [joiner.feed(p) for p in parts][-1]
    b'xxxxxxxxxx'
    """
    if len(value) <= limit:
        return [value]
    pieces = [value[i : i + limit] for i in range(0, len(value), limit)]
    out = []
    for index, piece in enumerate(pieces):
        head = orjson.dumps({"id": record_id, "index": index, "count": len(pieces)})
        out.append(_CHUNK_MAGIC + len(head).to_bytes(4, "little") + head + piece)
    return out


class Reassembler:
    """Joins the chunk records of :func:`split_record`; whole records pass straight through."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, bytes]] = {}

    def feed(self, value: bytes) -> bytes | None:
        """The whole record once its last chunk arrived (``value`` itself if it is not a chunk), else ``None``."""
        if not value.startswith(_CHUNK_MAGIC):
            return value
        size = int.from_bytes(value[8:12], "little")
        head = orjson.loads(value[12 : 12 + size])
        parts = self._parts.setdefault(head["id"], {})
        parts[int(head["index"])] = value[12 + size :]
        if len(parts) < int(head["count"]):
            return None
        del self._parts[head["id"]]
        return b"".join(parts[i] for i in range(int(head["count"])))


@dataclass
class PartitionState:
    """What a changelog partition holds: the newest record per user, and the offsets marker."""

    users: dict[str, dict[str, Any]]
    offsets: dict[str, int]  # event topic -> next offset not in the state


#: How long a restore waits for a transaction on the changelog to be settled before reading it: longer than
#: the broker takes to abort the open transaction of a worker that died mid-commit (the transaction timeout,
#: then the broker's sweep for timed-out transactions, every 10 s by default; 1 s on the local broker).
SETTLE_SECONDS = TRANSACTION_TIMEOUT_MS / 1000 + 20.0


async def _settled_ends(
    consumer: Any, everything: Any, tps: list[Any], wait: float, settings: Settings | None = None
) -> dict[Any, int]:
    """The ``read_committed`` end of each partition, once no transaction on it is still being settled.

    A commit's transaction is acknowledged to the worker that wrote it before
    the broker has written its commit markers to every partition; until it
    has, a ``read_committed`` reader stops before the transaction's records.
    A new owner that read the changelog then would miss the previous owner's
    last commit (its revocation commit: the users and offsets marker it
    handed over) while the group's offsets or the item increments of the same
    transaction may already show. So the reader waits (at most ``wait``
    seconds) until the stable end reaches the log end: the markers are
    written. A worker that died mid-commit leaves its transaction open until
    the broker aborts it (or the worker's restart fences it), and until then
    the stable end stays at that transaction's first record: every commit
    after it, by the workers that owned the partition since, is invisible
    too. Reading then would restore the users as they were before the dead
    worker's commit and lose what the later owners learned (a soak run lost
    315 user events so), so the reader waits for the abort as well.

    The broker aborts such a transaction only after the transaction timeout
    (and its next sweep: 10 s apart by default), during which the partition's
    users get no new lists. So after :data:`FENCE_AFTER` seconds the reader
    fences the transaction's writer, named by the header of the record at the
    stable end (``settings`` given): starting a producer with that
    transactional id aborts it at once. A live worker fenced so (a commit that
    hung that long) gets ``ProducerFenced`` at its next commit and stops
    (:meth:`StateWriter.commit`).
    """
    deadline = time.monotonic() + wait
    fence_at = time.monotonic() + FENCE_AFTER
    while True:
        stable = await consumer.end_offsets(tps)
        high = await everything.end_offsets(tps)
        open_tps = [tp for tp in tps if stable[tp] < high[tp]]
        if not open_tps:
            return stable
        if time.monotonic() >= deadline:
            log.warning(
                "changelog partitions %s still hold an open transaction after %.0f s: read up to its start "
                "(commits after it are not restored)",
                sorted(tp.partition for tp in open_tps),
                wait,
            )
            return stable
        if settings is not None and time.monotonic() >= fence_at:
            await _fence_open(settings, everything, {tp: stable[tp] for tp in open_tps})
            fence_at = time.monotonic() + FENCE_AFTER
        await asyncio.sleep(0.05)


async def _fence_open(settings: Settings, reader: Any, starts: Mapping[Any, int]) -> None:
    """Fence the writers of the transactions open at ``starts`` (the first record of each, read uncommitted)."""
    from aiokafka import AIOKafkaProducer

    writers: set[str] = set()
    reader.assign(list(starts))
    for tp, offset in starts.items():
        reader.seek(tp, offset)
    batch = await reader.getmany(*starts, timeout_ms=2000, max_records=len(starts) * 50)
    for tp, messages in batch.items():
        first = next((m for m in messages if m.offset == starts[tp]), None)
        if first is not None:
            writers.update(v.decode() for k, v in (first.headers or ()) if k == TXN_HEADER)
    for writer in sorted(writers):
        producer = AIOKafkaProducer(transactional_id=writer, **_client_kwargs(settings))
        try:
            await producer.start()  # InitProducerId: the broker aborts the writer's open transaction
        finally:
            await producer.stop()
        log.warning("fenced %s: its transaction stayed open on the changelog for %.0f s", writer, FENCE_AFTER)


async def read_partitions_state(
    settings: Settings, partitions: Iterable[int], timeout: float = 60.0, settle: float = SETTLE_SECONDS
) -> dict[int, PartitionState]:
    """Read partitions ``partitions`` of the changelog to their end (committed records only), with one consumer.

    Only each user's newest record is decoded: the log holds every commit's
    copy until compaction removes the older ones.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    tps = [TopicPartition(settings.state_topic("user-state"), p) for p in wanted]
    kwargs = {"group_id": None, "enable_auto_commit": False, **_client_kwargs(settings)}
    consumer = AIOKafkaConsumer(isolation_level="read_committed", **kwargs)
    everything = AIOKafkaConsumer(**kwargs)
    await asyncio.gather(consumer.start(), everything.start())
    raw: dict[int, dict[bytes, bytes | None]] = {p: {} for p in wanted}
    markers: dict[int, bytes] = {}
    try:
        consumer.assign(tps)
        end = await _settled_ends(consumer, everything, tps, settle, settings)
        await _seek_start(consumer, *tps)
        deadline = time.monotonic() + timeout
        todo = [tp for tp in tps if end[tp] > 0]
        while todo:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {todo} took over {timeout:.0f} s")
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=20_000)
            for tp, messages in batch.items():
                users = raw[tp.partition]
                for message in messages:
                    if message.key == OFFSETS_KEY:
                        markers[tp.partition] = message.value
                    else:
                        users[message.key] = message.value  # None: a tombstone, the user was forgotten
            todo = [tp for tp in todo if await consumer.position(tp) < end[tp]]
    finally:
        await asyncio.gather(consumer.stop(), everything.stop())
    out = {}
    for p in wanted:
        users = {key.decode(): orjson.loads(value) for key, value in raw[p].items() if value is not None}
        offsets = orjson.loads(markers[p]) if p in markers else {}
        out[p] = PartitionState(users, {t: int(o) for t, o in offsets.items()})
    return out


async def read_partition_state(settings: Settings, partition: int, timeout: float = 60.0) -> PartitionState:
    """Read partition ``partition`` of the changelog to its end (committed records only)."""
    return (await read_partitions_state(settings, [partition], timeout))[partition]


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it was raised from or during is a ``kind``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, kind):
            return True
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return False


class WorkerFenced(RuntimeError):
    """This worker's transactions were fenced: what it learned since its last commit belongs to other workers now.

    It must not write state (or lists) again; the worker stops at once and its
    partitions' owners replay what it had not committed.
    """


class StateWriter:
    """A transactional producer: increments, user states and event offsets committed together.

    ``worker_id`` names this process's increments; the transactional id is
    the worker's *slot* (:func:`worker_slot`, kept in its state folder), so a
    worker restarted on the same folder fences the transaction its killed
    predecessor left open at once, instead of after the transaction timeout
    (during which ``read_committed`` readers of the changelog and the updates
    topic wait). Every changelog record names that id in a header, so that
    a partition's next owner can fence a transaction left open by a worker
    that never comes back (see :func:`_settled_ends`).
    """

    def __init__(self, settings: Settings, worker_id: str, slot: str | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.slot = slot or worker_id
        self.transactional_id = f"{settings.app_id}-{self.slot}"
        self._headers = [(TXN_HEADER, self.transactional_id.encode())]
        self.sequence = 0
        self.bytes_sent = 0  # increments, user states and markers written so far
        self.increment_bytes = 0  # of which item increments (every other worker, or a part's owner, reads them)
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        self._producer = AIOKafkaProducer(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            **_client_kwargs(self.settings),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def commit(
        self,
        deltas: list[Mapping[str, ItemDelta]],
        users: Mapping[int, Mapping[str, bytes | None]],
        markers: Mapping[int, Mapping[str, int]],
        offsets: Mapping[tuple[str, int], int],
        pieces: Mapping[int, Mapping[str, ItemDelta]] | None = None,
    ) -> int:
        """In one transaction: the deltas, the user records per changelog partition, the markers, the offsets.

        ``deltas`` is a list of per-model increments (those of earlier commits
        that failed, then this one's); each non-empty one is a record.
        ``pieces`` (item state owned by item) maps an item part to every
        model's increments of that part's items: a record on that partition
        of the increments topic, for the part's owner to merge.
        Returns the commit's sequence number (0 when there was nothing to write).
        Raises :class:`WorkerFenced` when another worker fenced this one.
        """
        from aiokafka.errors import ProducerFenced

        batches = [{n: d for n, d in b.items() if not d.is_empty()} for b in deltas]
        batches = [b for b in batches if b]
        parts = {p: {n: d for n, d in b.items() if not d.is_empty()} for p, b in (pieces or {}).items()}
        parts = {p: b for p, b in parts.items() if b}
        if not batches and not parts and not any(users.values()) and not offsets:
            return 0
        self.sequence += 1
        try:
            await self._transaction(batches, users, markers, offsets, parts)
        except Exception as exc:
            if not _caused_by(exc, ProducerFenced):
                raise
            raise WorkerFenced(
                f"transactional id {self.transactional_id} was fenced: another worker took partitions of this one "
                "while its commit was open"
            ) from exc
        return self.sequence

    async def _transaction(
        self,
        batches: list[dict[str, ItemDelta]],
        users: Mapping[int, Mapping[str, bytes | None]],
        markers: Mapping[int, Mapping[str, int]],
        offsets: Mapping[tuple[str, int], int],
        pieces: Mapping[int, Mapping[str, ItemDelta]] | None = None,
    ) -> None:
        from aiokafka import TopicPartition

        producer, settings, headers = self._producer, self.settings, self._headers
        changelog = settings.state_topic("user-state")
        records = [("model-updates", 0, batch) for batch in batches]
        records += [("item-increments", p, piece) for p, piece in sorted((pieces or {}).items())]
        async with producer.transaction():
            for kind, partition, batch in records:
                meta = {"at": time.time(), "part": partition}
                value = await asyncio.to_thread(pack_deltas, self.worker_id, self.sequence, batch, meta)
                self.bytes_sent += len(value)
                self.increment_bytes += len(value)
                for part in split_record(value, f"{self.worker_id}-{self.sequence}-{partition}-{len(value)}"):
                    await producer.send(settings.state_topic(kind), value=part, key=self.worker_id.encode(),
                                        partition=partition)  # fmt: skip
            for partition, records in users.items():  # record batches: far cheaper than a send per user
                batch = producer.create_batch()
                for user, value in records.items():
                    self.bytes_sent += len(value or b"")
                    key = user.encode()
                    if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send it
                        await producer.send_batch(batch, changelog, partition=partition)
                        batch = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=None, headers=headers)
                if batch.record_count():
                    await producer.send_batch(batch, changelog, partition=partition)
            for partition, marker in markers.items():
                await producer.send(
                    changelog, key=OFFSETS_KEY, value=orjson.dumps(dict(marker)), partition=partition, headers=headers
                )
            if offsets:
                await producer.send_offsets_to_transaction(
                    {TopicPartition(t, p): o for (t, p), o in offsets.items()}, settings.app_id
                )

    async def send_snapshot(self, chunks: list[bytes], manifest: dict[str, Any]) -> None:
        """Write a whole item-state snapshot (chunks, then the manifest) in one transaction."""
        topic = self.settings.state_topic("item-state")
        snapshot_id = manifest["snapshot_id"]
        async with self._producer.transaction():
            for n, chunk in enumerate(chunks):
                key = f"chunk-{n:05d}".encode()
                await self._producer.send(topic, key=key, value=snapshot_id.encode() + b"\n" + chunk, partition=0)
            await self._producer.send(topic, key=b"manifest", value=orjson.dumps(manifest), partition=0)


def write_snapshot(deltas: Mapping[str, ItemDelta]) -> list[bytes]:
    """Every model's whole item state (``export_items``) as chunks for :meth:`StateWriter.send_snapshot`."""
    blob = pack_deltas("snapshot", 0, deltas, {})
    return [blob[a : a + _CHUNK] for a in range(0, len(blob), _CHUNK)] or [b""]


async def read_snapshot(settings: Settings) -> tuple[dict[str, Any], dict[str, ItemDelta]] | None:
    """The newest complete snapshot: its manifest and every model's item state, or ``None``.

    A snapshot is complete when every chunk its manifest names, with its id,
    came before the manifest. The newest complete one is kept as it is read:
    the end of the topic may fall inside the transaction of a newer snapshot
    whose first chunks replace an older snapshot's under the same keys before
    the newer manifest comes, and the older one must not be judged by them.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(settings.state_topic("item-state"), 0)
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, isolation_level="read_committed", **_client_kwargs(settings)
    )
    await consumer.start()
    latest: dict[bytes, bytes] = {}  # chunk key -> its newest value
    complete: tuple[dict[str, Any], list[bytes]] | None = None
    incomplete: bytes | None = None  # the id of the newest manifest whose chunks were not all there
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await _seek_start(consumer, tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for message in batch.get(tp, []):
                if message.key != b"manifest":
                    latest[message.key] = message.value
                    continue
                manifest = orjson.loads(message.value)
                chunks = _snapshot_chunks(manifest, latest)
                if chunks is None:
                    incomplete = manifest["snapshot_id"].encode()
                else:
                    complete, incomplete = (manifest, chunks), None
    finally:
        await consumer.stop()
    if incomplete is not None:
        log.warning(
            "item snapshot %s is incomplete; %s",
            incomplete,
            "using the one before it" if complete else "starting from the updates topic",
        )
    if complete is None:
        return None
    manifest, chunks = complete
    _, deltas = unpack_deltas(b"".join(chunks))
    return manifest, deltas


def _snapshot_chunks(manifest: Mapping[str, Any], latest: Mapping[bytes, bytes]) -> list[bytes] | None:
    """The manifest's chunks (without their id prefix) among the newest values of ``latest``, or ``None``."""
    prefix = manifest["snapshot_id"].encode() + b"\n"
    chunks = []
    for n in range(manifest["chunks"]):
        value = latest.get(f"chunk-{n:05d}".encode(), b"")
        if not value.startswith(prefix):
            return None
        chunks.append(value[len(prefix) :])
    return chunks


class UpdatesFollower:
    """Reads the updates topic whole and hands the other workers' increments to ``apply``.

    ``kind`` names the topic: ``model-updates`` (every worker's increments), or
    ``item-merged`` (the item owners' merges, see :mod:`stream_app.owners`).
    ``skip(header)`` says which records the local item state already holds
    (the worker's own, and those a snapshot included). ``apply(deltas,
    next_offset, header)`` must set :attr:`position` to ``next_offset`` once the
    deltas are in the models (under the same lock), so that a snapshot never
    claims a record it does not hold.
    """

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[dict[str, ItemDelta], int, dict[str, Any]], Any],
        skip: Callable[[dict[str, Any]], bool],
        start_offset: int | None = None,
        kind: str = "model-updates",
        apply_batch: Callable[[list[tuple[dict[str, ItemDelta], dict[str, Any]]], int], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.kind = kind
        #: when given, the records of one fetch go to it together (``(deltas, header)`` each, and the offset after
        #: the last), instead of one ``apply`` each: the item owners' merges, one per part, are applied at once
        self.apply_batch = apply_batch
        #: seconds a batched follower waits after a fetch for the records that come with it (merges of one round)
        self.linger = 0.05 if apply_batch is not None else 0.0
        self.apply = apply
        self.skip = skip
        self.start_offset = start_offset
        self.position = start_offset or 0
        self.applied = 0
        self.lag_seconds = 0.0
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._joiner = Reassembler()
        self.caught_up = asyncio.Event()

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self._tp = TopicPartition(self.settings.state_topic(self.kind), 0)
        self._consumer = AIOKafkaConsumer(
            group_id=None, enable_auto_commit=False, isolation_level="read_committed", **_client_kwargs(self.settings)
        )
        await self._consumer.start()
        self._consumer.assign([self._tp])
        if self.start_offset is None:
            await _seek_start(self._consumer, self._tp)
        else:
            self._consumer.seek(self._tp, self.start_offset)
        self._end_at_start = (await self._consumer.end_offsets([self._tp]))[self._tp]
        if self._end_at_start <= (self.start_offset or 0):
            self.caught_up.set()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        consumer, tp = self._consumer, self._tp
        while True:
            try:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=_FOLLOW_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the updates topic failed; retrying")
                await asyncio.sleep(1.0)
                continue
            messages = batch.get(tp, [])
            if 0 < len(messages) < _FOLLOW_RECORDS and self.linger > 0 and self.caught_up.is_set():
                # at the end of the topic, the owners' merges of one interval land together: wait for the rest of
                # the round, so that one apply takes them all (each apply takes the models' lock, a thread hop and,
                # for item-kNN, a merge into its co-occurrence side store); catching up, the records are there
                await asyncio.sleep(self.linger)
                more = await consumer.getmany(tp, timeout_ms=0, max_records=500)
                messages = [*messages, *more.get(tp, [])]
            held: list[tuple[dict[str, ItemDelta], dict[str, Any]]] = []
            after: int | None = None  # the offset after the last whole record of this fetch
            for message in messages:
                value = self._joiner.feed(message.value)
                if value is None:
                    continue  # a chunk: the position stays before the record's first chunk until it is whole
                after = message.offset + 1
                try:
                    header, deltas = unpack_deltas(value)
                except Exception:
                    log.exception("an unreadable record at %s@%d of the updates topic: skipped", tp, message.offset)
                    if self.apply_batch is None:
                        self.position = after
                    continue
                if self.skip(header):
                    if self.apply_batch is None:
                        self.position = after
                    continue
                self.lag_seconds = max(0.0, time.time() - float(header.get("at", time.time())))
                if self.apply_batch is not None:
                    held.append((deltas, header))
                    continue
                await self.apply(deltas, after, header)
                self.applied += 1
            if self.apply_batch is not None and after is not None:
                if held:
                    await self.apply_batch(held, after)
                    self.applied += len(held)
                else:
                    self.position = after
            if not self.caught_up.is_set() and await consumer.position(tp) >= self._end_at_start:
                self.caught_up.set()

    async def stop(self) -> None:
        await stop_reader(self._task, self._consumer)


async def stop_reader(task: asyncio.Task[None] | None, consumer: Any) -> None:
    """Cancel a background reading ``task`` (whatever it raised) and stop its ``consumer``."""
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    if consumer is not None:
        await consumer.stop()


def new_worker_id() -> str:
    """A random id for this worker process (the origin of its increments)."""
    return uuid.uuid4().hex[:12]


def worker_slot(settings: Settings) -> str:
    """This worker's lasting id, kept in its state folder (each worker has its own): the transactional id."""
    path = settings.state_dir / "worker-slot"
    try:
        return path.read_text().strip()
    except OSError:
        slot = uuid.uuid4().hex[:12]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(slot)
        return slot


def users_by_partition(user_partition: Mapping[str, int], users: Iterable[str]) -> dict[int, list[str]]:
    """Group ``users`` by the partition their events arrive on."""
    out: dict[int, list[str]] = {}
    for user in users:
        out.setdefault(user_partition[user], []).append(user)
    return out


async def read_updates(
    settings: Settings, start_offset: int = 0, kind: str = "model-updates"
) -> list[tuple[dict[str, Any], dict[str, ItemDelta]]]:
    """Every committed record of the updates topic (or ``kind``) from ``start_offset`` to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(settings.state_topic(kind), 0)
    consumer = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, isolation_level="read_committed", **_client_kwargs(settings)
    )
    await consumer.start()
    out = []
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, start_offset)
        joiner = Reassembler()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            whole = (joiner.feed(m.value) for m in batch.get(tp, []))
            out.extend(unpack_deltas(value) for value in whole if value is not None)
    finally:
        await consumer.stop()
    return out


async def wait_stable(settings: Settings, timeout: float = 60.0) -> None:
    """Wait until no transaction is open on the state topics (a killed worker's is aborted after a timeout)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    kwargs = {"group_id": None, "enable_auto_commit": False, **_client_kwargs(settings)}
    committed = AIOKafkaConsumer(isolation_level="read_committed", **kwargs)
    everything = AIOKafkaConsumer(**kwargs)
    await committed.start()
    await everything.start()
    try:
        tps = [TopicPartition(settings.state_topic("model-updates"), 0)]
        tps += [TopicPartition(settings.state_topic("item-merged"), 0)]
        for kind in ("user-state", "item-increments"):
            tps += [TopicPartition(settings.state_topic(kind), p) for p in range(settings.topic_partitions)]
        deadline = time.monotonic() + timeout
        while True:
            stable, high = await committed.end_offsets(tps), await everything.end_offsets(tps)
            # the end a read_committed reader sees stops at an open transaction's first record; a
            # committed or aborted transaction ends with a marker one past its last record
            if all(stable[tp] >= high[tp] for tp in tps):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"transactions still open on the state topics after {timeout:.0f} s")
            await asyncio.sleep(0.5)
    finally:
        await committed.stop()
        await everything.stop()


async def rebuild_models(settings: Settings, names: Iterable[str], partitions: int) -> dict[str, Any]:
    """The models as Kafka holds them: snapshot, every increment after it, and every partition's users.

    What a worker that took over every partition would start from; tests and
    tools use it to check that several workers together hold one model.
    """
    import models as registry
    from stream_app.owners import HeldPieces, read_unmerged

    await wait_stable(settings)
    built = {name: registry.create(name, **settings.model_params.get(name, {})) for name in names}
    owned = settings.item_state == "owned"
    held = HeldPieces()
    start, skip = 0, None
    snapshot = await read_snapshot(settings)
    if snapshot is not None:
        manifest, deltas = snapshot
        for name, delta in deltas.items():
            if not held.load(name, delta) and name in built:
                built[name].import_items(delta)
        start, skip = int(manifest["updates_offset"]), (manifest["origin"], int(manifest["sequence"]))
    kind = "item-merged" if owned else "model-updates"
    for header, deltas in await read_updates(settings, start, kind):
        mine = skip is not None and header.get("origin") == skip[0] and int(header.get("sequence", 0)) <= skip[1]
        if mine and not owned:
            continue  # the snapshot holds its writer's increments up to its sequence
        netted = held.less(built, deltas, header) if owned else {name: [d] for name, d in deltas.items()}
        for name, parts in netted.items():
            for part in parts if name in built else []:
                built[name].apply_item_delta(part)
    if owned:  # increments no owner has merged yet (and the snapshot does not hold)
        for header, deltas in await read_unmerged(settings):
            if held.take(str(header.get("origin")), int(header.get("part", -1)), int(header.get("sequence", 0))):
                continue
            for name, delta in deltas.items():
                if name in built:
                    built[name].apply_item_delta(delta)
    for state in (await read_partitions_state(settings, range(partitions))).values():
        for name, model in built.items():
            records = {u: doc["models"][name] for u, doc in state.users.items() if name in doc.get("models", {})}
            if records:
                from models.sharing import UserStates

                model.import_users(UserStates.from_records(model.name, records))
    return built
